//! Why a cap refused a client or a transaction. What a client is told is decided above, in
//! [`crate::error::client`].

use std::time::Duration;

/// A cap refused a client or a transaction.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// `limits.unknown_functions = "deny"` and the function is not listed.
    #[error("function {function} of account {account} is not allowed")]
    UnknownFunction {
        /// The account.
        account: String,
        /// The function.
        function: String,
    },
    /// The function's client cap is reached.
    #[error("function {function} of account {account} has {max} clients")]
    FunctionClients {
        /// The account.
        account: String,
        /// The function.
        function: String,
        /// The cap.
        max: usize,
    },
    /// The account's client cap is reached.
    #[error("account {account} has {max} clients")]
    AccountClients {
        /// The account.
        account: String,
        /// The cap.
        max: usize,
    },
    /// The function stayed at its concurrency cap for the whole borrow timeout.
    #[error(
        "function {function} of account {account} at its concurrency cap {cap}; waited {waited:?}"
    )]
    FunctionBusy {
        /// The account.
        account: String,
        /// The function.
        function: String,
        /// The cap.
        cap: usize,
        /// How long the transaction waited.
        waited: Duration,
    },
    /// The account stayed at its concurrency cap for the whole borrow timeout.
    #[error("account {account} at its concurrency cap {cap}; waited {waited:?}")]
    AccountBusy {
        /// The account.
        account: String,
        /// The cap.
        cap: usize,
        /// How long the transaction waited.
        waited: Duration,
    },
    /// The function's queue of waiting transactions is full.
    #[error("function {function} of account {account} has {max} transactions waiting")]
    Queue {
        /// The account.
        account: String,
        /// The function.
        function: String,
        /// The cap.
        max: usize,
    },
}
