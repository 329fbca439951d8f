//! Giving a server connection back: at rest after a transaction, or at the end of the
//! session, settled (cancel, rollback, reset) or closed.

use std::mem;

use super::{Hold, Link, Session};
use crate::backend::Ending;
use crate::config::OnClientDisconnect;
use crate::pool::Pool;

impl Session<'_> {
    /// In transaction mode, gives the server back once it is at rest with nothing queued.
    /// A server a cancel request may still reach is closed instead: the signal could
    /// otherwise hit the next client's query.
    pub(super) fn release_at_rest(&mut self) {
        let Link::Held(conn, Hold::Transaction) = &self.link else {
            return;
        };
        // Frames waiting for this server's answer go to this server: a re-borrow would
        // close the client's unnamed statement (and another client could take it between).
        if !conn.at_rest() || !self.to_server.is_empty() || self.waiting {
            return;
        }
        self.key.serve(None);
        if let Link::Held(conn, _) = mem::replace(&mut self.link, Link::Idle) {
            if self.key.cancelling() {
                Pool::discard(conn);
            }
        }
        self.permits = None;
    }

    /// Gives the server connection back at the end of the session, settled and reset, or
    /// closes it when that cannot be done within pool.server_drain_timeout.
    pub(super) async fn finish(&mut self, cancel: bool) {
        let Link::Held(mut conn, hold) = mem::replace(&mut self.link, Link::Idle) else {
            return;
        };
        self.key.serve(None);
        let pool = &self.shared.config.pool;
        let ending = Ending {
            cancel,
            discard_all: hold != Hold::Transaction,
        };
        if !conn.at_rest() && pool.on_client_disconnect == OnClientDisconnect::Close {
            // Postgres notices a closed socket only between statements: stop the running
            // one first so its locks go now, not when it finishes.
            if cancel && (conn.position.outstanding > 0 || conn.position.unsynced) {
                let cancel = crate::cancel::send_cancel(conn.cancel_target());
                let _ = tokio::time::timeout(pool.server_drain_timeout, cancel).await;
            }
            Pool::discard(conn);
            return;
        }
        if !(conn.at_rest() && !ending.discard_all && self.to_server.is_empty()) {
            let pending = mem::take(&mut self.to_server);
            let settled =
                tokio::time::timeout(pool.server_drain_timeout, conn.settle(&pending, ending))
                    .await;
            if !matches!(settled, Ok(Ok(()))) {
                tracing::debug!(?settled, "server connection closed instead of reused");
                Pool::discard(conn);
                return;
            }
        }
        // A cancel of this client still on its way would hit the next client's query.
        if self.key.cancelling() {
            Pool::discard(conn);
        }
    }
}
