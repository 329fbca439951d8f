//! Getting a server connection for a client: the borrow (bounded by pool.borrow_timeout,
//! cancel-safe), the statement-level error when it fails, and replaying the client's
//! settings on the connection it gets.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{Hold, Link, Session};
use crate::backend::ServerError;
use crate::config::PoolMode;
use crate::error::{ClientMessage, SessionError};
use crate::limits::{CapError, CapKind, Limits, Permits};
use crate::pool::{BorrowError, Borrowed, Pool};
use crate::protocol::write;
use crate::reaper::Phase;
use crate::session::params::{ClientParams, Replay};
use crate::session::startup::ClientIo;

impl Session<'_> {
    /// Checks out a server connection and brings it to the client's settings. On a failed
    /// borrow the client gets an ERROR and its session stays usable (false is returned).
    /// `len`: the size of the frame that asked for the server (at the front of the read
    /// buffer).
    pub(super) async fn borrow(&mut self, tag: u8, len: usize) -> Result<bool, SessionError> {
        // Shutting down: no new transaction starts; the client is told why it is let go.
        if self.shared.shutdown.is_cancelled() {
            return Err(SessionError::Shutdown);
        }
        // Waiting for a slot is not idleness, for the reaper.
        self.reg.watch.set_phase(Phase::Busy);
        let timeout = self.shared.config.pool.borrow_timeout;
        let deadline = Instant::now() + timeout;
        // Caps first (function, then account), then the pool, all within one borrow
        // timeout. The waits are cancel-safe: at the end of the grace period a waiter
        // leaves every queue it is in.
        let asked = Instant::now();
        let Some(mut permits) = self.caps(tag, len, deadline, asked).await? else {
            return Ok(false);
        };
        let Some(conn) = self.checkout(tag, len, deadline, asked).await? else {
            return Ok(false);
        };
        self.record_wait(asked);
        permits.borrowed();
        let mut conn = self.apply_params(conn).await?;
        self.validated = true;
        conn.queue_prelude(&mut self.to_server);
        self.key.serve(Some(conn.cancel_target()));
        let hold = match self.shared.config.pool.mode {
            PoolMode::Transaction => Hold::Transaction,
            PoolMode::Session => Hold::Session,
        };
        self.link = Link::Held(conn, hold);
        self.permits = Some(permits);
        Ok(true)
    }

    /// Waits for the function's and the account's cap slots until `deadline`; on a refusal
    /// the statement fails (None) and the session goes on. Cancel-safe: a dropped wait
    /// leaves the queues.
    async fn caps(
        &mut self,
        tag: u8,
        len: usize,
        deadline: Instant,
        asked: Instant,
    ) -> Result<Option<Permits>, SessionError> {
        let acquire = Limits::acquire(&self.slot, deadline);
        let permits = watched(acquire, &self.shared.abort, self.io, len).await?;
        let e = match permits {
            Ok(permits) => return Ok(Some(permits)),
            Err(e) => e,
        };
        let cap = match e {
            CapError::Queue { .. } => "function queue",
            CapError::AccountBusy { .. } => "account",
            _ => "function",
        };
        // A full queue refuses at once: there was no wait to record.
        if !matches!(e, CapError::Queue { .. }) {
            self.record_wait(asked);
        }
        self.refused(cap, &e);
        self.fail_statement(tag, &e.client_message());
        Ok(None)
    }

    /// Waits for a server connection from the pool until `deadline`; on a failure the
    /// statement fails (None) and the session goes on. Cancel-safe.
    async fn checkout(
        &mut self,
        tag: u8,
        len: usize,
        deadline: Instant,
        asked: Instant,
    ) -> Result<Option<Borrowed>, SessionError> {
        let get = self
            .pool
            .get_within(deadline.saturating_duration_since(Instant::now()));
        let got = watched(get, &self.shared.abort, self.io, len).await?;
        let e = match got {
            Ok(conn) => return Ok(Some(conn)),
            Err(BorrowError::Closed) => return Err(SessionError::Shutdown),
            Err(e) => e,
        };
        self.record_wait(asked);
        if let BorrowError::PoolFull { .. } = e {
            self.slot.function.reject(CapKind::Pool);
            self.refused("pool", &e);
        } else if let Some(suppressed) = self.shared.warnings.borrows.allow() {
            tracing::warn!(error = %e, suppressed, "no server connection for a transaction");
        }
        self.fail_statement(tag, &e.client_message(false));
        Ok(None)
    }

    /// Records a borrow's wait (granted or timed out) in its function's histogram.
    fn record_wait(&self, asked: Instant) {
        let wait = asked.elapsed().as_secs_f64();
        self.slot.function.metrics.borrow_wait.record(wait);
    }

    /// Logs a transaction a cap refused (the count is kept by the counting service).
    fn refused(&self, cap: &'static str, error: &dyn std::fmt::Display) {
        let Some(suppressed) = self.shared.warnings.caps.allow() else {
            return;
        };
        tracing::warn!(
            account = %self.slot.account.name,
            function = %self.slot.function.name,
            cap,
            %error,
            suppressed,
            "cap reached: transaction refused"
        );
    }

    /// Reports a statement-level error the way Postgres would: at once, then ReadyForQuery
    /// for a simple Query (or a lone Sync), or after skipping to the next Sync otherwise.
    fn fail_statement(&mut self, tag: u8, message: &ClientMessage) {
        self.shared.metrics.error(message.code());
        message.write(&mut self.io.wbuf);
        match tag {
            b'Q' | b'F' | b'S' => write::ready_for_query(&mut self.io.wbuf, b'I'),
            _ => self.skipping = true,
        }
    }

    /// Replays the client's settings on a server connection that differs.
    async fn apply_params(&mut self, mut conn: Borrowed) -> Result<Borrowed, SessionError> {
        let Some(Replay { sql, reported_only }) = self.params.sync_sql(&conn) else {
            return Ok(conn);
        };
        if self.validated && reported_only && !ClientParams::needs_utf8_first(&sql, &conn) {
            // Reported values a server accepted before: sent in front of the client's
            // messages, their replies swallowed, no round trip.
            conn.queue_statement(&sql, &mut self.to_server);
            return Ok(conn);
        }
        // As long as a fresh login may take: a backend that does not answer a SET is broken.
        let bound = self.shared.config.backend.connect_timeout;
        let run = async {
            if ClientParams::needs_utf8_first(&sql, &conn) {
                conn.run("SET client_encoding = 'UTF8'", "session parameters")
                    .await?;
            }
            conn.run(&sql, "session parameters").await
        };
        match tokio::time::timeout(bound, run).await {
            Ok(Ok(())) => {}
            Ok(Err(ServerError::Statement { code, message, .. })) => {
                // Some settings may have taken: the connection is at rest but its extras unknown.
                conn.forget_extras();
                return Err(SessionError::Parameter { code, message });
            }
            Ok(Err(e)) => {
                Pool::discard(conn);
                return Err(e.into());
            }
            Err(_) => {
                Pool::discard(conn);
                return Err(ServerError::Timeout(bound).into());
            }
        }
        for (name, value) in self.params.adopt(&mut conn) {
            write::parameter_status(&mut self.io.wbuf, &name, &value);
        }
        Ok(conn)
    }
}

/// Waits for `wait` unless the grace period ends (Shutdown) or the client vanishes first.
/// Cancel-safe when `wait` is: the waits are dropped, leaving every queue they were in.
async fn watched<T>(
    wait: impl std::future::Future<Output = T>,
    abort: &CancellationToken,
    io: &mut ClientIo,
    len: usize,
) -> Result<T, SessionError> {
    tokio::select! {
        got = wait => Ok(got),
        () = abort.cancelled() => Err(SessionError::Shutdown),
        gone = client_gone(io, len) => Err(gone.into()),
    }
}

/// Completes when the client's connection closes without a Terminate, so a waiter whose
/// client vanished leaves the queues at once instead of taking a server connection for
/// nobody. A client that said Terminate after its statements still has them run. What the
/// client sends meanwhile is kept (up to a bound) for after the wait. Cancel-safe.
async fn client_gone(io: &mut ClientIo, current: usize) -> std::io::Error {
    use tokio::io::AsyncReadExt;
    while io.rbuf.len() < current.saturating_add(WAITING_READ_LIMIT) {
        match io.stream.read_buf(&mut io.rbuf).await {
            Ok(0) if !said_terminate(&io.rbuf) => return std::io::ErrorKind::UnexpectedEof.into(),
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    std::future::pending().await
}

/// Whether the whole frames at the front of `buf` include a Terminate.
fn said_terminate(mut buf: &[u8]) -> bool {
    while let Ok(Some(header)) = crate::protocol::Header::parse(buf) {
        if header.tag == b'X' {
            return true;
        }
        match buf.get(header.frame_len()..) {
            Some(rest) => buf = rest,
            None => return false,
        }
    }
    false
}

/// How much a waiting client may send beyond the message it waits with before the broker
/// stops reading it.
const WAITING_READ_LIMIT: usize = 1024 * 1024;
