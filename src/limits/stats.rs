//! Snapshots of the counting service, for `/status` and the tests, and the publication of
//! its counts to the metric gauges when `/metrics` is scraped.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use serde::Serialize;

use super::{AccountState, CapKind, FunctionState, Limits};

/// A snapshot of one function's caps and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionStats {
    /// Account name.
    pub account: String,
    /// Function name.
    pub function: String,
    /// Its concurrency cap (`None`: no cap of its own, only the pool's).
    pub cap: Option<usize>,
    /// Client connections open.
    pub clients: usize,
    /// Its client cap.
    pub max_clients: usize,
    /// Transactions waiting for a slot or a server connection.
    pub waiting: usize,
    /// Transactions (or sessions) of the function holding a server connection.
    pub active: usize,
    /// Refusals by the cap that refused.
    pub rejected: Rejected,
}

/// Refusals of one function, by the cap that refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Its concurrency cap (timed out).
    pub function: u64,
    /// Its account's concurrency cap (timed out).
    pub account: u64,
    /// No server connection within the borrow timeout.
    pub pool: u64,
    /// Client caps at connect.
    pub clients: u64,
    /// Its full waiting queue.
    pub queue: u64,
}

impl Rejected {
    /// The count of one cap kind.
    pub fn get(&self, kind: CapKind) -> u64 {
        match kind {
            CapKind::Function => self.function,
            CapKind::Account => self.account,
            CapKind::Pool => self.pool,
            CapKind::Clients => self.clients,
            CapKind::Queue => self.queue,
        }
    }
}

/// A snapshot of one account's cap and counts, with its functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountStats {
    /// Account name.
    pub account: String,
    /// Its concurrency cap, all its functions together (`None`: no cap of its own).
    pub cap: Option<usize>,
    /// Slots of that cap in use.
    pub in_use: usize,
    /// Client connections open.
    pub clients: usize,
    /// Its client cap, if it has one.
    pub max_clients: Option<usize>,
    /// Its functions seen so far.
    pub functions: Vec<FunctionStats>,
}

impl FunctionState {
    fn stats(&self, account: &str) -> FunctionStats {
        FunctionStats {
            account: account.to_owned(),
            function: self.name.clone(),
            cap: self.cap.limit(),
            clients: self.clients.load(Ordering::Relaxed),
            max_clients: self.max_clients,
            waiting: self.waiting.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            rejected: {
                let [function, account, pool, clients, queue] =
                    self.rejected.each_ref().map(|r| r.load(Ordering::Relaxed));
                Rejected {
                    function,
                    account,
                    pool,
                    clients,
                    queue,
                }
            },
        }
    }

    /// Sets its client gauges and refusal counters from its counts.
    fn publish(&self) {
        let s = self.stats("");
        let idle = s.clients.saturating_sub(s.active + s.waiting);
        let [active_g, waiting_g, idle_g] = &self.metrics.clients;
        active_g.set(s.active as f64);
        waiting_g.set(s.waiting as f64);
        idle_g.set(idle as f64);
        let r = &s.rejected;
        let by_label = [r.function + r.queue, r.account, r.pool, r.clients];
        for (counter, value) in self.metrics.rejections.iter().zip(by_label) {
            counter.absolute(value);
        }
    }
}

impl AccountState {
    fn functions(&self) -> Vec<std::sync::Arc<FunctionState>> {
        let functions = self
            .functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        functions.values().cloned().collect()
    }
}

impl Limits {
    fn accounts(&self) -> Vec<std::sync::Arc<AccountState>> {
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts.values().cloned().collect()
    }

    /// Every account seen so far with its functions, sorted by name.
    pub fn snapshot(&self) -> Vec<AccountStats> {
        let mut out: Vec<AccountStats> = self
            .accounts()
            .iter()
            .map(|account| {
                let mut functions: Vec<_> = account
                    .functions()
                    .iter()
                    .map(|f| f.stats(&account.name))
                    .collect();
                functions.sort_by(|a, b| a.function.cmp(&b.function));
                AccountStats {
                    account: account.name.clone(),
                    cap: account.cap.limit(),
                    in_use: account.cap.in_use(),
                    clients: account.clients.load(Ordering::Relaxed),
                    max_clients: account.max_clients,
                    functions,
                }
            })
            .collect();
        out.sort_by(|a, b| a.account.cmp(&b.account));
        out
    }

    /// Counters of every function seen so far.
    pub fn stats(&self) -> Vec<FunctionStats> {
        self.snapshot()
            .into_iter()
            .flat_map(|a| a.functions)
            .collect()
    }

    /// Sets every function's client gauges and refusal counters (before a scrape).
    pub fn publish(&self) {
        for account in self.accounts() {
            for function in account.functions() {
                function.publish();
            }
        }
    }
}
