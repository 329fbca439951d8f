//! What one session counts: transactions and queries (into its function's metrics and its
//! closing log line), and how long each transaction held its server connection.

use std::time::Instant;

use crate::metrics::FunctionMetrics;

/// A session's counts.
#[derive(Debug, Default)]
pub struct Tally {
    /// Transactions ended (ReadyForQuery 'I').
    pub transactions: u64,
    /// When the current transaction started holding its server connection.
    started: Option<Instant>,
}

impl Tally {
    /// A client frame goes to the server: a Query or an Execute is a query, and the first
    /// frame after a transaction ended starts the next one.
    pub(super) fn sent(&mut self, tag: u8, metrics: &FunctionMetrics) {
        if matches!(tag, b'Q' | b'E') {
            metrics.queries.increment(1);
        }
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    /// A ReadyForQuery 'I' reached the client: a transaction ended. With `more` pipelined
    /// messages owed, the next one started already.
    pub(super) fn ended(&mut self, metrics: &FunctionMetrics, more: bool) {
        self.transactions += 1;
        metrics.transactions.increment(1);
        let now = Instant::now();
        if let Some(started) = self.started.take() {
            let held = now.saturating_duration_since(started);
            metrics.transaction_seconds.record(held.as_secs_f64());
        }
        if more {
            self.started = Some(now);
        }
    }
}
