//! Checks on parsed config values (ranges, formats, consistency); each error names its key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::{
    AuthMethod, Backend, Config, ConfigError, Listen, PasswordKind, PoolSettings, Reaper, User,
    MD5_PREFIX, SCRAM_PREFIX,
};

/// Smallest accepted `listen.max_message_size`: every startup packet must fit.
const MIN_MESSAGE_SIZE: usize = 1024;

/// Length of the SCRAM-SHA-256 stored key and server key.
const SCRAM_KEY_LEN: usize = 32;

/// Hex digits after "md5" in an md5 password.
const MD5_HEX_LEN: usize = 32;

/// What is wrong with a config value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// A required string is empty.
    #[error("must not be empty")]
    Empty,
    /// A number below its minimum.
    #[error("must be at least {min}")]
    TooSmall {
        /// The smallest accepted value.
        min: usize,
    },
    /// A number above its maximum.
    #[error("must be at most {max}")]
    TooLarge {
        /// The largest accepted value.
        max: usize,
    },
    /// A timeout of zero.
    #[error("must be longer than zero")]
    ZeroDuration,
    /// Not an `ip:port` socket address.
    #[error("is not a socket address (ip:port)")]
    NotSocketAddr,
    /// `backend.health_user` names no user the broker can log in to Postgres as.
    #[error("names no [[users]] entry whose password can log in to Postgres (plaintext or md5)")]
    NoLoginUser,
    /// A user name that an earlier `[[users]]` entry already has.
    #[error("repeats the name of users[{first}]")]
    DuplicateUser {
        /// Index of the first user with this name.
        first: usize,
    },
    /// An "md5…" password that is not "md5" + 32 hex digits.
    #[error("starts with \"md5\" but is not \"md5\" followed by 32 hex digits")]
    BadMd5,
    /// A "SCRAM-SHA-256$…" password that does not parse.
    #[error("is not a valid SCRAM-SHA-256 secret ({what}); expected SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>")]
    BadScramSecret {
        /// Which part is wrong.
        what: &'static str,
    },
    /// `auth_method` cannot be verified from how the password is stored.
    #[error(
        "is {method:?} but the password is stored as {stored:?}, from which it cannot be verified"
    )]
    AuthMethodMismatch {
        /// The configured method.
        method: AuthMethod,
        /// How the password is stored.
        stored: PasswordKind,
    },
    /// Both `password` and `password_file` are set.
    #[error("is set, and so is the password beside it: keep one")]
    PasswordTwice,
    /// A `password_file` that cannot be read (the error never shows its content).
    #[error("cannot be read ({kind})")]
    SecretFile {
        /// What the operating system said.
        kind: std::io::ErrorKind,
    },
}

/// Validates a whole config; the first problem found is returned (without a line yet).
pub(super) fn config(config: &Config) -> Result<(), ConfigError> {
    listen(&config.listen)?;
    backend(&config.backend)?;
    pool(&config.pool)?;
    reaper(&config.reaper)?;
    limits(config)?;
    users(&config.users)?;
    if let Some(auth) = &config.auth {
        check("auth.user", !auth.user.is_empty(), Reason::Empty)?;
        check("auth.query", !auth.query.is_empty(), Reason::Empty)?;
        positive("auth.cache_ttl", auth.cache_ttl)?;
    }
    health_user(config)
}

fn health_user(config: &Config) -> Result<(), ConfigError> {
    let Some(name) = &config.backend.health_user else {
        return Ok(());
    };
    let usable = config
        .users
        .iter()
        .any(|u| &u.name == name && u.password_kind() != PasswordKind::ScramSha256);
    check("backend.health_user", usable, Reason::NoLoginUser)
}

fn limits(config: &Config) -> Result<(), ConfigError> {
    let l = &config.limits;
    at_least(
        "limits.default_function_clients",
        l.default_function_clients,
        1,
    )?;
    at_least("limits.max_tracked_functions", l.max_tracked_functions, 1)?;
    for (name, account) in &config.accounts {
        let key = |field: &str| format!("accounts.{name}.{field}");
        for (field, value) in [
            ("max_concurrency", account.max_concurrency),
            ("function_concurrency", account.function_concurrency),
            ("max_clients", account.max_clients),
        ] {
            at_least(&key(field), value.unwrap_or(1), 1)?;
        }
        for (function, caps) in &account.functions {
            let key = |field: &str| format!("accounts.{name}.functions.{function}.{field}");
            at_least(
                &key("max_concurrency"),
                caps.max_concurrency.unwrap_or(1),
                1,
            )?;
            at_least(&key("max_clients"), caps.max_clients.unwrap_or(1), 1)?;
        }
    }
    Ok(())
}

fn reaper(reaper: &Reaper) -> Result<(), ConfigError> {
    positive("reaper.client_idle_timeout", reaper.client_idle_timeout)?;
    positive(
        "reaper.idle_in_transaction_timeout",
        reaper.idle_in_transaction_timeout,
    )?;
    positive("reaper.interval", reaper.interval)
}

fn listen(listen: &Listen) -> Result<(), ConfigError> {
    check("listen.addr", !listen.addr.is_empty(), Reason::Empty)?;
    let is_addr = listen.addr.parse::<SocketAddr>().is_ok();
    check("listen.addr", is_addr, Reason::NotSocketAddr)?;
    let metrics_off_or_addr =
        listen.metrics_addr.is_empty() || listen.metrics_addr.parse::<SocketAddr>().is_ok();
    check(
        "listen.metrics_addr",
        metrics_off_or_addr,
        Reason::NotSocketAddr,
    )?;
    if listen.tls.mode.offered() {
        check(
            "listen.tls.cert",
            !listen.tls.cert.is_empty(),
            Reason::Empty,
        )?;
        check("listen.tls.key", !listen.tls.key.is_empty(), Reason::Empty)?;
    }
    at_least(
        "listen.max_client_connections",
        listen.max_client_connections,
        1,
    )?;
    at_least(
        "listen.max_message_size",
        listen.max_message_size,
        MIN_MESSAGE_SIZE,
    )?;
    positive("listen.startup_timeout", listen.startup_timeout)?;
    positive("listen.shutdown_timeout", listen.shutdown_timeout)
}

fn backend(backend: &Backend) -> Result<(), ConfigError> {
    check(
        "backend.host",
        !backend.host.trim().is_empty(),
        Reason::Empty,
    )?;
    at_least("backend.port", usize::from(backend.port), 1)?;
    positive("backend.connect_timeout", backend.connect_timeout)?;
    at_least(
        "backend.max_concurrent_logins",
        backend.max_concurrent_logins,
        1,
    )?;
    positive("backend.login_backoff", backend.login_backoff)?;
    positive("backend.login_backoff_max", backend.login_backoff_max)?;
    positive("backend.health_interval", backend.health_interval)
}

fn pool(pool: &PoolSettings) -> Result<(), ConfigError> {
    at_least("pool.size", pool.size, 1)?;
    positive("pool.borrow_timeout", pool.borrow_timeout)?;
    positive("pool.server_drain_timeout", pool.server_drain_timeout)?;
    check(
        "pool.min_idle",
        pool.min_idle <= pool.size,
        Reason::TooLarge { max: pool.size },
    )?;
    positive("pool.spare_ttl", pool.spare_ttl)?;
    positive("pool.server_idle_timeout", pool.server_idle_timeout)?;
    positive("pool.server_lifetime", pool.server_lifetime)
}

fn users(users: &[User]) -> Result<(), ConfigError> {
    let mut seen = HashMap::new();
    for (index, user) in users.iter().enumerate() {
        self::user(index, user)?;
        if let Some(&first) = seen.get(user.name.as_str()) {
            return Err(invalid(
                &user_key(index, "name"),
                Reason::DuplicateUser { first },
            ));
        }
        seen.insert(user.name.as_str(), index);
    }
    Ok(())
}

fn user(index: usize, user: &User) -> Result<(), ConfigError> {
    check(
        &user_key(index, "name"),
        !user.name.is_empty(),
        Reason::Empty,
    )?;
    let account_ok = user.account.as_deref().is_none_or(|a| !a.is_empty());
    check(&user_key(index, "account"), account_ok, Reason::Empty)?;
    let field = if user.password_file.is_some() {
        "password_file"
    } else {
        "password"
    };
    password(&user_key(index, field), user)?;
    auth_method(&user_key(index, "auth_method"), user)
}

fn password(key: &str, user: &User) -> Result<(), ConfigError> {
    let password = user.password.as_str();
    match user.password_kind() {
        PasswordKind::Plain => check(key, !password.is_empty(), Reason::Empty),
        PasswordKind::Md5 => check(key, is_md5_hash(password), Reason::BadMd5),
        PasswordKind::ScramSha256 => check_scram_secret(password)
            .map_err(|what| invalid(key, Reason::BadScramSecret { what })),
    }
}

/// SCRAM cannot be verified from an md5 hash, nor md5 from a SCRAM secret.
fn auth_method(key: &str, user: &User) -> Result<(), ConfigError> {
    let (method, stored) = (user.auth_method(), user.password_kind());
    let ok = !matches!(
        (method, stored),
        (AuthMethod::Md5, PasswordKind::ScramSha256) | (AuthMethod::ScramSha256, PasswordKind::Md5)
    );
    check(key, ok, Reason::AuthMethodMismatch { method, stored })
}

fn is_md5_hash(password: &str) -> bool {
    password
        .strip_prefix(MD5_PREFIX)
        .is_some_and(|hex| hex.len() == MD5_HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks the shape of `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`.
fn check_scram_secret(secret: &str) -> Result<(), &'static str> {
    let rest = secret.strip_prefix(SCRAM_PREFIX).ok_or("missing prefix")?;
    let (params, keys) = rest.split_once('$').ok_or("missing `$` before the keys")?;
    let (iterations, salt) = params
        .split_once(':')
        .ok_or("missing `:` after the iterations")?;
    let (stored_key, server_key) = keys.split_once(':').ok_or("missing `:` between the keys")?;
    match iterations.parse::<u32>() {
        Ok(n) if n > 0 => {}
        _ => return Err("iterations is not a positive integer"),
    }
    match BASE64.decode(salt) {
        Ok(bytes) if !bytes.is_empty() => {}
        _ => return Err("salt is not base64"),
    }
    for key in [stored_key, server_key] {
        if BASE64.decode(key).map(|k| k.len()).ok() != Some(SCRAM_KEY_LEN) {
            return Err("a key is not base64 of 32 bytes");
        }
    }
    Ok(())
}

pub(super) fn user_key(index: usize, field: &str) -> String {
    format!("users[{index}].{field}")
}

fn check(key: &str, ok: bool, reason: Reason) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, reason))
    }
}

fn at_least(key: &str, value: usize, min: usize) -> Result<(), ConfigError> {
    check(key, value >= min, Reason::TooSmall { min })
}

fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    check(key, !value.is_zero(), Reason::ZeroDuration)
}

pub(super) fn invalid(key: &str, reason: Reason) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        key: key.to_owned(),
        line: None,
        reason,
    }
}
