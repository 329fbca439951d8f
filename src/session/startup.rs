//! The start of a client session, all under `listen.startup_timeout`: the untagged packet
//! (SSLRequest answered 'S' and the session upgraded to TLS where `[listen.tls]` offers it,
//! 'N' otherwise; GSSENCRequest refused with 'N'; CancelRequest served), the StartupMessage,
//! client authentication, and the greeting.
//!
//! <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP>

use std::mem;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;
use crate::auth::{self, AuthError, ChannelBinding, ScramExchange, Secret, UserEntry};
use crate::cancel::send_cancel;
use crate::config::{AuthMethod, ListenTlsMode};
use crate::error::SessionError;
use crate::lookup::Found;
use crate::protocol::frame::whole_frame;
use crate::protocol::startup::{self, Packet, Startup};
use crate::protocol::write;
use crate::protocol::FrameError;
use crate::tls::{ClientTlsStream, Offer, Stream};

/// Longest authentication message a client may send.
pub const MAX_AUTH_MESSAGE: usize = 8192;

/// Initial size of a client's buffers; they grow when a larger message comes.
const HANDSHAKE_BUFFER: usize = 512;

/// A client's socket: plain TCP or TLS over it.
pub type ClientStream = Stream<ClientTlsStream>;

/// The client I/O used before the session proper: one read buffer, one write buffer.
#[derive(Debug)]
pub struct ClientIo {
    /// The socket.
    pub stream: ClientStream,
    /// A TLS session may still hold bytes written to it: the forwarding loop flushes it.
    pub unflushed: bool,
    /// Over TLS: the channel binding data of the broker's certificate (SCRAM-SHA-256-PLUS).
    pub end_point: Option<std::sync::Arc<[u8]>>,
    /// Bytes read and not yet handled.
    pub rbuf: BytesMut,
    /// Bytes to send.
    pub wbuf: BytesMut,
}

impl ClientIo {
    /// Wraps a freshly accepted socket.
    pub fn new(stream: TcpStream) -> ClientIo {
        ClientIo {
            stream: Stream::Plain(stream),
            unflushed: false,
            end_point: None,
            // Small: the handshake's messages are, and a client that then stays silent (a
            // frozen container) should not have made the broker hold kilobytes for it.
            rbuf: BytesMut::with_capacity(HANDSHAKE_BUFFER),
            wbuf: BytesMut::with_capacity(HANDSHAKE_BUFFER),
        }
    }

    /// Gives back the buffers while they are empty, so an idle client (a frozen container)
    /// holds no buffer memory; the next read or write allocates again.
    pub fn shed(&mut self) {
        for buf in [&mut self.rbuf, &mut self.wbuf] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
    }

    /// Reads more bytes; EOF is an error here (the client left mid-handshake). Cancel-safe.
    async fn fill(&mut self) -> Result<(), SessionError> {
        self.rbuf.reserve(HANDSHAKE_BUFFER);
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(SessionError::ClientIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            )),
            _ => Ok(()),
        }
    }

    /// Writes everything buffered. Not cancel-safe.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.stream.flush().await
    }

    /// Reads one untagged startup-phase packet.
    async fn read_packet(&mut self) -> Result<Packet, SessionError> {
        loop {
            if let Some(len) = startup::packet_len(&self.rbuf)? {
                if self.rbuf.len() >= len {
                    let packet = self.rbuf.split_to(len);
                    return Ok(startup::parse(&packet)?);
                }
            }
            self.fill().await?;
        }
    }

    /// Reads one tagged message of type `tag` (at most [`MAX_AUTH_MESSAGE`] bytes); returns its body.
    async fn read_message(&mut self, tag: u8) -> Result<BytesMut, SessionError> {
        loop {
            if let Some(header) = crate::protocol::Header::parse(&self.rbuf)? {
                header.check_size(MAX_AUTH_MESSAGE)?;
                if header.tag != tag {
                    return Err(FrameError::UnexpectedTag { tag: header.tag }.into());
                }
                if whole_frame(&self.rbuf)?.is_some() {
                    let mut frame = self.rbuf.split_to(header.frame_len());
                    frame.advance(crate::protocol::HEADER_LEN);
                    return Ok(frame);
                }
            }
            self.fill().await?;
        }
    }
}

/// What the handshake produced.
#[derive(Debug)]
pub enum Opening {
    /// A session to serve.
    Session(Startup),
    /// A CancelRequest was handled; close the connection.
    Cancelled,
}

/// Reads packets until a StartupMessage (answering SSL/GSS requests, upgrading to TLS where
/// it is offered) or a CancelRequest.
pub async fn open(io: &mut ClientIo, shared: &Shared) -> Result<Opening, SessionError> {
    // Each encryption request is answered once, as Postgres does.
    let (mut ssl, mut gss) = (false, false);
    loop {
        match io.read_packet().await? {
            packet @ (Packet::SslRequest | Packet::GssEncRequest) => {
                let first = if packet == Packet::SslRequest {
                    &mut ssl
                } else {
                    &mut gss
                };
                if mem::replace(first, true) {
                    return Err(FrameError::Malformed {
                        what: "repeated encryption request",
                    }
                    .into());
                }
                match shared.tls.offer() {
                    Some(offer) if packet == Packet::SslRequest => {
                        let upgraded = upgrade(io, offer).await;
                        shared.metrics.tls_handshake(false, upgraded.is_ok());
                        upgraded?;
                    }
                    _ => io.stream.write_all(b"N").await?,
                }
            }
            Packet::Cancel { pid, secret } => {
                cancel(shared, pid, secret).await;
                return Ok(Opening::Cancelled);
            }
            Packet::Startup(_)
                if shared.tls.mode() == ListenTlsMode::Require && !io.stream.is_tls() =>
            {
                return Err(SessionError::TlsRequired);
            }
            Packet::Startup(startup) => return check_version(io, startup).map(Opening::Session),
        }
    }
}

/// Answers an SSLRequest 'S' and runs the TLS handshake. Bytes the client sent after its
/// SSLRequest, before the handshake, were not protected by it: they end the session instead
/// of being read as if they were (the STARTTLS injection class).
async fn upgrade(io: &mut ClientIo, offer: Offer) -> Result<(), SessionError> {
    if !io.rbuf.is_empty() {
        return Err(FrameError::Malformed {
            what: "data after SSLRequest before the TLS handshake",
        }
        .into());
    }
    io.stream.write_all(b"S").await?;
    let Stream::Plain(tcp) = mem::replace(&mut io.stream, Stream::Upgrading) else {
        return Err(FrameError::Malformed {
            what: "repeated encryption request",
        }
        .into());
    };
    let tls = offer.acceptor.accept(tcp).await;
    io.stream = Stream::Tls(Box::new(tls.map_err(SessionError::Handshake)?));
    io.end_point = offer.end_point;
    Ok(())
}

/// Serves a CancelRequest: it reaches the server running this key's client's query now.
async fn cancel(shared: &Shared, pid: i32, secret: i32) {
    if let Some((target, in_flight)) = shared.cancels.begin(pid, secret) {
        if let Err(error) = send_cancel(target).await {
            // It may still arrive: the client's server connections stay marked
            // (closed instead of reused) for the rest of its session.
            tracing::debug!(%error, "cancel request not confirmed");
            std::mem::forget(in_flight);
        }
    }
}

/// Accepts 3.0; a newer 3.x minor gets NegotiateProtocolVersion; anything else an error.
fn check_version(io: &mut ClientIo, startup: Startup) -> Result<Startup, SessionError> {
    if startup.major != 3 {
        return Err(SessionError::UnsupportedProtocol {
            major: startup.major,
            minor: startup.minor,
        });
    }
    let unrecognized: Vec<&str> = startup
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if startup.minor > 0 || !unrecognized.is_empty() {
        write::negotiate_protocol_version(&mut io.wbuf, 0, &unrecognized);
    }
    if startup.get("user").is_none_or(str::is_empty) {
        return Err(SessionError::NoUser);
    }
    if startup
        .get("replication")
        .is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0"))
    {
        return Err(SessionError::UnsupportedParameter {
            name: "replication".into(),
        });
    }
    Ok(startup)
}

/// Authenticates `user` with the method configured (or looked up) for it, and returns it.
/// An unknown user goes through the same exchange and fails the same way as a wrong
/// password; the log, not the client, says which it was.
pub async fn authenticate(
    io: &mut ClientIo,
    shared: &Shared,
    user: &str,
) -> Result<UserEntry, SessionError> {
    let (entry, unknown) = find_user(shared, user).await;
    let method = entry.as_ref().map_or(shared.default_method, |e| e.method);
    let secret = entry.as_ref().map(|e| &e.secret);
    let result = match method {
        AuthMethod::ScramSha256 => scram(io, shared, user, secret).await,
        AuthMethod::Md5 => md5(io, user, secret).await,
        AuthMethod::Password => cleartext(io, user, secret).await,
    };
    match (result, entry) {
        (Ok(()), Some(entry)) => Ok(entry),
        (Ok(()), None) => Err(SessionError::NoUser),
        (Err(AuthStep::Io(e)), _) => Err(e),
        (Err(AuthStep::Auth(source)), _) => {
            let why = unknown.unwrap_or(match source {
                AuthError::BadPassword => "wrong password",
                _ => "authentication exchange failed",
            });
            if let Some(suppressed) = shared.warnings.logins.allow() {
                tracing::warn!(user, why, error = %source, suppressed, "login refused");
            }
            let user = user.to_owned();
            Err(SessionError::Auth { user, source })
        }
    }
}

/// The user's entry: from the config, else from the auth query; with no entry, why not.
async fn find_user(shared: &Shared, user: &str) -> (Option<UserEntry>, Option<&'static str>) {
    if let Some(entry) = shared.users.get(user) {
        return (Some(entry.clone()), None);
    }
    let Some(lookup) = &shared.lookup else {
        return (None, Some("unknown user"));
    };
    match lookup.find(user).await {
        Ok(Found::User(entry)) => (Some(entry), None),
        Ok(Found::Refused(why)) => (None, Some(why)),
        Err(error) => {
            tracing::warn!(%error, user, "auth_query: lookup failed; the login is refused");
            (None, Some("auth_query lookup failed"))
        }
    }
}

/// An auth step fails on I/O (the session error as is) or on the credentials.
enum AuthStep {
    Io(SessionError),
    Auth(AuthError),
}

impl From<SessionError> for AuthStep {
    fn from(e: SessionError) -> Self {
        AuthStep::Io(e)
    }
}

impl From<AuthError> for AuthStep {
    fn from(e: AuthError) -> Self {
        AuthStep::Auth(e)
    }
}

impl From<std::io::Error> for AuthStep {
    fn from(e: std::io::Error) -> Self {
        AuthStep::Io(e.into())
    }
}

async fn scram(
    io: &mut ClientIo,
    shared: &Shared,
    user: &str,
    secret: Option<&Secret>,
) -> Result<(), AuthStep> {
    let scram_secret = match secret {
        Some(secret) => shared.keys.scram_secret_for(user, secret).await,
        None => None,
    };
    let binding = (io.end_point.as_deref()).map_or(ChannelBinding::None, |hash| {
        ChannelBinding::EndPoint(hash.to_vec())
    });
    write::auth_sasl(&mut io.wbuf, binding.mechanisms());
    let mut exchange = ScramExchange::new(user, scram_secret, binding);
    io.flush().await?;
    let body = io.read_message(b'p').await?;
    let (mechanism, data) = auth::parse_sasl_initial_response(&body)?;
    let server_first = exchange.client_first(mechanism, data)?;
    write::auth_sasl_continue(&mut io.wbuf, &server_first);
    io.flush().await?;
    let body = io.read_message(b'p').await?;
    let server_final = exchange.client_final(&body)?;
    // SCRAM passthrough: with only the user's SCRAM secret, the pools log in to Postgres with
    // the key this proof revealed. Kept before the greeting's first borrow needs it.
    if let (Some(Secret::Scram(_)), Some(key)) = (secret, exchange.client_key()) {
        shared.pools.client_keys().remember(user, key.clone());
    }
    write::auth_sasl_final(&mut io.wbuf, &server_final);
    Ok(())
}

async fn md5(io: &mut ClientIo, user: &str, secret: Option<&Secret>) -> Result<(), AuthStep> {
    let salt: [u8; 4] = rand::random();
    write::auth_md5(&mut io.wbuf, salt);
    io.flush().await?;
    let body = io.read_message(b'p').await?;
    let response = auth::parse_password_message(&body)?;
    let secret = secret.ok_or(AuthError::BadPassword)?;
    Ok(auth::md5_verify(secret, user, salt, response)?)
}

async fn cleartext(io: &mut ClientIo, user: &str, secret: Option<&Secret>) -> Result<(), AuthStep> {
    write::auth_cleartext(&mut io.wbuf);
    io.flush().await?;
    let body = io.read_message(b'p').await?;
    let password = auth::parse_password_message(&body)?.to_vec();
    let secret = secret.cloned().ok_or(AuthError::BadPassword)?;
    let user = user.to_owned();
    // Checking against a SCRAM secret runs PBKDF2: keep it off the async workers.
    let checked =
        tokio::task::spawn_blocking(move || auth::verify_cleartext(&secret, &user, &password))
            .await;
    checked.map_err(|_| AuthError::BadPassword)??;
    Ok(())
}
