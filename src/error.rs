//! One error enum per boundary, and the one place that decides what a client is told:
//! the SQLSTATE, the severity and the words. Internal details (server text during the
//! broker's own login, secrets, hashes) never reach a client.

use std::io;
use std::time::Duration;

use crate::auth::AuthError;
use crate::protocol::write::Severity;

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
    /// The pool is closed (shutdown).
    #[error("pool closed")]
    Closed,
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
    /// A startup parameter of the client was rejected by Postgres.
    #[error("startup parameter {name} rejected: {message} ({code})")]
    Parameter {
        /// Parameter name.
        name: String,
        /// SQLSTATE.
        code: String,
        /// Message from Postgres.
        message: String,
    },
    /// listen.max_client_connections reached.
    #[error("too many client connections (max {max})")]
    TooManyClients {
        /// The limit.
        max: usize,
    },
    /// The broker is shutting down.
    #[error("shutting down")]
    Shutdown,
}

/// What a client is told about an error: the allowlist of words that leave the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// ERROR keeps the session; FATAL ends it.
    pub severity: Severity,
    /// SQLSTATE.
    pub code: String,
    /// Text, starting with `pgbroker:`.
    pub text: String,
    /// An optional hint.
    pub hint: Option<&'static str>,
}

impl ClientMessage {
    fn new(severity: Severity, code: &str, text: String) -> Self {
        ClientMessage {
            severity,
            code: code.to_owned(),
            text,
            hint: None,
        }
    }

    fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

impl BorrowError {
    /// The error a client gets when a borrow fails mid-session (`at_connect`: during startup).
    pub fn client_message(&self, at_connect: bool) -> ClientMessage {
        let severity = if at_connect {
            Severity::Fatal
        } else {
            Severity::Error
        };
        match self {
            BorrowError::PoolFull { database, user, waited } => ClientMessage::new(
                severity,
                "53300",
                format!("pgbroker: pool for database \"{database}\" user \"{user}\" is full; waited {waited:?}"),
            )
            .hint("raise pool.size or pool.borrow_timeout, or shorten transactions"),
            BorrowError::Login(login) => login.client_message(severity, at_connect),
            BorrowError::Closed => ClientMessage::new(Severity::Fatal, "57P01", "pgbroker: shutting down".into()),
        }
    }
}

impl LoginError {
    fn client_message(&self, severity: Severity, at_connect: bool) -> ClientMessage {
        let unreachable = if at_connect { "08001" } else { "08006" };
        match self {
            LoginError::Connect { .. } | LoginError::Timeout { .. } => {
                ClientMessage::new(severity, unreachable, format!("pgbroker: {self}"))
            }
            // Postgres's own words about a login it refused (unknown database, too many
            // connections, starting up) are meant for users; pass code and text through.
            LoginError::Refused { code, message } => ClientMessage::new(
                severity,
                code,
                format!("pgbroker: backend refused the login: {message}"),
            ),
            LoginError::Unsupported { .. } => {
                ClientMessage::new(severity, unreachable, format!("pgbroker: {self}")).hint(
                    "configure the user's plaintext password (or its md5 hash for an md5 server)",
                )
            }
            LoginError::Server(_) => ClientMessage::new(
                severity,
                unreachable,
                "pgbroker: login to backend failed".into(),
            ),
        }
    }
}

impl SessionError {
    /// What the client is told, or `None` when it is gone or must learn nothing.
    pub fn client_message(&self) -> Option<ClientMessage> {
        let fatal =
            |code: &str, text: String| Some(ClientMessage::new(Severity::Fatal, code, text));
        match self {
            SessionError::ClientIo(_) => None,
            SessionError::Frame(e) => fatal("08P01", format!("pgbroker: invalid message: {e}")),
            SessionError::StartupTimeout(after) => fatal(
                "08P01",
                format!("pgbroker: startup not finished within {after:?}"),
            ),
            SessionError::UnsupportedProtocol { major, minor } => fatal(
                "0A000",
                format!(
                    "pgbroker: unsupported frontend protocol {major}.{minor}: server supports 3.0"
                ),
            ),
            SessionError::UnsupportedParameter { name } => fatal(
                "0A000",
                format!("pgbroker: startup parameter \"{name}\" is not supported"),
            ),
            SessionError::NoUser => {
                fatal("28000", "pgbroker: no user name in startup packet".into())
            }
            SessionError::Auth { user, .. } | SessionError::AuthMethod { user, .. } => fatal(
                "28P01",
                format!("pgbroker: password authentication failed for user \"{user}\""),
            ),
            SessionError::Borrow(e) => Some(e.client_message(true)),
            SessionError::Server(_) => fatal(
                "08006",
                "pgbroker: lost the connection to the backend".into(),
            ),
            SessionError::Parameter {
                name,
                code,
                message,
            } => fatal(
                code,
                format!("pgbroker: startup parameter \"{name}\" rejected: {message}"),
            ),
            SessionError::TooManyClients { max } => Some(ClientMessage::new(
                Severity::Fatal,
                "53300",
                format!(
                    "pgbroker: too many client connections (listen.max_client_connections = {max})"
                ),
            )),
            SessionError::Shutdown => fatal(
                "57P01",
                "pgbroker: terminating connection: shutting down".into(),
            ),
        }
    }
}

/// The error of `Broker::run`: the broker could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
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
    #[error("user {name}: {source}")]
    User {
        /// The user.
        name: String,
        /// Why.
        #[source]
        source: AuthError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_bad_password_read_the_same() {
        let a = SessionError::Auth {
            user: "x".into(),
            source: AuthError::BadPassword,
        };
        let b = SessionError::AuthMethod {
            user: "x".into(),
            method: "md5",
        };
        assert_eq!(a.client_message(), b.client_message());
        assert_eq!(a.client_message().unwrap().code, "28P01");
    }

    #[test]
    fn backend_down_names_the_backend() {
        let e = BorrowError::Login(LoginError::Connect {
            addr: "127.0.0.1:1".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        });
        let at_connect = e.client_message(true);
        assert_eq!(
            (at_connect.code.as_str(), at_connect.severity),
            ("08001", Severity::Fatal)
        );
        assert!(at_connect
            .text
            .starts_with("pgbroker: cannot connect to backend 127.0.0.1:1: "));
        assert_eq!(e.client_message(false).code, "08006");
    }

    #[test]
    fn every_message_starts_with_pgbroker() {
        let errors = [
            SessionError::Frame(FrameError::Malformed { what: "x" }),
            SessionError::StartupTimeout(Duration::from_secs(1)),
            SessionError::UnsupportedProtocol { major: 2, minor: 0 },
            SessionError::NoUser,
            SessionError::Shutdown,
            SessionError::TooManyClients { max: 1 },
        ];
        for e in errors {
            assert!(
                e.client_message().unwrap().text.starts_with("pgbroker: "),
                "{e}"
            );
        }
    }
}
