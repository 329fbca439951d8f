//! `[limits]` and `[accounts.*]`: who a connection is (account, function) and the caps that
//! apply to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What names the function of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionFrom {
    /// The `application_name` startup parameter; the login user when it is missing or empty.
    #[default]
    ApplicationName,
    /// The login user.
    User,
}

/// Whether functions not listed under their account may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFunctions {
    /// Any function may connect, with the account's default caps.
    #[default]
    Allow,
    /// Only functions listed under `[accounts.NAME.functions.*]` may connect.
    Deny,
}

/// `[limits]`: defaults for the caps, and how functions are identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// What names the function of a connection.
    pub function_from: FunctionFrom,
    /// Concurrency cap of a function whose account sets no other; 0: no cap of its own
    /// (the pool's size bounds it).
    pub default_function_concurrency: usize,
    /// Concurrency cap of an account that sets none; 0: no cap of its own.
    pub default_account_concurrency: usize,
    /// Client connections open per function, unless the function sets its own.
    pub default_function_clients: usize,
    /// Queued transactions per function; past it 53300 at once (0 = unbounded).
    pub default_function_waiting: usize,
    /// Beyond this many functions, unknown ones share the name "other".
    pub max_tracked_functions: usize,
    /// Whether unlisted functions may connect.
    pub unknown_functions: UnknownFunctions,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            function_from: FunctionFrom::ApplicationName,
            default_function_concurrency: 0,
            default_account_concurrency: 0,
            default_function_clients: 1000,
            default_function_waiting: 100,
            max_tracked_functions: 1000,
            unknown_functions: UnknownFunctions::Allow,
        }
    }
}

/// `[accounts.NAME]`: the caps of one account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Account {
    /// All functions of the account together (default: limits.default_account_concurrency).
    pub max_concurrency: Option<usize>,
    /// Default cap of each function (default: limits.default_function_concurrency).
    pub function_concurrency: Option<usize>,
    /// Client connections open for the whole account (default: unbounded).
    pub max_clients: Option<usize>,
    /// Functions with caps of their own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<String, Function>,
}

/// `[accounts.NAME.functions.FN]`: the caps of one function.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Function {
    /// Server connections in use at once.
    pub max_concurrency: Option<usize>,
    /// Client connections open at once.
    pub max_clients: Option<usize>,
    /// Queued transactions; past it 53300 at once (0 = unbounded).
    pub max_waiting: Option<usize>,
}
