//! The broker's configuration: the config.toml schema, its defaults, parsing and validation.
//!
//! Keys and defaults follow DESIGN.md ("config.toml"); the shipped config.toml lists them all.
//! Unknown keys are rejected, durations and sizes need units (see [`units`]), and every error
//! names the key and, where it can be found in the text, its line.

mod auth;
pub mod limits;
mod listen;
mod locate;
mod reaper;
mod secrets;
mod tls;
pub mod units;

pub use auth::{AuthQuery, DEFAULT_AUTH_QUERY};
pub use limits::{Account, Function, FunctionFrom, Limits, UnknownFunctions};
pub use listen::{Backend, Listen};
pub use reaper::Reaper;
pub use tls::{BackendTls, BackendTlsMode, ListenTls, ListenTlsMode};
mod validate;
mod warnings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use std::{fmt, fs};

use serde::{Deserialize, Serialize};

pub use validate::Reason;
pub use warnings::{Checked, Doubt, Warning};

/// Prefix of a SCRAM-SHA-256 secret stored as a password (the `pg_authid` format).
pub const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Prefix of an md5 hash stored as a password ("md5" + 32 hex digits).
pub const MD5_PREFIX: &str = "md5";

/// Everything config.toml configures.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The client-facing listener and its limits.
    pub listen: Listen,
    /// The Postgres server the broker connects to.
    pub backend: Backend,
    /// How server connections are pooled and handed to clients.
    pub pool: PoolSettings,
    /// What is reaped, and how often the sweep runs.
    pub reaper: Reaper,
    /// Defaults of the caps, and how functions are named.
    pub limits: Limits,
    /// Caps per account and per function.
    pub accounts: BTreeMap<String, Account>,
    /// Users that may log in through the broker.
    pub users: Vec<User>,
    /// Users not listed are looked up in Postgres, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthQuery>,
}

/// `[pool]`: server connection pools, one per (database, user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    /// When a server connection goes back to the pool.
    pub mode: PoolMode,
    /// Server connections per (database, user); at least 1.
    pub size: usize,
    /// Longest wait for a server connection.
    #[serde(with = "units::duration")]
    pub borrow_timeout: Duration,
    /// What happens to a server connection whose client left mid-transaction.
    pub on_client_disconnect: OnClientDisconnect,
    /// Bound on that cleanup before the server connection is closed instead.
    #[serde(with = "units::duration")]
    pub server_drain_timeout: Duration,
    /// Warm spare server connections kept per pool while it was used within `spare_ttl`.
    pub min_idle: usize,
    /// How long after its last use a pool keeps its `min_idle` spares.
    #[serde(with = "units::duration")]
    pub spare_ttl: Duration,
    /// Idle server connections above `min_idle` are closed after this long.
    #[serde(with = "units::duration")]
    pub server_idle_timeout: Duration,
    /// Server connections older than this are closed when idle.
    #[serde(with = "units::duration")]
    pub server_lifetime: Duration,
    /// Named statements kept prepared on each server connection (an LRU; the evicted are
    /// closed). 0: named statements are not tracked, and pin their client in transaction
    /// mode.
    pub prepared_statements_per_server: usize,
}

/// When a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// At the end of each transaction (ReadyForQuery 'I').
    #[default]
    Transaction,
    /// When the client disconnects.
    Session,
}

/// What happens to a server connection whose client disconnected mid-transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnClientDisconnect {
    /// Cancel the running query, ROLLBACK, and keep the connection.
    #[default]
    Reuse,
    /// Close the connection.
    Close,
}

/// `[[users]]`: a login the broker accepts from clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Plaintext, "md5<32 hex>" or a "SCRAM-SHA-256$…" secret.
    #[serde(default)]
    pub password: String,
    /// A file whose first line is the password (instead of `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Account the user belongs to; `None` means the user's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// How the broker authenticates this client; `None` means [`User::auth_method`]'s default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<AuthMethod>,
}

/// How the broker authenticates a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (RFC 7677), Postgres' default.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Postgres' md5 challenge-response.
    #[serde(rename = "md5")]
    Md5,
    /// Cleartext password (use only over TLS).
    #[serde(rename = "password")]
    Password,
}

/// The form in which a user's password is stored in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordKind {
    /// The password itself.
    Plain,
    /// "md5" + hex(md5(password + user name)).
    Md5,
    /// A SCRAM-SHA-256 secret: iterations, salt, stored key and server key.
    ScramSha256,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", .path.display())]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML or does not fit the schema (unknown key, wrong type, missing unit).
    #[error("{}{}: {message}", Origin(.path.as_deref()), KeyName(.key.as_deref()))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The dotted key the error points into, when there is one (e.g. `pool.sise`); none for
        /// text that is not TOML at all, where toml's message gives the line and column.
        key: Option<String>,
        /// toml's message, which carries the line, column and a snippet.
        message: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("{}{}: `{key}` {reason}", Origin(.path.as_deref()), LineNumber(*.line))]
    Invalid {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The dotted key (e.g. `pool.size`, `users[0].password`).
        key: String,
        /// 1-based line of the key, when it was found in the text.
        line: Option<usize>,
        /// What is wrong with the value.
        reason: Reason,
    },
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Self::parse_in(&text, path.parent()).map_err(|err| err.with_path(path))
    }

    /// Parses and validates config text (a `password_file` is taken from the working
    /// directory).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_in(text, None)
    }

    /// Parses config text, reads the password files (relative to `base`) and validates.
    fn parse_in(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|err| parse_error(text, &err))?;
        secrets::read_password_files(&mut config.users, base).map_err(|err| err.locate(text))?;
        if let Some(auth) = &mut config.auth {
            secrets::read_auth_password(auth, base).map_err(|err| err.locate(text))?;
        }
        config.validate().map_err(|err| err.locate(text))?;
        Ok(config)
    }

    /// Checks the values that the schema alone cannot (ranges, formats, consistency).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::config(self)
    }

    /// Renders the effective config as TOML (what `pgbroker check` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|err| format!("# cannot render the config: {err}\n"))
    }
}

impl FromStr for Config {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text)
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            mode: PoolMode::Transaction,
            size: 20,
            borrow_timeout: Duration::from_secs(5),
            on_client_disconnect: OnClientDisconnect::Reuse,
            server_drain_timeout: Duration::from_secs(2),
            min_idle: 0,
            prepared_statements_per_server: 250,
            spare_ttl: Duration::from_secs(300),
            server_idle_timeout: Duration::from_secs(60),
            server_lifetime: Duration::from_secs(3600),
        }
    }
}

impl User {
    /// The account this user belongs to: `account`, or else the user's own name.
    pub fn account(&self) -> &str {
        self.account.as_deref().unwrap_or(&self.name)
    }

    /// How the broker authenticates this user: `auth_method`, or else md5 for an md5
    /// password and SCRAM-SHA-256 otherwise.
    pub fn auth_method(&self) -> AuthMethod {
        match (self.auth_method, self.password_kind()) {
            (Some(method), _) => method,
            (None, PasswordKind::Md5) => AuthMethod::Md5,
            (None, _) => AuthMethod::ScramSha256,
        }
    }

    /// The form in which the password is stored.
    pub fn password_kind(&self) -> PasswordKind {
        if self.password.starts_with(SCRAM_PREFIX) {
            PasswordKind::ScramSha256
        } else if self.password.starts_with(MD5_PREFIX) {
            PasswordKind::Md5
        } else {
            PasswordKind::Plain
        }
    }
}

impl ConfigError {
    /// Records the file the config text came from.
    fn with_path(mut self, file: &Path) -> Self {
        match &mut self {
            ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => {
                *path = Some(file.to_owned());
            }
            ConfigError::Io { .. } => {}
        }
        self
    }

    /// Fills in the line of an invalid key from the text it was parsed from.
    fn locate(mut self, text: &str) -> Self {
        if let ConfigError::Invalid { key, line, .. } = &mut self {
            *line = locate::line_of(text, key);
        }
        self
    }
}

/// The text of the config file at `path`.
fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Wraps toml's error, adding the dotted key it points into.
fn parse_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let key = err.span().and_then(|span| locate::key_at(text, span.start));
    let message = err.to_string().trim_end().to_owned();
    ConfigError::Parse {
        path: None,
        key,
        message,
    }
}

/// Displays where a config came from: its file, or just "config".
struct Origin<'a>(Option<&'a Path>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str("config"),
        }
    }
}

/// Displays ", key `a.b`" when a key is known.
struct KeyName<'a>(Option<&'a str>);

impl fmt::Display for KeyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, ", key `{key}`"),
            None => Ok(()),
        }
    }
}

/// Displays " line N" when a line is known.
struct LineNumber(Option<usize>);

impl fmt::Display for LineNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " line {line}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
