//! The map's own tests, and the checks that hold the rest of src/ to it.

/// The SQLSTATE-shaped string literals of `source`, with their 1-based lines.
fn sqlstates(source: &str) -> Vec<(usize, &str)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        for quoted in line.split('"').skip(1).step_by(2) {
            let sqlstate = quoted.len() == 5
                && (quoted.bytes()).all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
                && quoted.bytes().any(|b| b.is_ascii_digit());
            if sqlstate {
                found.push((n + 1, quoted));
            }
        }
    }
    found
}

#[test]
fn every_code_chosen_here_is_listed() {
    let source = include_str!("../client.rs");
    let listed = source.split("pub const BROKER_SQLSTATES").nth(1).unwrap();
    let (list, _) = listed.split_once("];").unwrap();
    let code = before_tests(source);
    for (line, code) in sqlstates(code) {
        let quoted = format!("\"{code}\"");
        assert!(
            list.contains(&quoted),
            "client.rs:{line}: {code} is not listed"
        );
    }
}

/// Outside this file, only `protocol/errcodes.rs` names SQLSTATEs (the ones read from
/// Postgres), and only this file writes an ErrorResponse; tests may spell any.
#[test]
fn no_code_is_chosen_anywhere_else() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stray = Vec::new();
    for (path, text) in sources(&src) {
        let relative = path.strip_prefix(&src).unwrap();
        let name = relative.display().to_string();
        let is_test = relative.iter().any(|p| p == "tests" || p == "tests.rs");
        let allowed = ["error/client.rs", "protocol/errcodes.rs", "layers.rs"];
        if is_test || allowed.contains(&name.as_str()) {
            continue;
        }
        let code = before_tests(&text);
        for (line, sqlstate) in sqlstates(code) {
            stray.push(format!("src/{name}:{line}: SQLSTATE {sqlstate}"));
        }
        let writers = ["protocol/write.rs"];
        for (n, l) in code.lines().enumerate() {
            if l.contains("error_response(") && !writers.contains(&name.as_str()) {
                stray.push(format!("src/{name}:{}: writes an ErrorResponse", n + 1));
            }
        }
    }
    assert!(
        stray.is_empty(),
        "errors chosen outside error/client.rs:\n{}",
        stray.join("\n")
    );
}

/// The text before a file's inline test module (`mod tests {`, at the end by custom).
fn before_tests(text: &str) -> &str {
    let at = text
        .find("\nmod tests {")
        .or_else(|| text.find("\n    mod tests {"));
    &text[..at.unwrap_or(text.len())]
}

fn sources(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            all.push((path, text));
        }
    }
    all
}

use super::*;
use crate::auth::AuthError;
use crate::protocol::FrameError;
use std::io;
use std::time::Duration;

#[test]
fn unknown_user_and_bad_password_read_the_same() {
    let a = SessionError::Auth {
        user: "x".into(),
        source: AuthError::BadPassword,
    };
    let b = SessionError::AuthMethod {
        user: "x".into(),
        method: "md5",
    };
    assert_eq!(a.client_message(), b.client_message());
    assert_eq!(a.client_message().unwrap().code, "28P01");
}

#[test]
fn backend_down_names_the_backend() {
    let e = BorrowError::Login(LoginError::Connect {
        addr: "127.0.0.1:1".into(),
        source: io::Error::from(io::ErrorKind::ConnectionRefused),
    });
    let at_connect = e.client_message(true);
    assert_eq!(
        (at_connect.code.as_str(), at_connect.severity),
        ("08001", Severity::Fatal)
    );
    assert!(at_connect
        .text
        .starts_with("pgbroker: cannot connect to backend 127.0.0.1:1: "));
    assert_eq!(e.client_message(false).code, "08006");
}

#[test]
fn scram_passthrough_failures_say_what_to_do() {
    let mismatch = BorrowError::Login(LoginError::Passthrough(PassthroughError::Mismatch {
        what: "the server's salt differs",
    }));
    let m = mismatch.client_message(true);
    assert_eq!((m.code(), m.severity()), ("28P01", Severity::Fatal));
    assert!(m.hint.unwrap().contains("pg_authid"), "{m:?}");
    assert!(!m.text().contains("salt"), "internal detail: {m:?}");
    let broken = BorrowError::Login(LoginError::Passthrough(PassthroughError::Malformed {
        what: "x",
    }));
    assert_eq!(broken.client_message(true).code(), "08001");
    let no_key = BorrowError::Login(LoginError::NoClientKey { user: "app".into() });
    let m = no_key.client_message(true);
    assert_eq!(m.code(), "08001");
    assert!(m.text().contains("SCRAM secret"), "{m:?}");
    assert!(m.hint.unwrap().contains("scram-sha-256"), "{m:?}");
}

#[test]
fn parse_refusals_read_as_postgres_or_name_the_bound() {
    let cases = [
        (
            StatementRefusal::InFailedTransaction,
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block",
        ),
        (
            StatementRefusal::Duplicate { name: "s1".into() },
            "42P05",
            "prepared statement \"s1\" already exists",
        ),
        (
            StatementRefusal::TooMany {
                count: 10000,
                megabytes: 16,
            },
            "54000",
            "pgbroker: a client may hold at most 10000 named prepared statements of 16 MB \
             together; close some first",
        ),
    ];
    for (refusal, code, text) in cases {
        let m = refusal.client_message();
        assert_eq!(
            (m.severity(), m.code(), m.text()),
            (Severity::Error, code, text)
        );
        assert_eq!(m.hint, None);
    }
}

#[test]
fn every_message_starts_with_pgbroker() {
    let errors = [
        SessionError::Frame(FrameError::Malformed { what: "x" }),
        SessionError::StartupTimeout(Duration::from_secs(1)),
        SessionError::UnsupportedProtocol { major: 2, minor: 0 },
        SessionError::NoUser,
        SessionError::Shutdown,
        SessionError::TooManyClients { max: 1 },
    ];
    for e in errors {
        assert!(
            e.client_message().unwrap().text.starts_with("pgbroker: "),
            "{e}"
        );
    }
}
