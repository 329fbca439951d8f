//! Configs that are valid but cannot be what their author meant. `pgbroker check` prints a
//! warning for each, with the line of the key it is about, and still exits 0: the broker
//! would run, just not as intended.

use std::fmt;
use std::path::{Path, PathBuf};

use super::validate::user_key;
use super::{locate, Config, ConfigError, LineNumber, Origin};

/// A valid config that is likely a mistake, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{doubt}", Origin(.path.as_deref()), LineNumber(*.line), Subject(.key.as_deref()))]
pub struct Warning {
    /// The file, when the text came from one.
    pub path: Option<PathBuf>,
    /// The dotted key it is about (e.g. `users[0].account`); none for what no key says.
    pub key: Option<String>,
    /// 1-based line of the key, when it was found in the text.
    pub line: Option<usize>,
    /// What looks wrong.
    pub doubt: Doubt,
}

/// What looks wrong in a valid config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Doubt {
    /// No `[[users]]` and no `[auth]` to look users up: every login is refused.
    #[error("no [[users]] and no [auth] (auth_query): no client can log in")]
    NoLogin,
    /// A user's `account` names no `[accounts.NAME]` table (a typo gets the defaults).
    #[error("is \"{account}\", but there is no [accounts.{account}] table: its clients get the [limits] defaults")]
    UnknownAccount {
        /// The account named.
        account: String,
    },
    /// A function's cap above its account's: the account's cap binds first.
    #[error("is {cap}, above its account's cap of {account_cap}, which binds first")]
    AboveAccountCap {
        /// The function's cap.
        cap: usize,
        /// The account's cap.
        account_cap: usize,
    },
    /// A pool that Postgres would not let fill.
    #[error("is {size}, but Postgres allows {} connections to a role that is not a superuser (max_connections {max_connections}, {reserved} reserved)", .max_connections.saturating_sub(*.reserved))]
    PoolAboveServer {
        /// `pool.size`.
        size: usize,
        /// The server's `max_connections`.
        max_connections: usize,
        /// Connections it keeps for superusers (`superuser_reserved_connections`, and from
        /// Postgres 16 `reserved_connections`).
        reserved: usize,
    },
}

/// A config file loaded for `pgbroker check`: the config and what looks wrong in it.
#[derive(Debug)]
pub struct Checked {
    /// The config, valid.
    pub config: Config,
    /// What looks wrong in it, in the order found.
    pub warnings: Vec<Warning>,
    text: String,
    path: PathBuf,
}

impl Config {
    /// Loads the config at `path` as [`Config::load`] does, with the warnings that need no
    /// server to find.
    pub fn check(path: &Path) -> Result<Checked, ConfigError> {
        Checked::new(super::read(path)?, path)
    }
}

impl Checked {
    /// Parses `text`, read from `path`, and lists what looks wrong in it.
    fn new(text: String, path: &Path) -> Result<Checked, ConfigError> {
        let config = Config::parse_in(&text, path.parent()).map_err(|err| err.with_path(path))?;
        let mut checked = Checked {
            warnings: Vec::new(),
            text,
            path: path.to_owned(),
            config,
        };
        for (key, doubt) in doubts(&checked.config) {
            checked.warn(key, doubt);
        }
        Ok(checked)
    }

    /// Warns when `pool.size` is more than Postgres lets a role that is not a superuser open:
    /// its `max_connections` less the `reserved` connections.
    pub fn against_server(&mut self, max_connections: usize, reserved: usize) {
        let size = self.config.pool.size;
        if size > max_connections.saturating_sub(reserved) {
            let doubt = Doubt::PoolAboveServer {
                size,
                max_connections,
                reserved,
            };
            self.warn(Some("pool.size".to_owned()), doubt);
        }
    }

    fn warn(&mut self, key: Option<String>, doubt: Doubt) {
        let line = key.as_deref().and_then(|k| locate::line_of(&self.text, k));
        self.warnings.push(Warning {
            path: Some(self.path.clone()),
            key,
            line,
            doubt,
        });
    }
}

/// What looks wrong in `config`, by key.
fn doubts(config: &Config) -> Vec<(Option<String>, Doubt)> {
    let mut out = Vec::new();
    if config.users.is_empty() && config.auth.is_none() {
        out.push((None, Doubt::NoLogin));
    }
    for (index, user) in config.users.iter().enumerate() {
        // A user without `account` is its own account: no table is the normal case there.
        if let Some(account) = &user.account {
            if !config.accounts.contains_key(account) {
                let account = account.clone();
                out.push((
                    Some(user_key(index, "account")),
                    Doubt::UnknownAccount { account },
                ));
            }
        }
    }
    for (key, cap, account_cap) in function_caps(config) {
        if cap > account_cap {
            out.push((Some(key), Doubt::AboveAccountCap { cap, account_cap }));
        }
    }
    out
}

/// Every function cap the config writes, with the cap of the account it falls under (those
/// of accounts without a cap left out): (key, cap, account's cap).
fn function_caps(config: &Config) -> Vec<(String, usize, usize)> {
    let limits = &config.limits;
    let capped = |n: usize| (n > 0).then_some(n);
    let default_account_cap = capped(limits.default_account_concurrency);
    let mut out = Vec::new();
    if let (Some(cap), Some(account_cap)) = (
        capped(limits.default_function_concurrency),
        default_account_cap,
    ) {
        out.push((
            "limits.default_function_concurrency".to_owned(),
            cap,
            account_cap,
        ));
    }
    for (name, account) in &config.accounts {
        let Some(account_cap) = account.max_concurrency.or(default_account_cap) else {
            continue;
        };
        if let Some(cap) = account.function_concurrency {
            out.push((
                format!("accounts.{name}.function_concurrency"),
                cap,
                account_cap,
            ));
        }
        for (function, caps) in &account.functions {
            if let Some(cap) = caps.max_concurrency {
                let key = format!("accounts.{name}.functions.{function}.max_concurrency");
                out.push((key, cap, account_cap));
            }
        }
    }
    out
}

/// Displays "`key` " when there is a key.
struct Subject<'a>(Option<&'a str>);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, "`{key}` "),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
