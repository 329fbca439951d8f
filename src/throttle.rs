//! Rate limits for warnings that a storm would repeat thousands of times a second (caps
//! refusing, clients reaped, a backend refusing logins): at most [`PER_SECOND`] lines of a
//! kind per second, and the next line that is logged says how many were suppressed.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines of one kind logged per second at most.
pub const PER_SECOND: u32 = 10;

/// One kind of warning's budget.
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    /// Whether to log a line now: `Some(n)`, with the lines suppressed since the last one
    /// logged; `None` when over the budget (the line is counted as suppressed).
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1))
        {
            state.window = Some(now);
            state.logged = 0;
        }
        if state.logged < PER_SECOND {
            state.logged += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

/// The throttled warnings of one broker.
#[derive(Debug, Default)]
pub struct Warnings {
    /// A cap refused a connection or a transaction.
    pub caps: Throttle,
    /// The reaper ended a client.
    pub reaps: Throttle,
    /// A transaction got no server connection (backend down or refusing).
    pub borrows: Throttle,
    /// A client's login was refused (the client is told less than the log).
    pub logins: Throttle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_next_line_counts_the_rest() {
        let throttle = Throttle::default();
        let allowed = (0..100).filter(|_| throttle.allow().is_some()).count();
        assert_eq!(allowed, PER_SECOND as usize);
        throttle.state.lock().unwrap().window = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(throttle.allow(), Some(100 - u64::from(PER_SECOND)));
        assert_eq!(throttle.allow(), Some(0));
    }
}
