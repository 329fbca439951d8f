//! Sending one whole client frame on the server connection the client holds: what it does
//! to the session (pins, resets, deallocations), and its statement names translated in
//! transaction mode.

use super::{Hold, Link, Session};
use crate::backend::{ServerConn, StatementEvents, Translation};
use crate::config::PoolMode;
use crate::error::SessionError;
use crate::protocol::query::Effects;
use crate::session::params::ClientParams;

/// Whether a Query or Parse frame mentions a statement whose effect depends on the
/// transaction state it runs in (a cheap over-approximation: its text names one).
fn mentions_session_wide(frame: &[u8]) -> bool {
    let end = crate::protocol::Header::parse(frame)
        .ok()
        .flatten()
        .map_or(0, |h| h.frame_len().min(frame.len()));
    let text = &frame[..end];
    ["deallocate", "discard", "extra_float_digits"]
        .iter()
        .any(|word| {
            text.windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
        })
}

impl Session<'_> {
    /// Whether the client frame at the front of the read buffer must wait: it may use
    /// statement names whose fate an earlier batch, closed by a Sync or Query but not
    /// answered yet, still decides (the server does not skip it if that batch failed).
    pub(super) fn must_wait(&self, tag: u8) -> bool {
        let Link::Held(conn, _) = &self.link else {
            return false;
        };
        let frame = &self.io.rbuf[..];
        let uncertain = matches!(tag, b'P' | b'B' | b'D' | b'C' | b'Q')
            && conn.statements_uncertain()
            && !conn.position.copy_in;
        // What DEALLOCATE ALL, DISCARD ALL or a carried SET do depends on whether they run
        // in a transaction block: known once what the client sent before is answered.
        // (Not inside an open extended batch: its replies come only with its Sync.)
        let session_wide = matches!(tag, b'Q' | b'P')
            && conn.client_in_flight()
            && !conn.position.unsynced
            && mentions_session_wide(frame);
        // A named Parse the broker may answer itself: whether a failed block makes it fail
        // is known once what was sent before it is answered.
        let named_parse = tag == b'P'
            && conn.client_in_flight()
            && !conn.position.unsynced
            && frame
                .get(crate::protocol::HEADER_LEN)
                .is_some_and(|&b| b != 0);
        uncertain || session_wide || named_parse
    }

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
        if *hold == Hold::Transaction && carry_set(conn, &mut self.params, tag, frame) {
            effects.pin = None;
        }
        if tracked {
            let mut events = StatementEvents::default();
            let mut translation = Translation {
                client: &mut self.statements,
                capacity,
                to_server: &mut self.to_server,
                to_client: &mut self.io.wbuf,
                events: &mut events,
            };
            effects = conn.send_translated(frame, effects, &mut translation)?;
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
                *hold = Hold::Pinned(reason);
                self.pinned(reason.as_str());
            }
        }
        Ok(())
    }

    /// Logs and counts a client pinned to its server connection.
    fn pinned(&self, reason: &'static str) {
        let (account, function) = (&self.slot.account.name, &self.slot.function.name);
        tracing::debug!(
            %account,
            %function,
            reason,
            "session pinned to its server connection"
        );
        self.shared.metrics.pinned(account, function, reason);
    }
}

/// A session-level SET the client carries to every server, as it carries its startup
/// settings: taken when the frame is one, outside a transaction block, with nothing in
/// flight that could open one (the value is one Postgres accepts). True when it was taken.
fn carry_set(conn: &mut ServerConn, params: &mut ClientParams, tag: u8, frame: &[u8]) -> bool {
    let carried = (matches!(tag, b'Q' | b'P') && conn.client_at_rest())
        .then(|| ClientParams::carried_set(frame))
        .flatten();
    let Some((name, value)) = carried else {
        return false;
    };
    if conn.extras_known() {
        conn.extras.insert(name.to_owned(), value.clone());
    }
    params.extras.insert(name.to_owned(), value);
    true
}
