//! The reaper: one sweep every `reaper.interval` over every client session and every pool,
//! reclaiming what frozen or vanished function containers leave behind. It costs O(clients
//! + idle server connections) per sweep; there is no timer per session.
//!
//! - a client silent outside a transaction for `reaper.client_idle_timeout` is ended (57P05);
//! - a client silent inside a transaction for `reaper.idle_in_transaction_timeout` is rolled
//!   back and ended (25P03);
//! - idle server connections above `pool.min_idle` are closed after `pool.server_idle_timeout`,
//!   any idle one older than `pool.server_lifetime`; pools used within `pool.spare_ttl` are
//!   topped up to `pool.min_idle` warm spares.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{PoolSettings, Reaper};
use crate::metrics::{Metrics, Reaped};
use crate::pool::{Pools, ServerReaps};

/// Where a client stands, as the sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// No transaction open, nothing in flight: subject to the client idle TTL.
    Idle = 0,
    /// A statement in flight or a borrow pending: the client is waiting, not idle.
    Busy = 1,
    /// A transaction open, nothing in flight: subject to the idle-in-transaction timeout.
    InTransaction = 2,
}

/// Why a client was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Silent past `reaper.client_idle_timeout`.
    ClientIdle(Duration),
    /// Silent inside a transaction past `reaper.idle_in_transaction_timeout`.
    IdleInTransaction(Duration),
}

/// What one session shares with the sweep: when its client last spoke, its phase, and the
/// bell the sweep rings.
#[derive(Debug)]
pub struct Watch {
    epoch: Instant,
    last_heard_ms: AtomicU64,
    phase: AtomicU8,
    bell: Notify,
    /// The sweep rang an idle client once so it gives back its buffers; cleared when the
    /// client speaks.
    shed_asked: AtomicBool,
}

impl Watch {
    fn elapsed_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The client sent something.
    pub fn heard(&self) {
        self.last_heard_ms
            .store(self.elapsed_ms(Instant::now()), Ordering::Relaxed);
        self.shed_asked.store(false, Ordering::Relaxed);
    }

    /// True once per idle spell, for a client idle at least `after`: time to give back its
    /// buffers (a client busy between short pauses keeps them).
    fn shed_due(&self, now: Instant, after: Duration) -> bool {
        let silent = self
            .elapsed_ms(now)
            .saturating_sub(self.last_heard_ms.load(Ordering::Relaxed));
        self.phase.load(Ordering::Relaxed) == Phase::Idle as u8
            && Duration::from_millis(silent) >= after
            && !self.shed_asked.swap(true, Ordering::Relaxed)
    }

    /// Records where the session stands now. Leaving Busy restarts the silence: a client
    /// that waited ten minutes for a result has not been idle for ten minutes.
    pub fn set_phase(&self, phase: Phase) {
        let old = self.phase.swap(phase as u8, Ordering::Relaxed);
        if old == Phase::Busy as u8 && phase != Phase::Busy {
            self.heard();
        }
    }

    /// Whether the client is due to be reaped at `now`.
    pub fn due(&self, now: Instant, limits: &Reaper) -> Option<Reason> {
        let silent = self
            .elapsed_ms(now)
            .saturating_sub(self.last_heard_ms.load(Ordering::Relaxed));
        let silent = Duration::from_millis(silent);
        match self.phase.load(Ordering::Relaxed) {
            0 if silent >= limits.client_idle_timeout => {
                Some(Reason::ClientIdle(limits.client_idle_timeout))
            }
            2 if silent >= limits.idle_in_transaction_timeout => Some(Reason::IdleInTransaction(
                limits.idle_in_transaction_timeout,
            )),
            _ => None,
        }
    }

    /// Completes when the sweep found the client due (the session checks [`Watch::due`]
    /// again: it may have spoken since). Cancel-safe.
    pub async fn rung(&self) {
        self.bell.notified().await;
    }
}

/// All client sessions, for the sweep.
#[derive(Debug, Default)]
pub struct Clients {
    next: AtomicU64,
    watches: Mutex<HashMap<u64, Arc<Watch>>>,
}

/// A session's place in [`Clients`]; leaves it on drop.
#[derive(Debug)]
pub struct Registration {
    clients: Arc<Clients>,
    id: u64,
    /// The session's watch.
    pub watch: Arc<Watch>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Clients {
    /// Registers a new session, heard now and idle.
    pub fn register(self: &Arc<Self>) -> Registration {
        let epoch = Instant::now();
        let watch = Arc::new(Watch {
            epoch,
            last_heard_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Idle as u8),
            bell: Notify::new(),
            shed_asked: AtomicBool::new(false),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&watch));
        Registration {
            clients: Arc::clone(self),
            id,
            watch,
        }
    }

    /// Rings every session due at `now`, and once every session idle for a sweep interval
    /// (it gives back its buffers); returns how many are due.
    pub fn sweep(&self, now: Instant, limits: &Reaper) -> usize {
        let watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = 0;
        for watch in watches.values() {
            if watch.due(now, limits).is_some() {
                due += 1;
                watch.bell.notify_one();
            } else if watch.shed_due(now, limits.interval) {
                watch.bell.notify_one();
            }
        }
        due
    }

    /// Sessions registered now.
    pub fn len(&self) -> usize {
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs the sweep every `limits.interval` until `stop` is cancelled.
pub async fn run(
    clients: Arc<Clients>,
    pools: Arc<Pools>,
    metrics: Arc<Metrics>,
    limits: Reaper,
    pool: PoolSettings,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(limits.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spares log in on their own task: a slow login must not hold up the sweep.
    let mut spares: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        // Clients rung here count themselves when they act on it (they check again first).
        clients.sweep(Instant::now(), &limits);
        let closed = pools.reap(&pool);
        metrics.reaped(Reaped::ServerIdle, closed.idle);
        metrics.reaped(Reaped::ServerLifetime, closed.aged);
        if closed != ServerReaps::default() {
            tracing::info!(
                server_idle = closed.idle,
                server_lifetime = closed.aged,
                "reaper closed server connections"
            );
        }
        if spares.as_ref().is_none_or(|task| task.is_finished()) {
            let (pools, pool) = (Arc::clone(&pools), pool.clone());
            spares = Some(tokio::spawn(async move { pools.top_up(&pool).await }));
        }
    }
    if let Some(task) = spares {
        task.abort();
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Reaper {
        Reaper {
            client_idle_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(2),
            interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn phases_decide_which_timeout_applies() {
        let clients = Arc::new(Clients::default());
        let reg = clients.register();
        let start = Instant::now();
        assert_eq!(reg.watch.due(start, &limits()), None);
        let later = start + Duration::from_secs(3);
        assert_eq!(reg.watch.due(later, &limits()), None, "idle, under the TTL");
        reg.watch.set_phase(Phase::InTransaction);
        assert!(matches!(
            reg.watch.due(later, &limits()),
            Some(Reason::IdleInTransaction(_))
        ));
        reg.watch.set_phase(Phase::Busy);
        assert_eq!(
            reg.watch.due(start + Duration::from_secs(60), &limits()),
            None,
            "waiting on a query"
        );
        reg.watch.set_phase(Phase::Idle);
        assert!(matches!(
            reg.watch.due(start + Duration::from_secs(11), &limits()),
            Some(Reason::ClientIdle(_))
        ));
        assert_eq!(clients.sweep(start + Duration::from_secs(11), &limits()), 1);
        let second = start + Duration::from_secs(2);
        assert!(
            reg.watch.shed_due(second, Duration::from_secs(1)),
            "idle a sweep"
        );
        assert!(
            !reg.watch.shed_due(second, Duration::from_secs(1)),
            "once a spell"
        );
        reg.watch.heard();
        reg.watch.set_phase(Phase::Busy);
        let later = Instant::now() + Duration::from_secs(5);
        assert!(
            !reg.watch.shed_due(later, Duration::from_secs(1)),
            "busy keeps them"
        );
        reg.watch.set_phase(Phase::Idle);
        assert!(
            reg.watch.shed_due(later, Duration::from_secs(1)),
            "a new idle spell"
        );
        drop(reg);
        assert!(clients.is_empty());
    }
}
