//! The one place that maps an error to what a client sees: SQLSTATE, severity, the words
//! (starting with `pgbroker:`, but for the Parse refusals the broker gives in the server's
//! place, which carry Postgres's own code and words) and a hint where one helps. Only this
//! file builds a [`ClientMessage`]; its tests hold every other file in src/ to that.

use bytes::BytesMut;

use super::SessionError;
use crate::auth::PassthroughError;
use crate::backend::{LoginError, StatementRefusal};
use crate::limits::CapError;
use crate::pool::BorrowError;
use crate::protocol::errcodes::CANNOT_CONNECT_NOW;
use crate::protocol::write::{self, Severity};

/// Every SQLSTATE the broker itself chooses, its own and those it answers with in Postgres's
/// place (the metrics keep a label for each of them, however many codes the server raises).
pub const BROKER_SQLSTATES: &[&str] = &[
    "08001", "08006", "08P01", "0A000", "25P02", "25P03", "28000", "28P01", "3D000", "42P05",
    "53300", "54000", "57P01", "57P03", "57P05",
];

/// What a client is told about an error: the allowlist of words that leave the broker.
/// Built only here (its fields are private), so no other module can pick a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// ERROR keeps the session; FATAL ends it.
    severity: Severity,
    /// SQLSTATE.
    code: String,
    /// The words.
    text: String,
    /// An optional hint.
    hint: Option<&'static str>,
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

    /// ERROR keeps the session; FATAL ends it.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// The SQLSTATE.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The words.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends it to `buf` as an ErrorResponse.
    pub fn write(&self, buf: &mut BytesMut) {
        let (code, text) = (&self.code, &self.text);
        write::error_response(buf, self.severity, code, text, self.hint);
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
                format!(
                    "pgbroker: pool for database \"{database}\" user \"{user}\" is full; waited {:.1}s",
                    waited.as_secs_f64()
                ),
            )
            .hint(
                "raise pool.size or pool.borrow_timeout, shorten transactions, or avoid session \
                 state that pins a client to its server (SET, LISTEN, SQL PREPARE)",
            ),
            BorrowError::Login(login) => login.client_message(severity, at_connect),
            BorrowError::Refused { code, times, waited, .. } => ClientMessage::new(
                severity,
                code,
                format!(
                    "pgbroker: Postgres refused {times} logins ({}) over {:.1}s",
                    if code == CANNOT_CONNECT_NOW { "starting up" } else { "too many connections" },
                    waited.as_secs_f64()
                ),
            )
            .hint("lower pool.size below the server's max_connections, or raise it"),
            BorrowError::Closed => ClientMessage::new(Severity::Fatal, "57P01", "pgbroker: shutting down".into()),
        }
    }
}

impl CapError {
    /// What the client is told: FATAL for a refused connection, ERROR for a refused
    /// transaction (the session stays usable).
    pub fn client_message(&self) -> ClientMessage {
        let secs = |d: &std::time::Duration| format!("{:.1}s", d.as_secs_f64());
        match self {
            CapError::UnknownFunction { account, function } => ClientMessage::new(
                Severity::Fatal,
                "28000",
                format!("pgbroker: function \"{function}\" of account \"{account}\" is not allowed (limits.unknown_functions = \"deny\")"),
            ),
            CapError::FunctionClients { account, function, max } => ClientMessage::new(
                Severity::Fatal,
                "53300",
                format!("pgbroker: function \"{function}\" of account \"{account}\" reached its client cap of {max}"),
            ),
            CapError::AccountClients { account, max } => ClientMessage::new(
                Severity::Fatal,
                "53300",
                format!("pgbroker: account \"{account}\" reached its client cap of {max}"),
            ),
            CapError::FunctionBusy { account, function, cap, waited } => ClientMessage::new(
                Severity::Error,
                "53300",
                format!("pgbroker: function \"{function}\" of account \"{account}\" reached its concurrency cap of {cap}; waited {}", secs(waited)),
            )
            .hint("raise the function's max_concurrency or pool.borrow_timeout, or shorten transactions"),
            CapError::AccountBusy { account, cap, waited } => ClientMessage::new(
                Severity::Error,
                "53300",
                format!("pgbroker: account \"{account}\" reached its concurrency cap of {cap}; waited {}", secs(waited)),
            )
            .hint("raise the account's max_concurrency or pool.borrow_timeout, or shorten transactions"),
            CapError::Queue { account, function, max } => ClientMessage::new(
                Severity::Error,
                "53300",
                format!("pgbroker: function \"{function}\" of account \"{account}\" has {max} transactions waiting already (max_waiting)"),
            ),
        }
    }
}

impl StatementRefusal {
    /// The error a refused Parse gets in its place in the pipeline. The first two are
    /// Postgres's own (code and words), since the broker answers in the server's place.
    pub fn client_message(&self) -> ClientMessage {
        let error = |code, text| ClientMessage::new(Severity::Error, code, text);
        match self {
            StatementRefusal::InFailedTransaction => error("25P02", self.to_string()),
            StatementRefusal::Duplicate { .. } => error("42P05", self.to_string()),
            StatementRefusal::TooMany { .. } => {
                error("54000", format!("pgbroker: {self}; close some first"))
            }
        }
    }
}

/// SQLSTATEs of refused logins whose server text a client may read.
const PASSED_THROUGH: [&str; 4] = ["3D000", "53300", "57P03", "57P01"];

impl LoginError {
    fn client_message(&self, severity: Severity, at_connect: bool) -> ClientMessage {
        let unreachable = if at_connect { "08001" } else { "08006" };
        match self {
            LoginError::Connect { .. }
            | LoginError::Timeout { .. }
            | LoginError::Tls { .. }
            | LoginError::Handshake { .. } => {
                ClientMessage::new(severity, unreachable, format!("pgbroker: {self}"))
            }
            // Postgres's own words about a login it refused for a reason meant for users
            // (unknown database, too many connections, starting up) pass through; others
            // (pg_hba.conf, the broker's password) could describe the broker: code only.
            LoginError::Refused { code, message } if PASSED_THROUGH.contains(&code.as_str()) => {
                ClientMessage::new(
                    severity,
                    code,
                    format!("pgbroker: backend refused the login: {message}"),
                )
            }
            LoginError::Refused { code, .. } => ClientMessage::new(
                severity,
                code,
                format!("pgbroker: backend refused the login (SQLSTATE {code})"),
            )
            .hint("check the broker's [[users]] password against the backend's authentication"),
            LoginError::Unsupported { .. } => {
                ClientMessage::new(severity, unreachable, format!("pgbroker: {self}")).hint(
                    "configure the user's plaintext password (or its md5 hash for an md5 server)",
                )
            }
            LoginError::NoClientKey { .. } => {
                ClientMessage::new(severity, unreachable, format!("pgbroker: {self}")).hint(
                    "the broker logs in to Postgres with the key a client's SCRAM-SHA-256 login \
                     recovers: give the user auth_method = \"scram-sha-256\", or configure its \
                     plaintext password",
                )
            }
            LoginError::Passthrough(PassthroughError::Mismatch { .. }) => ClientMessage::new(
                severity,
                "28P01",
                "pgbroker: the backend refused the login: the user's SCRAM secret in the broker's \
                 config is not the server's"
                    .into(),
            )
            .hint(
                "copy the secret from the server: SELECT rolpassword FROM pg_authid WHERE \
                 rolname = '<user>', into the user's password in [[users]]",
            ),
            LoginError::Passthrough(_) | LoginError::Server(_) => ClientMessage::new(
                severity,
                unreachable,
                "pgbroker: login to backend failed".into(),
            ),
        }
    }
}

fn fatal(code: &str, text: String) -> Option<ClientMessage> {
    Some(ClientMessage::new(Severity::Fatal, code, text))
}

impl SessionError {
    /// What the client is told, or `None` when it is gone or must learn nothing.
    pub fn client_message(&self) -> Option<ClientMessage> {
        match self {
            SessionError::ClientIo(_) => None,
            SessionError::Borrow(e) => Some(e.client_message(true)),
            SessionError::Cap(cap) => Some(cap.client_message()),
            SessionError::Server(_) => fatal(
                "08006",
                "pgbroker: lost the connection to the backend".into(),
            ),
            SessionError::Parameter { code, message } => fatal(
                code,
                format!("pgbroker: a session parameter was rejected: {message}"),
            ),
            SessionError::TooManyClients { max } => fatal(
                "53300",
                format!(
                    "pgbroker: too many client connections (listen.max_client_connections = {max})"
                ),
            ),
            SessionError::ClientIdle { .. }
            | SessionError::IdleInTransaction { .. }
            | SessionError::Shutdown => self.termination(),
            SessionError::Frame(_)
            | SessionError::StartupTimeout(_)
            | SessionError::UnsupportedProtocol { .. }
            | SessionError::UnsupportedParameter { .. }
            | SessionError::NoUser
            | SessionError::TlsRequired
            | SessionError::Handshake(_)
            | SessionError::Auth { .. }
            | SessionError::AuthMethod { .. } => self.refused_at_startup(),
        }
    }

    /// Why a client was refused during startup and authentication.
    fn refused_at_startup(&self) -> Option<ClientMessage> {
        match self {
            SessionError::Frame(e) => fatal("08P01", format!("pgbroker: invalid message: {e}")),
            SessionError::StartupTimeout(after) => fatal(
                "08P01",
                format!("pgbroker: startup not finished within {after:?}"),
            ),
            SessionError::UnsupportedProtocol { major, minor } => fatal(
                "08P01",
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
            SessionError::TlsRequired => fatal(
                "28000",
                "pgbroker: TLS is required (listen.tls.mode = \"require\")".into(),
            )
            .map(|m| m.hint("connect with sslmode=require (or stricter)")),
            // Mid-handshake: there is no channel to tell the client anything on.
            SessionError::Handshake(_) => None,
            SessionError::Auth { user, .. } | SessionError::AuthMethod { user, .. } => fatal(
                "28P01",
                format!("pgbroker: password authentication failed for user \"{user}\""),
            ),
            _ => None,
        }
    }

    /// Why the broker ended a session it had accepted: the reaper or shutdown.
    fn termination(&self) -> Option<ClientMessage> {
        match self {
            SessionError::ClientIdle { after } => fatal(
                "57P05",
                format!("pgbroker: terminating connection: client idle for {after:?} (reaper.client_idle_timeout)"),
            ),
            SessionError::IdleInTransaction { after } => fatal(
                "25P03",
                format!(
                    "pgbroker: terminating connection: idle in transaction for {after:?} \
                     (reaper.idle_in_transaction_timeout); the transaction was rolled back"
                ),
            ),
            SessionError::Shutdown => fatal(
                "57P01",
                "pgbroker: terminating connection: shutting down".into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
