//! Why a borrow found no server connection. What a client is told is decided above, in
//! [`crate::error::client`].

use std::time::Duration;

use crate::backend::LoginError;

/// Getting a server connection out of a pool failed.
#[derive(Debug, thiserror::Error)]
pub enum BorrowError {
    /// The pool stayed full for the whole borrow timeout.
    #[error("pool {database}/{user} full; waited {waited:?}")]
    PoolFull {
        /// Database of the pool.
        database: String,
        /// User of the pool.
        user: String,
        /// How long the client waited.
        waited: Duration,
    },
    /// Logging in a new server connection failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// Postgres kept refusing logins (too many connections, starting up) until the borrow
    /// timeout.
    #[error("backend refused {times} logins over {waited:?}: {message} ({code})")]
    Refused {
        /// SQLSTATE of the last refusal.
        code: String,
        /// Its message.
        message: String,
        /// How many logins were refused.
        times: u32,
        /// How long the client waited.
        waited: Duration,
    },
    /// The pool is closed (shutdown).
    #[error("pool closed")]
    Closed,
}
