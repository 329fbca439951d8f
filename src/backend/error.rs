//! What can go wrong on a server connection: its login, its use, and a client statement the
//! broker refuses in the server's place. Each says what happened; what a client is told is
//! decided above, in [`crate::error::client`].

use std::io;
use std::time::Duration;

use crate::protocol::FrameError;

/// Logging in to Postgres (a new server connection) failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// TCP connect failed.
    #[error("cannot connect to backend {addr}: {source}")]
    Connect {
        /// host:port of the backend.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// TCP connect or login did not finish within backend.connect_timeout.
    #[error("cannot connect to backend {addr}: timed out after {after:?}")]
    Timeout {
        /// host:port of the backend.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// Postgres answered the login with an ErrorResponse.
    #[error("backend refused the login: {message} ({code})")]
    Refused {
        /// Its SQLSTATE.
        code: String,
        /// Its message.
        message: String,
    },
    /// TLS could not be set up as `backend.tls.mode` asks.
    #[error("cannot connect to backend {addr}: TLS: {what}")]
    Tls {
        /// host:port of the backend.
        addr: String,
        /// What went wrong.
        what: &'static str,
    },
    /// The TLS handshake with the backend failed (a certificate not verified, among others).
    #[error("cannot connect to backend {addr}: TLS handshake: {source}")]
    Handshake {
        /// host:port of the backend.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Postgres asked for an authentication method the broker cannot answer.
    #[error("backend asked for unsupported authentication ({method})")]
    Unsupported {
        /// The method.
        method: &'static str,
    },
    /// The user's config holds only a SCRAM secret, and no client has logged in with
    /// SCRAM-SHA-256 since the broker started, so no ClientKey is known to log in with.
    #[error("no SCRAM ClientKey known for user \"{user}\": its [[users]] entry holds only a SCRAM secret, and no client of it has logged in with SCRAM-SHA-256 since the broker started")]
    NoClientKey {
        /// The user.
        user: String,
    },
    /// Logging in with a recovered ClientKey failed (SCRAM passthrough): mostly, the
    /// configured secret is not the server's verifier.
    #[error("SCRAM passthrough login failed: {0}")]
    Passthrough(#[from] crate::auth::PassthroughError),
    /// The login exchange broke (I/O or protocol).
    #[error("login to backend failed: {0}")]
    Server(#[from] ServerError),
}

/// A server connection failed while the broker used it.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Socket error.
    #[error("backend connection error: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection.
    #[error("backend closed the connection")]
    Closed,
    /// The backend broke the protocol.
    #[error("backend protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// A statement the broker ran itself failed.
    #[error("backend rejected {what}: {message} ({code})")]
    Statement {
        /// What the broker was doing.
        what: &'static str,
        /// SQLSTATE.
        code: String,
        /// Message.
        message: String,
    },
    /// The broker's own statement or cleanup did not finish in time.
    #[error("backend did not answer within {0:?}")]
    Timeout(Duration),
}

/// A client's Parse the broker refuses in the server's place, as Postgres would have (or,
/// for its own bound, as Postgres refuses a program over a limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementRefusal {
    /// A Parse inside a failed transaction block.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A Parse under a name the client holds already.
    #[error("prepared statement \"{name}\" already exists")]
    Duplicate {
        /// The client's statement name.
        name: Box<str>,
    },
    /// A Parse past the broker's bound on one client's statements.
    #[error(
        "a client may hold at most {count} named prepared statements of {megabytes} MB together"
    )]
    TooMany {
        /// The bound on their number.
        count: usize,
        /// The bound on their size together.
        megabytes: usize,
    },
}
