//! Tests of the config module: the shipped config.toml, parsing, errors and validation.

use super::locate::{key_at, line_of};
use super::*;

const SHIPPED: &str = include_str!("../../config.toml");

fn app_user() -> User {
    User {
        name: "app".to_owned(),
        password: "app".to_owned(),
        password_file: None,
        account: Some("default".to_owned()),
        auth_method: None,
    }
}

fn parse_err(text: &str) -> String {
    Config::parse(text).map(|_| ()).unwrap_err().to_string()
}

/// The keys of a TOML document as dotted paths (array entries share their table's path).
fn key_paths(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let path = format!("{prefix}{key}");
                key_paths(value, &format!("{path}."), out);
                out.push(path);
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| key_paths(v, prefix, out)),
        _ => {}
    }
}

fn default_with_app_user() -> Config {
    Config {
        users: vec![app_user()],
        accounts: [("default".to_owned(), super::Account::default())].into(),
        ..Config::default()
    }
}

#[test]
fn shipped_config_is_the_default() {
    assert_eq!(Config::parse(SHIPPED).unwrap(), default_with_app_user());
}

#[test]
fn shipped_config_lists_every_key() {
    let rendered = default_with_app_user().to_toml();
    assert_eq!(Config::parse(&rendered).unwrap(), default_with_app_user());
    let (mut rendered_keys, mut shipped_keys) = (Vec::new(), Vec::new());
    key_paths(
        &rendered.parse::<toml::Value>().unwrap(),
        "",
        &mut rendered_keys,
    );
    key_paths(
        &SHIPPED.parse::<toml::Value>().unwrap(),
        "",
        &mut shipped_keys,
    );
    for key in rendered_keys {
        assert!(shipped_keys.contains(&key), "config.toml lacks `{key}`");
    }
}

#[test]
fn renders_human_units() {
    let rendered = Config::default().to_toml();
    assert!(rendered.contains("startup_timeout = \"10s\""), "{rendered}");
    assert!(
        rendered.contains("max_message_size = \"64MB\""),
        "{rendered}"
    );
    assert!(rendered.contains("mode = \"transaction\""), "{rendered}");
}

#[test]
fn empty_text_is_the_default() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
    assert!(Config::default().users.is_empty());
}

#[test]
fn durations_need_units_and_errors_name_the_key() {
    let cfg: Config = "[pool]\nborrow_timeout = \"250ms\"".parse().unwrap();
    assert_eq!(cfg.pool.borrow_timeout, Duration::from_millis(250));
    let cfg = Config::parse("[listen]\nshutdown_timeout = \"1h\"").unwrap();
    assert_eq!(cfg.listen.shutdown_timeout, Duration::from_secs(3600));
    for bad in ["\"30\"", "\"5 parsecs\"", "30"] {
        let message = parse_err(&format!("[listen]\nstartup_timeout = {bad}\n"));
        assert!(message.contains("`listen.startup_timeout`"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("ms, s, m or h"), "{message}");
    }
}

#[test]
fn sizes_parse_with_or_without_units() {
    for (text, bytes) in [
        ("\"64MB\"", 64 << 20),
        ("\"1kB\"", 1024),
        ("\"2048\"", 2048),
        ("4096", 4096),
    ] {
        let cfg = Config::parse(&format!("[listen]\nmax_message_size = {text}")).unwrap();
        assert_eq!(cfg.listen.max_message_size, bytes, "{text}");
    }
    let message = parse_err("[listen]\nmax_message_size = \"64 parsecs\"");
    assert!(message.contains("`listen.max_message_size`"), "{message}");
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let message = parse_err("[listen]\naddr = \"127.0.0.1:1\"\n\n[pool]\nsise = 3\n");
    assert!(message.contains("sise"), "{message}");
    assert!(message.contains("line 5"), "{message}");
    assert!(message.contains("`pool.sise`"), "{message}");
    let message = parse_err("[[users]]\nname = \"a\"\npassword = \"b\"\nrole = \"c\"\n");
    assert!(
        message.contains("`users[0].role`") && message.contains("line 4"),
        "{message}"
    );
}

#[test]
fn enums_use_their_config_spelling() {
    let text = "[pool]\nmode = \"session\"\non_client_disconnect = \"close\"\n\
                [[users]]\nname = \"u\"\npassword = \"p\"\nauth_method = \"password\"\n";
    let cfg = Config::parse(text).unwrap();
    assert_eq!(cfg.pool.mode, PoolMode::Session);
    assert_eq!(cfg.pool.on_client_disconnect, OnClientDisconnect::Close);
    assert_eq!(cfg.users[0].auth_method(), AuthMethod::Password);
    assert!(parse_err("[pool]\nmode = \"statement\"").contains("`pool.mode`"));
}

#[test]
fn user_defaults() {
    let mut user = User {
        account: None,
        ..app_user()
    };
    assert_eq!(user.account(), "app");
    assert_eq!(user.auth_method(), AuthMethod::ScramSha256);
    user.password = format!("md5{}", "0123456789abcdef".repeat(2));
    assert_eq!(user.password_kind(), PasswordKind::Md5);
    assert_eq!(user.auth_method(), AuthMethod::Md5);
    assert_eq!(app_user().account(), "default");
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("pgbroker-config-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    fs::write(&file, "[pool]\nsize = 0\n").unwrap();
    let message = Config::load(&file).unwrap_err().to_string();
    assert!(
        message.contains("bad.toml line 2: `pool.size`"),
        "{message}"
    );
    let missing = Config::load(&dir.join("missing.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Io { .. }), "{missing}");
    fs::remove_dir_all(&dir).unwrap();
}

// Validation.

const STORED: &str = "jOaCFWIB0KfDsAp2PY8kSV6P9E0xX0ZkdNfe2XZZcsQ=";
const SERVER: &str = "MyPEDH8m7iBDAw0t7P7P6ErVCm6DVEFGlfdqyp4Ahpc=";

fn scram(iterations: &str, salt: &str, stored: &str, server: &str) -> String {
    format!("{SCRAM_PREFIX}{iterations}:{salt}${stored}:{server}")
}

/// The error for `text`, which must fail validation.
fn invalid_in(text: &str) -> (String, Option<usize>, Reason, String) {
    match Config::parse(text) {
        Err(err @ ConfigError::Invalid { .. }) => {
            let message = err.to_string();
            let ConfigError::Invalid {
                key, line, reason, ..
            } = err
            else {
                unreachable!()
            };
            (key, line, reason, message)
        }
        other => panic!("expected an invalid value in {text:?}, got {other:?}"),
    }
}

fn assert_invalid(text: &str, key: &str, reason: Reason) {
    let (found_key, line, found_reason, message) = invalid_in(text);
    assert_eq!((found_key.as_str(), found_reason), (key, reason), "{text}");
    assert!(
        line.is_some() && message.contains(&format!("`{key}`")),
        "{message}"
    );
}

fn user_toml(name: &str, password: &str, extra: &str) -> String {
    format!("[[users]]\nname = \"{name}\"\npassword = \"{password}\"\n{extra}\n")
}

#[test]
fn numbers_below_their_minimum() {
    assert_invalid("[pool]\nsize = 0", "pool.size", Reason::TooSmall { min: 1 });
    let text = "[listen]\nmax_message_size = \"1000B\"";
    assert_invalid(
        text,
        "listen.max_message_size",
        Reason::TooSmall { min: 1024 },
    );
    let text = "[listen]\nmax_client_connections = 0";
    assert_invalid(
        text,
        "listen.max_client_connections",
        Reason::TooSmall { min: 1 },
    );
    assert_invalid(
        "[backend]\nport = 0",
        "backend.port",
        Reason::TooSmall { min: 1 },
    );
}

#[test]
fn zero_timeouts() {
    for key in [
        "listen.startup_timeout",
        "listen.shutdown_timeout",
        "backend.connect_timeout",
    ]
    .into_iter()
    .chain(["pool.borrow_timeout", "pool.server_drain_timeout"])
    {
        let (table, field) = key.split_once('.').unwrap();
        assert_invalid(
            &format!("[{table}]\n{field} = \"0ms\""),
            key,
            Reason::ZeroDuration,
        );
    }
}

#[test]
fn addresses() {
    assert_invalid("[listen]\naddr = \"\"", "listen.addr", Reason::Empty);
    assert_invalid(
        "[listen]\naddr = \"localhost\"",
        "listen.addr",
        Reason::NotSocketAddr,
    );
    assert_invalid("[backend]\nhost = \" \"", "backend.host", Reason::Empty);
    assert!(Config::parse("[listen]\naddr = \"[::1]:6432\"").is_ok());
}

#[test]
fn user_names() {
    assert_invalid(&user_toml("", "p", ""), "users[0].name", Reason::Empty);
    let text = user_toml("a", "p", "") + &user_toml("b", "p", "") + &user_toml("a", "q", "");
    let (key, line, reason, _) = invalid_in(&text);
    assert_eq!(
        (key.as_str(), line, reason),
        (
            "users[2].name",
            Some(10),
            Reason::DuplicateUser { first: 0 }
        )
    );
    assert_invalid(
        &user_toml("a", "p", "account = \"\""),
        "users[0].account",
        Reason::Empty,
    );
}

#[test]
fn passwords() {
    assert_invalid(&user_toml("a", "", ""), "users[0].password", Reason::Empty);
    let md5 = format!("md5{}", "0123456789abcdef".repeat(2));
    assert!(Config::parse(&user_toml("a", &md5, "")).is_ok());
    for bad in ["md5", "md5xyz", &format!("{md5}0"), &md5.replace('a', "g")] {
        assert_invalid(
            &user_toml("a", bad, ""),
            "users[0].password",
            Reason::BadMd5,
        );
    }
}

#[test]
fn scram_secrets() {
    let good = scram("4096", "c2FsdA==", STORED, SERVER);
    assert!(Config::parse(&user_toml("a", &good, "")).is_ok());
    let bad = [
        format!("{SCRAM_PREFIX}4096:c2FsdA=="),
        format!("{SCRAM_PREFIX}4096c2FsdA==${STORED}:{SERVER}"),
        format!("{SCRAM_PREFIX}4096:c2FsdA==${STORED}{SERVER}"),
        scram("0", "c2FsdA==", STORED, SERVER),
        scram("many", "c2FsdA==", STORED, SERVER),
        scram("4096", "!!", STORED, SERVER),
        scram("4096", "c2FsdA==", "c2FsdA==", SERVER),
        scram("4096", "c2FsdA==", STORED, "not base64"),
    ];
    for secret in bad {
        let (key, _, reason, _) = invalid_in(&user_toml("a", &secret, ""));
        assert_eq!(key, "users[0].password", "{secret}");
        assert!(
            matches!(reason, Reason::BadScramSecret { .. }),
            "{secret}: {reason}"
        );
    }
}

#[test]
fn auth_method_must_fit_the_stored_password() {
    let secret = scram("4096", "c2FsdA==", STORED, SERVER);
    let mismatch = Reason::AuthMethodMismatch {
        method: AuthMethod::Md5,
        stored: PasswordKind::ScramSha256,
    };
    let text = user_toml("a", &secret, "auth_method = \"md5\"");
    assert_invalid(&text, "users[0].auth_method", mismatch);
    let md5 = format!("md5{}", "0123456789abcdef".repeat(2));
    let text = user_toml("a", &md5, "auth_method = \"scram-sha-256\"");
    let (key, ..) = invalid_in(&text);
    assert_eq!(key, "users[0].auth_method");
    for ok in [
        user_toml("a", &secret, "auth_method = \"password\""),
        user_toml("a", "p", "auth_method = \"md5\""),
    ] {
        assert!(Config::parse(&ok).is_ok(), "{ok}");
    }
}

#[test]
fn lines_of_keys() {
    let text = "top = 1\n[pool]\n# size = 1\nsize = 0\n[[users]]\nname = \"a\"\n[[users]]\n\"name\" = \"b\"\n";
    assert_eq!(line_of(text, "top"), Some(1));
    assert_eq!(line_of(text, "pool.size"), Some(4));
    assert_eq!(line_of(text, "users[1].name"), Some(8));
    assert_eq!(line_of(text, "pool.mode"), None);
    assert_eq!(
        key_at(text, text.find("size = 0").unwrap()),
        Some("pool.size".to_owned())
    );
    assert_eq!(key_at(text, 1000), None);
}
