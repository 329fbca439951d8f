//! Bringing a server connection whose client left back to rest, or deciding it must be
//! closed: the rest of a half-forwarded frame, what was still queued, a cancel, CopyFail, an
//! unfinished batch turned into an error, ROLLBACK, and DISCARD ALL where the session held it.

use bytes::{Buf, BytesMut};

use super::conn::{Params, ServerConn};
use super::pipeline::{Entry, Reply, Undo};
use super::ServerError;
use crate::protocol::{errcodes, write};

impl ServerConn {
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
            // DISCARD ALL deallocated the broker's statements too.
            self.prepared.take_all();
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
            self.note_sent(b'P', &out);
            self.pipeline
                .push(Entry::broker(Reply::Parse, Undo::Nothing));
        }
        if self.position.unsynced || !out.is_empty() {
            write::sync(&mut out);
            self.position.sent(b'S');
            self.pipeline
                .push(Entry::broker(Reply::Sync, Undo::Nothing));
        }
        self.send(&out).await?;
        match self.drain("abandoned query").await {
            // The cancel was consumed by the query it was meant for.
            Err(ServerError::Statement { code, .. }) if code == errcodes::QUERY_CANCELED => Ok(()),
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
