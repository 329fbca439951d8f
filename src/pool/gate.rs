//! Storm protection: a cold-start burst must not turn into a login storm. At most
//! `backend.max_concurrent_logins` server logins are in flight, all pools together; a login
//! Postgres refuses (too many connections, starting up, connection refused) is retried
//! with jittered exponential backoff within the waiter's borrow timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngExt;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::backend::LoginError;
use crate::protocol::errcodes::{CANNOT_CONNECT_NOW, TOO_MANY_CONNECTIONS};

/// The gate every server login passes.
#[derive(Debug)]
pub struct LoginGate {
    semaphore: Semaphore,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
    backoff: Duration,
    backoff_max: Duration,
}

/// A login in flight; leaves the gate on drop.
#[derive(Debug)]
pub struct InFlight<'a> {
    gate: &'a LoginGate,
    _permit: Option<SemaphorePermit<'a>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LoginGate {
    /// A gate for `max` logins at once, retrying after `backoff` doubling to `backoff_max`.
    pub fn new(max: usize, backoff: Duration, backoff_max: Duration) -> LoginGate {
        LoginGate {
            semaphore: Semaphore::new(max),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            backoff,
            backoff_max,
        }
    }

    /// Waits (FIFO) for a login slot. Cancel-safe.
    pub async fn enter(&self) -> InFlight<'_> {
        let permit = self.semaphore.acquire().await.ok();
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            gate: self,
            _permit: permit,
        }
    }

    /// Logins in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most logins ever in flight at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Logins attempted so far.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The wait before retry number `attempt` (0-based): doubling, capped, 50–100% jitter
    /// so a burst of refused waiters does not come back in lockstep.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let doubled = self.backoff.saturating_mul(1u32 << attempt.min(16));
        doubled
            .min(self.backoff_max)
            .mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// Whether a failed login is worth retrying: Postgres is full or starting, or not there yet.
pub fn retryable(error: &LoginError) -> bool {
    match error {
        LoginError::Refused { code, .. } => {
            [TOO_MANY_CONNECTIONS, CANNOT_CONNECT_NOW].contains(&code.as_str())
        }
        LoginError::Connect { source, .. } => {
            source.kind() == std::io::ErrorKind::ConnectionRefused
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_and_bounds_logins_in_flight() {
        let gate = LoginGate::new(2, Duration::from_millis(100), Duration::from_secs(1));
        let a = gate.enter().await;
        let _b = gate.enter().await;
        assert_eq!(gate.in_flight(), 2);
        let third = gate.enter();
        tokio::pin!(third);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut third)
            .await
            .is_err());
        drop(a);
        let _c = third.await;
        assert_eq!((gate.in_flight(), gate.peak()), (2, 2));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_max() {
        let gate = LoginGate::new(1, Duration::from_millis(100), Duration::from_millis(500));
        for (attempt, full) in [(0, 100), (1, 200), (2, 400), (3, 500), (30, 500)] {
            let d = gate.retry_delay(attempt).as_millis();
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d}ms");
        }
    }
}
