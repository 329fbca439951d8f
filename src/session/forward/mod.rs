//! The forwarding loop of one greeted client. Client and server bytes are pumped both ways
//! at once (a full-duplex `select!` over cancel-safe reads and writes), so neither side can
//! deadlock the other with a large pipeline or COPY. A server connection is borrowed at the
//! first message of a transaction and given back at ReadyForQuery 'I' unless the session
//! holds it (session mode, or pinned by session state).

use bytes::{Buf, BytesMut};

use super::params::ClientParams;
use super::startup::ClientIo;
use super::{Greeted, Shared};
use crate::backend::{ClientStatements, Heard, ServerError};
use crate::cancel::CancelKey;
use crate::error::SessionError;
use crate::limits::{ClientSlot, Permits};
use crate::metrics::Reaped;
use crate::pool::{Borrowed, Pool};
use crate::protocol::query::PinReason;
use crate::protocol::write;
use crate::protocol::FrameError;
use crate::protocol::Header;
use crate::reaper::{Phase, Reason, Registration};

mod borrow;
mod io;
mod release;
mod send;
mod tally;

use io::{client_read, send, server_read, server_send};
pub use tally::Tally;

/// Past this many bytes queued for one side, the loop stops reading from the other.
const HIGH_WATER: usize = 256 * 1024;

/// Largest step the client read buffer grows by while a large message arrives.
const READ_CHUNK: usize = 1024 * 1024;

/// Message types a client may send once started.
const FRONTEND_TAGS: &[u8] = b"BCdcfDEHFPQS";

/// Why a server connection is held by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// For the current transaction only.
    Transaction,
    /// For the session (pool.mode = "session").
    Session,
    /// For the session, because it left state on the server.
    Pinned(PinReason),
}

/// The client's link to a server connection. One per session, never in a collection, so
/// the connection stays inline rather than behind another allocation per borrow.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Link {
    Idle,
    Held(Borrowed, Hold),
}

/// How a client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// It sent Terminate.
    Terminate,
    /// Its connection closed without one.
    Vanished,
}

enum Event {
    ClientRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    Shutdown,
    /// The reaper found the client due; the session checks again before acting.
    Rung,
}

/// One greeted client and its forwarding state.
pub struct Session<'a> {
    io: &'a mut ClientIo,
    shared: &'a Shared,
    pool: Pool,
    params: ClientParams,
    key: CancelKey,
    link: Link,
    /// Whole client frames queued for the server.
    to_server: BytesMut,
    /// After a failed borrow in the extended protocol: drop messages up to Sync.
    skipping: bool,
    /// The session's place in the reaper's sweep.
    reg: Registration,
    /// Its place under its account's and function's client caps.
    slot: ClientSlot,
    /// The concurrency slots held with the server connection; dropped with it.
    permits: Option<Permits>,
    /// A server accepted this client's settings once: later replays go ahead of its
    /// messages without waiting for a round trip.
    validated: bool,
    /// Its transactions, for metrics and the closing log line.
    tally: Tally,
    /// Its named prepared statements (transaction mode).
    statements: ClientStatements,
    /// A whole frame waits in the read buffer for the server's answer to an earlier batch.
    waiting: bool,
}

impl<'a> Session<'a> {
    /// Starts the loop for a greeted client.
    pub fn new(io: &'a mut ClientIo, shared: &'a Shared, greeted: Greeted) -> Self {
        Session {
            io,
            shared,
            pool: greeted.pool,
            params: greeted.params,
            key: greeted.key,
            link: Link::Idle,
            to_server: BytesMut::new(),
            skipping: false,
            validated: false,
            reg: shared.clients.register(),
            slot: greeted.slot,
            permits: None,
            tally: Tally::default(),
            statements: ClientStatements::default(),
            waiting: false,
        }
    }

    /// Serves the client until it leaves, then releases its server connection. Returns
    /// how it left and its counts.
    pub async fn run(mut self) -> (Result<Goodbye, SessionError>, Tally) {
        let result = self.pump().await;
        // After Terminate, what the client sent before it runs to its end, as in Postgres;
        // a client that vanished (or failed) has its statement cancelled.
        let said_goodbye = matches!(result, Ok(Goodbye::Terminate));
        Box::pin(self.finish(!said_goodbye)).await;
        (result, self.tally)
    }

    async fn pump(&mut self) -> Result<Goodbye, SessionError> {
        loop {
            if !self.client_frames().await? {
                return Ok(Goodbye::Terminate);
            }
            self.reg.watch.set_phase(self.phase());
            match self.next_event().await {
                Event::ClientRead(read) => {
                    if read? == 0 {
                        return Ok(Goodbye::Vanished);
                    }
                    self.reg.watch.heard();
                }
                Event::ClientWrote(wrote) => {
                    // A client reading its results is not silent.
                    // (Nothing written: a TLS session's flush.)
                    let wrote = wrote?;
                    self.io.wbuf.advance(wrote);
                    self.io.unflushed = wrote > 0 && self.io.stream.is_tls();
                    self.reg.watch.heard();
                }
                Event::ServerRead(read) => {
                    if read.map_err(ServerError::Io)? == 0 {
                        return Err(ServerError::Closed.into());
                    }
                    self.server_bytes()?;
                }
                Event::ServerWrote(wrote) => {
                    let wrote = wrote.map_err(ServerError::Io)?;
                    self.to_server.advance(wrote);
                    if let Link::Held(conn, _) = &mut self.link {
                        conn.unflushed = wrote > 0 && conn.stream.is_tls();
                    }
                    self.release_at_rest();
                }
                Event::Shutdown => return Err(SessionError::Shutdown),
                Event::Rung => {
                    let limits = &self.shared.config.reaper;
                    if let Some(reason) = self.reg.watch.due(std::time::Instant::now(), limits) {
                        return Err(self.reaped(reason));
                    }
                    // Idle for a sweep: what a frozen client holds is its socket and its
                    // state, no buffers.
                    if matches!(self.link, Link::Idle) && self.to_server.is_empty() {
                        self.io.shed();
                        self.to_server = BytesMut::new();
                    }
                }
            }
        }
    }

    /// Counts and logs a reap; the error ends the session.
    fn reaped(&self, reason: Reason) -> SessionError {
        let (kind, error) = match reason {
            Reason::ClientIdle(after) => (Reaped::ClientIdle, SessionError::ClientIdle { after }),
            Reason::IdleInTransaction(after) => (
                Reaped::IdleInTransaction,
                SessionError::IdleInTransaction { after },
            ),
        };
        self.shared.metrics.reaped(kind, 1);
        if let Some(suppressed) = self.shared.warnings.reaps.allow() {
            tracing::warn!(
                account = %self.slot.account.name,
                function = %self.slot.function.name,
                reason = kind.as_str(),
                suppressed,
                "reaped a silent client"
            );
        }
        error
    }

    /// Where the session stands, for the reaper.
    /// Busy while the server works for the client; when the server waits on the client
    /// (COPY IN, results the client does not read) the client's silence counts as idleness
    /// in a transaction. A batch without its Sync stays Busy: after a Flush the server may
    /// still be running an Execute for it.
    fn phase(&self) -> Phase {
        let Link::Held(conn, _) = &self.link else {
            return Phase::Idle;
        };
        let p = &conn.position;
        if !self.to_server.is_empty() {
            Phase::Busy
        } else if p.copy_in || self.io.wbuf.len() >= HIGH_WATER {
            Phase::InTransaction
        } else if p.outstanding > 0 || p.unsynced {
            Phase::Busy
        } else if p.status != b'I' {
            Phase::InTransaction
        } else {
            Phase::Idle
        }
    }

    /// Waits for the next thing to do. Every branch is cancel-safe (`read_buf`, `write`).
    async fn next_event(&mut self) -> Event {
        let Session {
            io,
            shared,
            link,
            to_server,
            reg,
            ..
        } = self;
        let (mut client_r, mut client_w) = io.stream.split();
        let (server, at_rest, server_unflushed) = match link {
            Link::Held(conn, _) => {
                let (at_rest, unflushed) = (conn.at_rest(), conn.unflushed);
                (Some(&mut **conn), at_rest, unflushed)
            }
            Link::Idle => (None, true, false),
        };
        let (mut server_r, mut server_w) = match server {
            Some(c) => {
                let (r, w) = c.stream.split();
                (Some((r, &mut c.rbuf)), Some(w))
            }
            None => (None, None),
        };
        // A client whose frames wait may send on only up to a bound.
        let read_client =
            to_server.len() < HIGH_WATER && !(self.waiting && io.rbuf.len() >= HIGH_WATER);
        let read_server = io.wbuf.len() < HIGH_WATER;
        tokio::select! {
            biased;
            _ = shared.abort.cancelled() => Event::Shutdown,
            _ = shared.shutdown.cancelled(), if at_rest && io.wbuf.is_empty() => Event::Shutdown,
            wrote = send(&mut client_w, &io.wbuf), if !io.wbuf.is_empty() || io.unflushed => Event::ClientWrote(wrote),
            wrote = server_send(&mut server_w, to_server), if !to_server.is_empty() || server_unflushed => Event::ServerWrote(wrote),
            read = server_read(&mut server_r), if read_server => Event::ServerRead(read),
            read = client_read(&mut client_r, &mut io.rbuf), if read_client => Event::ClientRead(read),
            () = reg.watch.rung() => Event::Rung,
        }
    }

    /// Handles the whole client frames buffered so far; false when the client said Terminate.
    async fn client_frames(&mut self) -> Result<bool, SessionError> {
        self.waiting = false;
        while self.to_server.len() < HIGH_WATER {
            let Some(header) = Header::parse(&self.io.rbuf)? else {
                break;
            };
            match header.tag {
                b'X' => return Ok(false),
                tag if !FRONTEND_TAGS.contains(&tag) => {
                    return Err(FrameError::UnexpectedTag { tag }.into())
                }
                _ => {}
            }
            header.check_size(self.shared.config.listen.max_message_size)?;
            let len = header.frame_len();
            if self.io.rbuf.len() < len {
                // Grow as the bytes come, not on the word of a header.
                self.io
                    .rbuf
                    .reserve((len - self.io.rbuf.len()).min(READ_CHUNK));
                break;
            }
            if self.must_wait(header.tag) {
                self.waiting = true;
                break;
            }
            self.client_frame(header.tag, len).await?;
        }
        Ok(true)
    }

    /// Forwards one whole client frame (`len` bytes at the front of the read buffer),
    /// borrowing a server connection first when none is held.
    async fn client_frame(&mut self, tag: u8, len: usize) -> Result<(), SessionError> {
        let idle = matches!(self.link, Link::Idle);
        // CopyData/Done/Fail outside COPY are ignored, as Postgres ignores them; so is a
        // Flush with nothing to flush.
        if self.skipping || (idle && matches!(tag, b'd' | b'c' | b'f' | b'H')) {
            self.skip_frame(tag, len);
            return Ok(());
        }
        // A Sync with no transaction open needs no server: answer it here.
        if idle && tag == b'S' {
            self.io.rbuf.advance(len);
            write::ready_for_query(&mut self.io.wbuf, b'I');
            return Ok(());
        }
        if idle && !Box::pin(self.borrow(tag, len)).await? {
            self.skip_frame(tag, len);
            return Ok(());
        }
        self.send_held(tag, len)?;
        self.tally.sent(tag, &self.slot.function.metrics);
        self.io.rbuf.advance(len);
        Ok(())
    }

    /// Drops a frame the server will never see; a Sync ends the skipping with ReadyForQuery.
    fn skip_frame(&mut self, tag: u8, len: usize) {
        self.io.rbuf.advance(len);
        if self.skipping && tag == b'S' {
            self.skipping = false;
            write::ready_for_query(&mut self.io.wbuf, b'I');
        }
    }

    /// Moves server bytes to the client and gives the server back at rest.
    fn server_bytes(&mut self) -> Result<(), SessionError> {
        let Link::Held(conn, _) = &mut self.link else {
            return Ok(());
        };
        let (params, tally) = (&mut self.params, &mut self.tally);
        let (function, metrics) = (&self.slot.function.metrics, &self.shared.metrics);
        conn.forward_into(
            &mut self.io.wbuf,
            &mut self.statements,
            |heard| match heard {
                Heard::Param(name, value) => params.reported_by_server(name, value),
                Heard::Error(code) => metrics.error(code),
                Heard::Ready { status: b'I', more } => tally.ended(function, more),
                Heard::Ready { .. } => {}
                Heard::Refused(refusal, out) => {
                    let message = refusal.client_message();
                    metrics.error(message.code());
                    message.write(out);
                }
            },
        )
        .map_err(ServerError::from)?;
        if let Some(ServerError::Statement { code, message, .. }) = conn.take_prelude_error() {
            conn.forget_extras();
            return Err(SessionError::Parameter { code, message });
        }
        self.release_at_rest();
        Ok(())
    }
}
