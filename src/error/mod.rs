//! What ends a client session or fails one of its statements ([`SessionError`]), the error
//! of [`crate::Broker`]'s start ([`Error`]), and (in [`client`]) the one place that decides
//! what a client is told: the SQLSTATE, the severity and the words. It sits above every
//! layer whose errors it maps (each layer keeps its own error type); internal details
//! (server text during the broker's own login, secrets, hashes) never reach a client.

use std::io;
use std::time::Duration;

use crate::auth::AuthError;
use crate::backend::ServerError;
use crate::limits::CapError;
use crate::pool::BorrowError;
use crate::protocol::FrameError;

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
    /// A plaintext startup where `listen.tls.mode = "require"`.
    #[error("plaintext startup while TLS is required")]
    TlsRequired,
    /// The client's TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
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
    /// A TLS certificate, key or root set does not load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
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
