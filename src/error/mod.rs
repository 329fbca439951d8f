//! One error enum per boundary, and (in `client.rs`) the one place that decides what a
//! client is told: the SQLSTATE, the severity and the words. Internal details (server text
//! during the broker's own login, secrets, hashes) never reach a client.

use std::io;
use std::time::Duration;

use crate::auth::AuthError;

/// A message from the network that breaks the protocol.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length word below 4.
    #[error("message {} has invalid length {len}", char::from(*tag))]
    BadLength {
        /// Message type.
        tag: u8,
        /// The length word.
        len: u32,
    },
    /// A message over the configured maximum.
    #[error("message {} of {len} bytes exceeds max_message_size {max}", char::from(*tag))]
    TooLarge {
        /// Message type.
        tag: u8,
        /// The length word.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// A startup packet with an impossible length.
    #[error("invalid startup packet length {len}")]
    BadStartupLength {
        /// The length word.
        len: u32,
    },
    /// A message type not allowed here.
    #[error("unexpected message type {}", char::from(*tag))]
    UnexpectedTag {
        /// Message type.
        tag: u8,
    },
    /// A body that does not parse.
    #[error("malformed message: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
}

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
    /// Postgres asked for an authentication method the broker cannot answer.
    #[error("backend asked for unsupported authentication ({method})")]
    Unsupported {
        /// The method.
        method: &'static str,
    },
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

/// Why a client session ended or a statement of it failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error on the client side.
    #[error("client connection error: {0}")]
    ClientIo(#[from] io::Error),
    /// The client broke the protocol.
    #[error("client protocol error: {0}")]
    Frame(#[from] FrameError),
    /// Startup and authentication took longer than listen.startup_timeout.
    #[error("startup not finished within {0:?}")]
    StartupTimeout(Duration),
    /// A protocol version other than 3.x.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// A startup parameter the broker cannot serve (replication, bad options).
    #[error("unsupported startup parameter {name}")]
    UnsupportedParameter {
        /// The parameter.
        name: String,
    },
    /// No user in the startup packet.
    #[error("no user name in startup packet")]
    NoUser,
    /// Authentication failed.
    #[error("authentication of user {user} failed: {source}")]
    Auth {
        /// The user name sent.
        user: String,
        /// Why.
        #[source]
        source: AuthError,
    },
    /// A client authentication method was asked that this user's secret cannot serve.
    #[error("user {user} cannot use {method}")]
    AuthMethod {
        /// The user.
        user: String,
        /// The method.
        method: &'static str,
    },
    /// No server connection could be had.
    #[error(transparent)]
    Borrow(#[from] BorrowError),
    /// The server connection failed under the client.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A setting of the client (from its startup packet) was rejected by Postgres.
    #[error("session parameter rejected: {message} ({code})")]
    Parameter {
        /// SQLSTATE.
        code: String,
        /// Message from Postgres (it names the parameter).
        message: String,
    },
    /// A cap refused the client at connect.
    #[error(transparent)]
    Cap(#[from] CapError),
    /// listen.max_client_connections reached.
    #[error("too many client connections (max {max})")]
    TooManyClients {
        /// The limit.
        max: usize,
    },
    /// The broker is shutting down.
    #[error("shutting down")]
    Shutdown,
    /// The client was silent past reaper.client_idle_timeout.
    #[error("client idle for {after:?}")]
    ClientIdle {
        /// The timeout.
        after: Duration,
    },
    /// The client was silent inside a transaction past reaper.idle_in_transaction_timeout.
    #[error("idle in transaction for {after:?}")]
    IdleInTransaction {
        /// The timeout.
        after: Duration,
    },
}

/// The error of `Broker::run`: the broker could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A user's password does not parse.
    #[error("invalid password of user {name}")]
    User {
        /// The user.
        name: String,
        /// Why.
        #[source]
        source: AuthError,
    },
}

pub mod client;
pub use client::ClientMessage;
