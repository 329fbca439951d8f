//! One logged-in server connection (login is in `login.rs`): its socket and read buffer,
//! its protocol position, the parameters Postgres reports, its cancel key, forwarding of
//! its output, and the statements the broker runs on it itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::messages::{statement_error, Heard};
use super::state::Position;
use crate::error::{FrameError, ServerError};
use crate::protocol::frame::{cstr, sqlstate, whole_frame, Passthrough, Step};
use crate::protocol::write;

/// Parameter name → value.
pub type Params = BTreeMap<String, String>;

/// Where to send a CancelRequest for the query running on a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    /// The server's address.
    pub addr: SocketAddr,
    /// Backend process id.
    pub pid: i32,
    /// Backend secret key.
    pub secret: i32,
}

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: TcpStream,
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
    scan: Passthrough,
    /// ReadyForQuery messages still owed to statements the broker put in front of a
    /// client's messages; everything up to them is the broker's, not the client's.
    prelude: u32,
    /// The first error among the broker's own statements in front of a client's.
    prelude_error: Option<ServerError>,
    /// A client may have left an unnamed prepared statement here (Parse with no name since
    /// the last simple Query); the next client must not be able to Bind it.
    unnamed: bool,
    cancel: CancelTarget,
    created: Instant,
    /// When the server last sent something: at rest in the pool, when it went idle.
    last_heard: Instant,
}

impl ServerConn {
    /// A connection whose login has not run yet.
    pub(super) fn new(stream: TcpStream, addr: SocketAddr) -> ServerConn {
        ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            position: Position::default(),
            params: Params::new(),
            extras: Params::new(),
            scan: Passthrough::default(),
            prelude: 0,
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
        self.stream.write_all(bytes).await.map_err(ServerError::Io)
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
            && self.prelude == 0
            && self.rbuf.is_empty()
            && !self.scan.mid_frame()
    }

    /// Cheap synchronous health check for the pool's recycle: at rest, and the socket not
    /// closed by the server. (A broken connection never returns: it is discarded.)
    pub fn is_reusable(&self) -> bool {
        if !self.at_rest() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Runs `sql` (simple protocol) and swallows its results up to ReadyForQuery, keeping
    /// `params` current; an ErrorResponse becomes `ServerError::Statement`. Not cancel-safe.
    pub async fn run(&mut self, sql: &str, what: &'static str) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        write::query(&mut out, sql);
        self.send(&out).await?;
        self.position.sent(b'Q');
        self.drain(what).await
    }

    /// Reads and discards server messages until the position is quiet, keeping `params`
    /// current; the first ErrorResponse is returned once the server is at rest.
    pub async fn drain(&mut self, what: &'static str) -> Result<(), ServerError> {
        // Whatever the broker queued in front is read and dropped here with the rest.
        self.prelude = 0;
        self.prelude_error = None;
        let mut failure = None;
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
            self.rbuf.advance(len);
        }
        failure.map_or(Ok(()), Err)
    }

    /// Moves what the server sent into `out` (for the client), keeping position and
    /// parameters; `heard` hears each ParameterStatus, ErrorResponse and ReadyForQuery
    /// passed on. Large rows stream through without being buffered whole.
    pub fn forward_into(
        &mut self,
        out: &mut BytesMut,
        mut heard: impl FnMut(Heard<'_>),
    ) -> Result<(), FrameError> {
        self.last_heard = Instant::now();
        loop {
            let ours = self.prelude > 0;
            let Some(step) = self
                .scan
                .next(&self.rbuf, |t| ours || Position::watches(t))?
            else {
                return Ok(());
            };
            if let Step::Frame(header, body, _) = &step {
                let param = observe(&mut self.position, &mut self.params, header.tag, body);
                match (header.tag, param) {
                    (b'Z', _) if ours => self.prelude -= 1,
                    (b'E', _) if ours && self.prelude_error.is_none() => {
                        self.prelude_error = Some(statement_error("session parameters", body));
                    }
                    _ if ours => {}
                    (_, Some((name, value))) => heard(Heard::Param(name, value)),
                    (b'E', _) => heard(Heard::Error(sqlstate(body).unwrap_or_default())),
                    (b'Z', _) => heard(Heard::Ready {
                        status: self.position.status,
                        more: self.position.outstanding > 0,
                    }),
                    _ => {}
                }
            }
            let len = step.len();
            if !ours {
                out.extend_from_slice(&self.rbuf[..len]);
            }
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

    /// Accounts for a whole client frame about to be sent.
    pub fn sent(&mut self, tag: u8, frame: &[u8]) {
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
        self.sent(b'Q', &[]);
        self.prelude += 1;
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
        self.prelude += 1;
        self.unnamed = false;
    }

    /// Skips the rest of a frame that was being passed through to a client that left.
    async fn skip_partial_frame(&mut self) -> Result<(), ServerError> {
        while self.scan.mid_frame() {
            if self.rbuf.is_empty() {
                self.fill().await?;
            }
            let n = self.scan.skip(self.rbuf.len());
            self.rbuf.advance(n);
        }
        Ok(())
    }

    /// Brings a connection whose client left back to rest: sends what was still queued
    /// for it (`pending`, whole frames), cancels a running query, ends COPY and open
    /// pipelines, rolls back, and with `discard_all` resets the session. An error means the
    /// connection must be closed. Not cancel-safe (the caller bounds it with a timeout and
    /// closes the connection when it fires).
    pub async fn settle(&mut self, pending: &[u8], ending: Ending) -> Result<(), ServerError> {
        self.skip_partial_frame().await?;
        self.send(pending).await?;
        if !self.position.is_quiet() {
            self.stop_in_flight(ending.cancel).await?;
        }
        if self.position.status != b'I' {
            self.run("ROLLBACK", "rollback").await?;
        }
        if ending.discard_all {
            self.run("DISCARD ALL", "session reset").await?;
            self.set_extras(&Params::new());
        }
        Ok(())
    }

    /// Ends whatever the client left in flight without committing any of it: aborts a COPY
    /// with CopyFail; turns an extended batch that never got its Sync into an error (so the
    /// Sync the broker sends rolls its implicit transaction back instead of committing it);
    /// with `cancel`, cancels what is running first.
    async fn stop_in_flight(&mut self, cancel: bool) -> Result<(), ServerError> {
        let cancelled = cancel && (self.position.outstanding > 0 || self.position.unsynced);
        if cancelled {
            // Best effort: if it is not delivered, the drain below waits for the query.
            let _ = crate::cancel::send_cancel(self.cancel).await;
        }
        let mut out = BytesMut::new();
        if self.position.copy_in {
            write::copy_fail(&mut out, "pgbroker: client disconnected");
            self.position.sent(b'f');
        } else if self.position.unsynced {
            write::parse(&mut out, "", ABORT_BATCH);
            self.sent(b'P', &out);
        }
        if self.position.unsynced || !out.is_empty() {
            write::sync(&mut out);
            self.position.sent(b'S');
        }
        self.send(&out).await?;
        match self.drain("abandoned query").await {
            // The cancel was consumed by the query it was meant for.
            Err(ServerError::Statement { code, .. }) if code == "57014" => Ok(()),
            // A cancel that found nothing to cancel may still hit the next query: close.
            Ok(()) | Err(ServerError::Statement { .. }) if cancelled => Err(ServerError::Closed),
            Ok(()) | Err(ServerError::Statement { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A statement that fails to parse: sent before the broker's Sync so that an extended batch
/// the client left unfinished ends in an error, never in a commit.
const ABORT_BATCH: &str = "pgbroker: client left before Sync";

/// How a client's session ended, for [`ServerConn::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Cancel what is running (the client vanished) rather than let it finish (the client
    /// said Terminate after it).
    pub cancel: bool,
    /// Reset the session with DISCARD ALL (session mode, pinned sessions).
    pub discard_all: bool,
}

impl Drop for ServerConn {
    /// Says goodbye (Terminate) when it can without blocking, so Postgres logs no error.
    fn drop(&mut self) {
        let _ = self.stream.try_write(b"X\0\0\0\x04");
    }
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
