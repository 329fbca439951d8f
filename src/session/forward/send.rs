//! Sending one whole client frame on the server connection the client holds: what it does
//! to the session (pins, resets, deallocations), and its statement names translated in
//! transaction mode.

use super::{Hold, Link, Session};
use crate::config::PoolMode;
use crate::error::SessionError;
use crate::pool::{StatementEvents, Translation};
use crate::protocol::query::Effects;
use crate::session::params::ClientParams;

impl Session<'_> {
    /// Queues the client frame of `len` bytes at the front of the read buffer for the
    /// server it holds (the caller consumes it).
    pub(super) fn send_held(&mut self, tag: u8, len: usize) -> Result<(), SessionError> {
        let Link::Held(conn, hold) = &mut self.link else {
            return Ok(());
        };
        let pool = &self.shared.config.pool;
        let capacity = pool.prepared_statements_per_server;
        let tracked = capacity > 0 && pool.mode == PoolMode::Transaction;
        let frame = &self.io.rbuf[..len];
        let mut effects = Effects::default();
        if *hold == Hold::Transaction || tracked {
            effects = self.params.effects(tag, frame, tracked);
        }
        // Outside a transaction block the SET takes (the value is one Postgres accepts):
        // the client carries it to every server, as it carries its startup settings.
        let carried = (matches!(tag, b'Q' | b'P')
            && *hold == Hold::Transaction
            && conn.position.status == b'I')
            .then(|| ClientParams::carried_set(frame))
            .flatten();
        if let Some((name, value)) = carried {
            if conn.extras_known() {
                conn.extras.insert(name.to_owned(), value.clone());
            }
            self.params.extras.insert(name.to_owned(), value);
            effects.pin = None;
        }
        if tracked {
            if effects.deallocates_all {
                self.statements.clear();
            }
            if effects.deallocates {
                conn.close_all(&mut self.to_server);
            }
            let mut events = StatementEvents::default();
            let mut translation = Translation {
                client: &mut self.statements,
                capacity,
                to_server: &mut self.to_server,
                to_client: &mut self.io.wbuf,
                events: &mut events,
            };
            effects.pin = conn.send_translated(frame, effects.pin, &mut translation)?;
            if events != StatementEvents::default() {
                self.pool.count_statements(events);
            }
        } else {
            conn.sent(tag, frame);
            self.to_server.extend_from_slice(frame);
        }
        if *hold == Hold::Transaction {
            if effects.resets {
                conn.forget_extras();
            }
            if let Some(reason) = effects.pin {
                let (account, function) = (&self.slot.account.name, &self.slot.function.name);
                tracing::debug!(
                    %account,
                    %function,
                    reason = reason.as_str(),
                    "session pinned to its server connection"
                );
                self.shared
                    .metrics
                    .pinned(account, function, reason.as_str());
                *hold = Hold::Pinned(reason);
            }
        }
        Ok(())
    }
}
