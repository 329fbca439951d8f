//! One logged-in server connection (login is in `login.rs`): its socket and read buffer,
//! its protocol position, the parameters Postgres reports, its cancel key, forwarding of
//! its output, and the statements the broker runs on it itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::login::ServerStream;
use super::messages::{statement_error, Heard};
use super::pipeline::{Entry, Pipeline, Reply, Route, Undo};
use super::state::Position;
use super::statements::{ClientStatements, ServerStatements};
use super::ServerError;
use crate::cancel::CancelTarget;
use crate::protocol::frame::{cstr, sqlstate, whole_frame, Passthrough, Step};
use crate::protocol::write;
use crate::protocol::FrameError;
use crate::tls::Stream;

/// Parameter name → value.
pub type Params = BTreeMap<String, String>;

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: ServerStream,
    /// A TLS session may still hold bytes written to it: the forwarding loop flushes it.
    pub unflushed: bool,
    /// Bytes read from the server and not yet handled.
    pub rbuf: BytesMut,
    /// Protocol position, kept by whoever forwards through this connection.
    pub position: Position,
    /// Parameters the server reported (ParameterStatus), kept current.
    pub params: Params,
    /// Unreported settings the broker SET on this connection for its current client.
    pub extras: Params,
    /// A client ran RESET or DISCARD: `extras` says which names may be set, not their values.
    extras_stale: bool,
    pub(super) scan: Passthrough,
    /// The replies owed, in order, and who reads each.
    pub(super) pipeline: Pipeline,
    /// The statements prepared here under the broker's names.
    pub(super) prepared: ServerStatements,
    /// The first error among the broker's own statements in front of a client's.
    prelude_error: Option<ServerError>,
    /// A client may have left an unnamed prepared statement here (Parse with no name since
    /// the last simple Query); the next client must not be able to Bind it.
    unnamed: bool,
    pub(super) cancel: CancelTarget,
    created: Instant,
    /// When the server last sent something: at rest in the pool, when it went idle.
    last_heard: Instant,
}

impl ServerConn {
    /// A connection whose login has not run yet.
    pub(super) fn new(stream: ServerStream, addr: SocketAddr) -> ServerConn {
        ServerConn {
            stream,
            unflushed: false,
            rbuf: BytesMut::with_capacity(8192),
            position: Position::default(),
            params: Params::new(),
            extras: Params::new(),
            scan: Passthrough::default(),
            pipeline: Pipeline::default(),
            prepared: ServerStatements::default(),
            prelude_error: None,
            unnamed: false,
            extras_stale: false,
            cancel: CancelTarget {
                addr,
                pid: 0,
                secret: 0,
            },
            created: Instant::now(),
            last_heard: Instant::now(),
        }
    }

    /// Records the server's BackendKeyData.
    pub(super) fn set_cancel_key(&mut self, pid: i32, secret: i32) {
        self.cancel.pid = pid;
        self.cancel.secret = secret;
    }

    /// Reads more bytes from the server into `rbuf`. Cancel-safe.
    pub async fn fill(&mut self) -> Result<(), ServerError> {
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(ServerError::Closed),
            Ok(_) => {
                self.last_heard = Instant::now();
                Ok(())
            }
            Err(e) => Err(ServerError::Io(e)),
        }
    }

    /// Writes all of `bytes`. Not cancel-safe.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(ServerError::Io)?;
        // A TLS session may hold the last record back until flushed.
        self.stream.flush().await.map_err(ServerError::Io)
    }

    /// Where a CancelRequest for this connection goes.
    pub fn cancel_target(&self) -> CancelTarget {
        self.cancel
    }

    /// How long the server has sent nothing.
    pub fn idle_for(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.last_heard)
    }

    /// When the connection was logged in.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Idle in the protocol with nothing unread: may serve another client.
    pub fn at_rest(&self) -> bool {
        self.position.is_idle()
            && self.pipeline.is_empty()
            && self.rbuf.is_empty()
            && !self.scan.mid_frame()
    }

    /// Cheap synchronous health check for the pool's recycle: at rest, and the socket not
    /// closed by the server. (A broken connection never returns: it is discarded.)
    pub fn is_reusable(&self) -> bool {
        if !self.at_rest() {
            return false;
        }
        self.stream.is_quiet()
    }

    /// Runs `sql` (simple protocol) and swallows its results up to ReadyForQuery, keeping
    /// `params` current; an ErrorResponse becomes `ServerError::Statement`. Not cancel-safe.
    pub async fn run(&mut self, sql: &str, what: &'static str) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        write::query(&mut out, sql);
        self.send(&out).await?;
        self.position.sent(b'Q');
        self.pipeline
            .push(Entry::broker(Reply::Query, Undo::Nothing));
        self.drain(what).await
    }

    /// Reads and discards server messages until the position is quiet, keeping `params`
    /// current; the first ErrorResponse is returned once the server is at rest.
    pub async fn drain(&mut self, what: &'static str) -> Result<(), ServerError> {
        // Whatever is owed is read and dropped here; what the server skipped is undone on
        // the broker's side (the client's names no longer matter).
        self.prelude_error = None;
        let mut failure = None;
        let (mut gone, mut sink) = (ClientStatements::default(), BytesMut::new());
        while !self.position.is_quiet() {
            let Some((header, body)) = whole_frame(&self.rbuf)? else {
                self.fill().await?;
                continue;
            };
            let len = header.frame_len();
            observe(&mut self.position, &mut self.params, header.tag, body);
            if header.tag == b'E' && failure.is_none() {
                failure = Some(statement_error(what, body));
            }
            let skipped =
                self.pipeline
                    .advance(header.tag, body, &mut gone, &mut self.prepared, &mut sink);
            self.position.skipped(skipped);
            self.rbuf.advance(len);
        }
        if !self.pipeline.is_empty() {
            // Replies the broker expected never came: what is prepared here is unknown.
            return Err(ServerError::Closed);
        }
        failure.map_or(Ok(()), Err)
    }

    /// Moves what the server sent into `out` (for the client), keeping position and
    /// parameters, dropping the replies to the broker's own messages, answering the Parses
    /// the server was spared, and keeping `client`'s statement names in step with what the
    /// server carried out; `heard` hears each ParameterStatus, ErrorResponse and
    /// ReadyForQuery passed on, and must write the error of each [`Heard::Refused`] Parse
    /// into the bytes it is given (in the place of the server's error, which is dropped).
    /// Large rows stream through without being buffered whole.
    pub fn forward_into(
        &mut self,
        out: &mut BytesMut,
        client: &mut ClientStatements,
        mut heard: impl FnMut(Heard<'_>),
    ) -> Result<(), FrameError> {
        self.last_heard = Instant::now();
        loop {
            let pipeline = &self.pipeline;
            let Some(step) = self.scan.next(&self.rbuf, |t| wanted(pipeline, t))? else {
                return Ok(());
            };
            let len = step.len();
            let Step::Frame(header, body, bytes) = step else {
                // Only frames the client reads pass through unread.
                out.extend_from_slice(&self.rbuf[..len]);
                self.rbuf.advance(len);
                continue;
            };
            let param = observe(&mut self.position, &mut self.params, header.tag, body);
            match self.pipeline.route(header.tag) {
                Route::Drop => {}
                Route::Broker => {
                    if self.prelude_error.is_none() {
                        self.prelude_error = Some(statement_error("session parameters", body));
                    }
                }
                Route::Refused(refusal) => heard(Heard::Refused(refusal, out)),
                Route::Client => {
                    out.extend_from_slice(bytes);
                    match (header.tag, param) {
                        (_, Some((name, value))) => heard(Heard::Param(name, value)),
                        (b'E', _) => heard(Heard::Error(sqlstate(body).unwrap_or_default())),
                        (b'Z', _) => heard(Heard::Ready {
                            status: self.position.status,
                            more: self.position.outstanding > 0,
                        }),
                        _ => {}
                    }
                }
            }
            let skipped =
                (self.pipeline).advance(header.tag, body, client, &mut self.prepared, out);
            self.position.skipped(skipped);
            self.rbuf.advance(len);
        }
    }

    /// A client ran RESET or DISCARD: the values in `extras` can no longer be trusted.
    pub fn forget_extras(&mut self) {
        self.extras_stale = true;
    }

    /// True while `extras` holds the values actually in force.
    pub fn extras_known(&self) -> bool {
        !self.extras_stale
    }

    /// Records the unreported settings now in force for the current client.
    pub fn set_extras(&mut self, extras: &Params) {
        self.extras.clone_from(extras);
        self.extras_stale = false;
    }

    /// Accounts for a whole client frame about to be sent as it is.
    pub fn sent(&mut self, tag: u8, frame: &[u8]) {
        // After an error the server skips everything up to the next Sync, and during COPY
        // IN it ignores Syncs: such messages get no reply.
        let skipped = self.pipeline.ignoring() && tag != b'S';
        let eaten = self.position.copy_in && tag == b'S';
        if skipped {
            return;
        }
        self.note_sent(tag, frame);
        if let Some(reply) = Reply::of(tag).filter(|_| !eaten) {
            self.pipeline.push(Entry::client(reply));
        }
    }

    /// Accounts for a frame about to be sent in the protocol position alone.
    pub(super) fn note_sent(&mut self, tag: u8, frame: &[u8]) {
        self.position.sent(tag);
        match tag {
            // A Parse's body starts with the statement name; an empty one is a NUL.
            b'P' => self.unnamed |= frame.get(crate::protocol::HEADER_LEN) == Some(&0),
            b'Q' => self.unnamed = false,
            _ => {}
        }
    }

    /// Queues `sql` (simple protocol) in front of a client's messages; its replies are
    /// swallowed, and an error in them is kept for [`ServerConn::take_prelude_error`].
    pub fn queue_statement(&mut self, sql: &str, out: &mut BytesMut) {
        write::query(out, sql);
        self.note_sent(b'Q', &[]);
        self.pipeline
            .push(Entry::broker(Reply::Query, Undo::Nothing));
    }

    /// The first error of the broker's own queued statements, once.
    pub fn take_prelude_error(&mut self) -> Option<ServerError> {
        self.prelude_error.take()
    }

    /// Puts what the broker must run before a new client's messages in front of them:
    /// closing an unnamed statement a previous client left. Its replies are swallowed.
    pub fn queue_prelude(&mut self, out: &mut BytesMut) {
        if !self.unnamed {
            return;
        }
        write::close(out, b'S', "");
        write::sync(out);
        self.position.sent(b'C');
        self.position.sent(b'S');
        self.pipeline
            .push(Entry::broker(Reply::Close, Undo::Nothing));
        self.pipeline
            .push(Entry::broker(Reply::Sync, Undo::Nothing));
        self.unnamed = false;
    }
}

impl Drop for ServerConn {
    /// Says goodbye (Terminate) when it can without blocking, so Postgres logs no error.
    fn drop(&mut self) {
        if let Stream::Plain(tcp) = &self.stream {
            let _ = tcp.try_write(b"X\0\0\0\x04");
        }
    }
}

/// Whether the scan reads the whole server message with `tag`: what the pipeline or the
/// position needs, and the messages that may come at any time (NotificationResponse,
/// NoticeResponse), so that a reply the broker gives itself never lands inside one.
fn wanted(pipeline: &Pipeline, tag: u8) -> bool {
    pipeline.wants(tag) || Position::watches(tag) || matches!(tag, b'A' | b'N')
}

/// Position and parameter bookkeeping for one whole server frame; returns a reported
/// parameter change.
fn observe<'a>(
    position: &mut Position,
    params: &mut Params,
    tag: u8,
    body: &'a [u8],
) -> Option<(&'a str, &'a str)> {
    position.received(tag, body);
    if tag != b'S' {
        return None;
    }
    let (name, rest) = cstr(body).ok()?;
    let (value, _) = cstr(rest).ok()?;
    params.insert(name.to_owned(), value.to_owned());
    Some((name, value))
}
