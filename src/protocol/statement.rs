//! Statement names in extended-protocol messages, for tracking a client's named prepared
//! statements and giving each a name of its own on the server (issue 6 builds on this):
//! reading the name out of Parse, Bind, Describe and Close bodies, rewriting it, and the
//! server-side name derived from what a statement is (its query text and parameter types),
//! so the same statement from any client is prepared once per server connection.
//!
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>

use sha2::{Digest, Sha256};

use super::frame::cstr;
use super::FrameError;

/// Prefix of the server-side names the broker gives statements.
pub const SERVER_PREFIX: &str = "pgbroker_";

/// A Parse body split at its name: `name`, then the query text and parameter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// The statement name ("" for the unnamed statement).
    pub name: &'a str,
    /// Everything after the name: query string, parameter count and types.
    pub definition: &'a [u8],
}

/// A Bind body split at its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    /// The destination portal.
    pub portal: &'a str,
    /// The source statement.
    pub statement: &'a str,
    /// Everything after the names: formats, parameters, result formats.
    pub rest: &'a [u8],
}

/// A Describe or Close body: 'S' (statement) or 'P' (portal), and the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// b'S' or b'P'.
    pub kind: u8,
    /// The statement or portal name.
    pub name: &'a str,
}

/// Splits a Parse body.
pub fn parse(body: &[u8]) -> Result<Parse<'_>, FrameError> {
    let (name, definition) = cstr(body)?;
    Ok(Parse { name, definition })
}

/// Splits a Bind body.
pub fn bind(body: &[u8]) -> Result<Bind<'_>, FrameError> {
    let (portal, rest) = cstr(body)?;
    let (statement, rest) = cstr(rest)?;
    Ok(Bind {
        portal,
        statement,
        rest,
    })
}

/// Splits a Describe or Close body.
pub fn target(body: &[u8]) -> Result<Target<'_>, FrameError> {
    let (&kind, rest) = body.split_first().ok_or(FrameError::Malformed {
        what: "Describe or Close without a kind",
    })?;
    if kind != b'S' && kind != b'P' {
        return Err(FrameError::Malformed {
            what: "Describe or Close kind is not 'S' or 'P'",
        });
    }
    let (name, _) = cstr(rest)?;
    Ok(Target { kind, name })
}

/// The server-side name of a statement: the same for the same query text and parameter
/// types, whichever client prepared it and under whatever name.
pub fn server_name(definition: &[u8]) -> String {
    let digest = Sha256::digest(definition);
    let mut name = String::with_capacity(SERVER_PREFIX.len() + 32);
    name.push_str(SERVER_PREFIX);
    for byte in &digest[..16] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// The statement a query that is only `DEALLOCATE [PREPARE] name` deallocates, as Postgres
/// reads the name (folded to lower case unless double-quoted); `None` for anything else,
/// `DEALLOCATE ALL` included.
pub fn deallocated_name(sql: &str) -> Option<String> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let rest = keyword(sql, "deallocate")?;
    let rest = match keyword(rest, "prepare") {
        Some(after) if !after.is_empty() => after,
        _ => rest,
    };
    if let Some(quoted) = rest.strip_prefix('"') {
        let inner = quoted.strip_suffix('"')?;
        if inner.replace("\"\"", "").contains('"') {
            return None;
        }
        return Some(inner.replace("\"\"", "\""));
    }
    let plain = !rest.is_empty()
        && !rest.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    (plain && !rest.eq_ignore_ascii_case("all")).then(|| rest.to_ascii_lowercase())
}

/// `s` after a leading `word` and the blanks after it.
fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let rest = &s[word.len()..];
    (head.eq_ignore_ascii_case(word) && rest.starts_with(char::is_whitespace))
        .then(|| rest.trim_start())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::frame::whole_frame;
    use crate::protocol::write;

    #[test]
    fn names_are_read_and_rewritten_without_touching_the_rest() {
        let mut out = BytesMut::new();
        let definition = b"SELECT $1::int\0\x00\x01\x00\x00\x00\x17";
        write::parse_definition(&mut out, "s1", definition);
        let (header, body) = whole_frame(&out).unwrap().unwrap();
        assert_eq!(header.tag, b'P');
        let p = parse(body).unwrap();
        assert_eq!((p.name, p.definition), ("s1", &definition[..]));

        let mut bind_out = BytesMut::new();
        write::bind(
            &mut bind_out,
            "",
            &server_name(p.definition),
            b"\x00\x00\x00\x00\x00\x00",
        );
        let (_, body) = whole_frame(&bind_out).unwrap().unwrap();
        let b = bind(body).unwrap();
        assert_eq!(b.portal, "");
        assert_eq!(b.statement, server_name(definition));
        assert_eq!(b.rest, b"\x00\x00\x00\x00\x00\x00");

        let mut close = BytesMut::new();
        write::close(&mut close, b'S', "s1");
        let (_, body) = whole_frame(&close).unwrap().unwrap();
        assert_eq!(
            target(body).unwrap(),
            Target {
                kind: b'S',
                name: "s1"
            }
        );
        let mut describe = BytesMut::new();
        write::describe(&mut describe, b'P', "");
        let (header, body) = whole_frame(&describe).unwrap().unwrap();
        assert_eq!((header.tag, target(body).unwrap().kind), (b'D', b'P'));
    }

    #[test]
    fn the_server_name_depends_on_text_and_types_only() {
        let a = server_name(b"SELECT $1\0\x00\x01\x00\x00\x00\x17");
        let b = server_name(b"SELECT $1\0\x00\x01\x00\x00\x00\x19");
        assert_ne!(a, b, "other parameter types, other statement");
        assert_eq!(a, server_name(b"SELECT $1\0\x00\x01\x00\x00\x00\x17"));
        assert!(a.starts_with(SERVER_PREFIX) && a.len() == SERVER_PREFIX.len() + 32);
        assert!(a.len() < 64, "fits NAMEDATALEN");
    }

    #[test]
    fn deallocated_names_are_read_as_postgres_reads_them() {
        assert_eq!(
            deallocated_name("DEALLOCATE _pg3_0").as_deref(),
            Some("_pg3_0")
        );
        assert_eq!(
            deallocated_name("deallocate prepare S_1;").as_deref(),
            Some("s_1")
        );
        assert_eq!(
            deallocated_name("DEALLOCATE \"S_1\"").as_deref(),
            Some("S_1")
        );
        assert_eq!(
            deallocated_name("DEALLOCATE \"a\"\"b\"").as_deref(),
            Some("a\"b")
        );
        assert_eq!(
            deallocated_name("DEALLOCATE prepare").as_deref(),
            Some("prepare")
        );
        assert_eq!(deallocated_name("DEALLOCATE ALL"), None);
        assert_eq!(deallocated_name("DEALLOCATE PREPARE ALL"), None);
        assert_eq!(deallocated_name("DEALLOCATE a; SELECT 1"), None);
        assert_eq!(deallocated_name("DEALLOCATE"), None);
        assert_eq!(deallocated_name("SELECT 1"), None);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert!(parse(b"no terminator").is_err());
        assert!(bind(b"portal\0no terminator").is_err());
        assert!(target(b"").is_err());
        assert!(target(b"X name\0").is_err());
        assert!(target(b"S").is_err());
    }
}
