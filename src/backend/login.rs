//! Logging in a new server connection: TCP connect, StartupMessage as (user, database),
//! authentication (SCRAM-SHA-256, md5, cleartext or trust, as the server asks) via
//! postgres-protocol, or SCRAM with a client's recovered ClientKey (`sasl`) when the user's
//! config holds only a SCRAM secret, then the ParameterStatus values and BackendKeyData.
//!
//! <https://www.postgresql.org/docs/current/protocol-flow.html>, split by phase:
//! `startup`, `authenticate`, `read_info`.

mod sasl;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::ServerConn;
use super::{LoginError, ServerError};
use crate::auth::{ClientKeys, Secret};
use crate::config::BackendTlsMode;
use crate::protocol::write;
use crate::tls::{Connector, Stream};

/// The socket of a server connection: plain TCP or TLS over it.
pub type ServerStream = Stream<crate::tls::ServerTlsStream>;

/// Who logs in to Postgres, and where.
#[derive(Debug, Clone)]
pub struct LoginTarget {
    /// Backend host.
    pub host: String,
    /// Backend port.
    pub port: u16,
    /// Bound on connect + login.
    pub connect_timeout: Duration,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// The user's password as configured.
    pub secret: Secret,
    /// The ClientKeys clients' SCRAM logins recovered: how a user whose config holds only a
    /// SCRAM secret logs in (SCRAM passthrough).
    pub client_keys: Arc<ClientKeys>,
    /// application_name sent at login (empty: none), so an operator can tell the
    /// broker's own connections apart in pg_stat_activity.
    pub application_name: &'static str,
    /// TLS towards the backend.
    pub tls: Connector,
}

impl LoginTarget {
    /// "host:port", for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Asks for TLS before the startup, as libpq does, when `target.tls` says to: 'S' upgrades
/// the connection; 'N' (or an old server's error) leaves it plain where the mode allows.
/// Bytes that arrive with the 'S' were not sent through TLS: the connection is abandoned
/// rather than let them be read as the server's (the STARTTLS injection class).
async fn negotiate_tls(
    mut tcp: TcpStream,
    target: &LoginTarget,
) -> Result<ServerStream, LoginError> {
    let Some(connector) = target.tls.connector() else {
        return Ok(Stream::Plain(tcp));
    };
    let tls_error = |what| LoginError::Tls {
        addr: target.addr(),
        what,
    };
    let mut request = BytesMut::new();
    write::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(ServerError::Io)?;
    let mut answer = [0u8; 64];
    let read = tcp.read(&mut answer).await.map_err(ServerError::Io)?;
    match (read, answer[0]) {
        (1, b'S') => {}
        (0, _) => return Err(ServerError::Closed.into()),
        (_, b'S') => return Err(tls_error("bytes arrived with its reply to SSLRequest")),
        (1, b'N') if target.tls.mode() == BackendTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
        _ => return Err(tls_error("the server does not offer TLS")),
    }
    let name =
        Connector::server_name(&target.host).map_err(|_| tls_error("host is not a TLS name"))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|source| LoginError::Handshake {
            addr: target.addr(),
            source,
        })?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// Fields of an ErrorResponse the broker reads.
fn error_fields(body: &ErrorResponseBody) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    (code, message)
}

impl ServerConn {
    /// Connects and logs in, all within `target.connect_timeout`.
    pub async fn connect(target: &LoginTarget) -> Result<ServerConn, LoginError> {
        let after = target.connect_timeout;
        match tokio::time::timeout(after, Self::connect_unbounded(target)).await {
            Ok(result) => result,
            Err(_) => Err(LoginError::Timeout {
                addr: target.addr(),
                after,
            }),
        }
    }

    async fn connect_unbounded(target: &LoginTarget) -> Result<ServerConn, LoginError> {
        let connect_error = |source| LoginError::Connect {
            addr: target.addr(),
            source,
        };
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let addr = stream.peer_addr().map_err(connect_error)?;
        let stream = negotiate_tls(stream, target).await?;
        let mut conn = ServerConn::new(stream, addr);
        conn.startup(target).await?;
        conn.authenticate(target).await?;
        conn.read_info().await?;
        Ok(conn)
    }

    async fn startup(&mut self, target: &LoginTarget) -> Result<(), LoginError> {
        let mut buf = BytesMut::new();
        let mut params = vec![
            ("user", target.user.as_str()),
            ("database", target.database.as_str()),
        ];
        if !target.application_name.is_empty() {
            params.push(("application_name", target.application_name));
        }
        frontend::startup_message(params, &mut buf).map_err(ServerError::Io)?;
        self.send(&buf).await?;
        Ok(())
    }

    async fn authenticate(&mut self, target: &LoginTarget) -> Result<(), LoginError> {
        loop {
            let mut out = BytesMut::new();
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(plaintext(target)?.as_bytes(), &mut out)
                }
                Message::AuthenticationMd5Password(body) => frontend::password_message(
                    md5_response(target, body.salt())?.as_bytes(),
                    &mut out,
                ),
                Message::AuthenticationSasl(body) => {
                    self.sasl(target, &body).await?;
                    continue;
                }
                Message::ErrorResponse(body) => return Err(refused(&body)),
                _ => return Err(LoginError::Unsupported { method: "unknown" }),
            }
            .map_err(ServerError::Io)?;
            self.send(&out).await?;
        }
    }

    async fn read_info(&mut self) -> Result<(), LoginError> {
        loop {
            match self.read_message().await? {
                Message::ParameterStatus(body) => {
                    let name = body.name().map_err(ServerError::Io)?.to_owned();
                    let value = body.value().map_err(ServerError::Io)?.to_owned();
                    self.params.insert(name, value);
                }
                Message::BackendKeyData(body) => {
                    self.set_cancel_key(body.process_id(), body.secret_key())
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(refused(&body)),
                _ => {}
            }
        }
    }

    /// Reads one whole backend message, for the login only.
    async fn read_message(&mut self) -> Result<Message, ServerError> {
        loop {
            if let Some(message) = Message::parse(&mut self.rbuf)? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }
}

fn refused(body: &ErrorResponseBody) -> LoginError {
    let (code, message) = error_fields(body);
    LoginError::Refused { code, message }
}

fn plaintext(target: &LoginTarget) -> Result<&str, LoginError> {
    match &target.secret {
        Secret::Plain(password) => Ok(password),
        Secret::Md5(_) => Err(LoginError::Unsupported {
            method: "SCRAM-SHA-256 or cleartext with an md5 secret",
        }),
        Secret::Scram(_) => Err(LoginError::Unsupported {
            method: "cleartext password with a SCRAM secret",
        }),
    }
}

/// "md5" + md5(md5(password + user) + salt); an md5 secret already is the inner hash.
fn md5_response(target: &LoginTarget, salt: [u8; 4]) -> Result<String, LoginError> {
    match &target.secret {
        Secret::Plain(password) => Ok(postgres_protocol::authentication::md5_hash(
            target.user.as_bytes(),
            password.as_bytes(),
            salt,
        )),
        Secret::Md5(hash) => {
            use md5::Digest;
            let mut md5 = md5::Md5::new();
            md5.update(hash.get(3..).unwrap_or_default().as_bytes());
            md5.update(salt);
            Ok(format!("md5{}", hex(&md5.finalize())))
        }
        Secret::Scram(_) => Err(LoginError::Unsupported {
            method: "md5 with a SCRAM secret",
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
