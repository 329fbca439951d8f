//! The counting service: which account and function a connection belongs to, and the caps
//! on them. Concurrency caps are FIFO semaphores (tokio's are fair), taken in one fixed
//! order (function, then account, then the pool) and released by dropping the permits, so
//! every path that ends a transaction or a session gives them back. Client caps are counts
//! held by a [`ClientSlot`] for the life of a connection.
//!
//! Cap sizes live in [`Cap`], whose capacity can change at run time (a later replica-aware
//! lease store resizes them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, UnknownFunctions};
use crate::metrics::{FunctionMetrics, Metrics};

mod error;
mod stats;
pub use error::CapError;
pub use stats::{AccountStats, FunctionStats, Rejected};

/// Name shared by functions past `limits.max_tracked_functions`.
pub const OTHER_FUNCTION: &str = "other";

/// A concurrency cap: a fair semaphore and its current capacity (0: no cap of its own, the
/// semaphore then holds as many permits as tokio allows, so it never makes anyone wait and
/// still counts the slots in use).
#[derive(Debug)]
pub struct Cap {
    semaphore: Arc<Semaphore>,
    capacity: AtomicUsize,
}

impl Cap {
    fn new(capacity: usize) -> Cap {
        let permits = if capacity == 0 {
            Semaphore::MAX_PERMITS
        } else {
            capacity
        };
        Cap {
            semaphore: Arc::new(Semaphore::new(permits)),
            capacity: AtomicUsize::new(capacity),
        }
    }

    /// The cap's size now (0: no cap of its own).
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// The cap's size now, or `None` when it has no cap of its own.
    pub fn limit(&self) -> Option<usize> {
        Some(self.capacity()).filter(|&n| n > 0)
    }

    /// Slots free now (for tests and gauges).
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Slots taken now.
    pub fn in_use(&self) -> usize {
        let permits = self.limit().unwrap_or(Semaphore::MAX_PERMITS);
        permits.saturating_sub(self.available())
    }

    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.semaphore).acquire_owned().await.ok()
    }
}

/// The caps and counts of one function of one account.
#[derive(Debug)]
pub struct FunctionState {
    /// Its name (or [`OTHER_FUNCTION`]).
    pub name: String,
    /// Its concurrency cap.
    pub cap: Cap,
    max_clients: usize,
    clients: AtomicUsize,
    max_waiting: usize,
    waiting: AtomicUsize,
    active: AtomicUsize,
    /// Refusals by the cap that refused, indexed by [`CapKind`].
    rejected: [AtomicU64; 5],
    /// Its metric handles.
    pub metrics: FunctionMetrics,
}

/// Which cap refused, for [`FunctionStats::rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum CapKind {
    /// The function's concurrency cap.
    Function = 0,
    /// The account's concurrency cap.
    Account = 1,
    /// The pool: no server connection within the borrow timeout.
    Pool = 2,
    /// A client cap at connect.
    Clients = 3,
    /// The function's waiting queue (reported under the function's cap in metrics).
    Queue = 4,
}

impl FunctionState {
    /// Counts a refusal by `kind`.
    pub fn reject(&self, kind: CapKind) {
        self.rejected[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The caps and counts of one account.
#[derive(Debug)]
pub struct AccountState {
    /// Its name.
    pub name: String,
    /// Its concurrency cap (all its functions together).
    pub cap: Cap,
    max_clients: Option<usize>,
    clients: AtomicUsize,
    functions: Mutex<HashMap<String, Arc<FunctionState>>>,
}

/// Every account's and function's state, created on first use from the config.
#[derive(Debug)]
pub struct Limits {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    accounts: Mutex<HashMap<String, Arc<AccountState>>>,
}

/// A connected client's place under its caps; gives its client slots back on drop.
#[derive(Debug)]
pub struct ClientSlot {
    /// Its account.
    pub account: Arc<AccountState>,
    /// Its function.
    pub function: Arc<FunctionState>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.function.clients.fetch_sub(1, Ordering::Relaxed);
        self.account.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The concurrency slots of one transaction (or pinned session): function, then account.
#[derive(Debug)]
pub struct Permits {
    _function: OwnedSemaphorePermit,
    _account: OwnedSemaphorePermit,
    /// Counted as waiting until a server connection is borrowed, active after.
    stage: Waiting,
}

impl Permits {
    /// The transaction got its server connection: it stops waiting and becomes active.
    pub fn borrowed(&mut self) {
        if !self.stage.active {
            self.stage.active = true;
            self.stage.function.waiting.fetch_sub(1, Ordering::Relaxed);
            self.stage.function.active.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts a transaction in its function's queue (or, once active, as active) while alive.
#[derive(Debug)]
struct Waiting {
    function: Arc<FunctionState>,
    active: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let count = if self.active {
            &self.function.active
        } else {
            &self.function.waiting
        };
        count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes one unit of `count` unless it is at `max`.
fn take(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl Limits {
    /// No account or function seen yet.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Limits {
        Limits {
            config,
            metrics,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    fn account(&self, name: &str) -> Arc<AccountState> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let configured = self.config.accounts.get(name);
        let limits = &self.config.limits;
        Arc::clone(accounts.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(AccountState {
                name: name.to_owned(),
                cap: Cap::new(
                    configured
                        .and_then(|a| a.max_concurrency)
                        .unwrap_or(limits.default_account_concurrency),
                ),
                max_clients: configured.and_then(|a| a.max_clients),
                clients: AtomicUsize::new(0),
                functions: Mutex::new(HashMap::new()),
            })
        }))
    }

    fn function(&self, account: &AccountState, name: &str) -> Result<Arc<FunctionState>, CapError> {
        let limits = &self.config.limits;
        let configured_account = self.config.accounts.get(&account.name);
        let configured = configured_account.and_then(|a| a.functions.get(name));
        if configured.is_none() && limits.unknown_functions == UnknownFunctions::Deny {
            return Err(CapError::UnknownFunction {
                account: account.name.clone(),
                function: name.to_owned(),
            });
        }
        let mut functions = account
            .functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tracked = configured.is_some()
            || functions.contains_key(name)
            || functions.len() < limits.max_tracked_functions;
        let key = if tracked { name } else { OTHER_FUNCTION };
        let default_cap = configured_account
            .and_then(|a| a.function_concurrency)
            .unwrap_or(limits.default_function_concurrency);
        let state = functions.entry(key.to_owned()).or_insert_with(|| {
            Arc::new(FunctionState {
                name: key.to_owned(),
                cap: Cap::new(
                    configured
                        .and_then(|f| f.max_concurrency)
                        .unwrap_or(default_cap),
                ),
                max_clients: configured
                    .and_then(|f| f.max_clients)
                    .unwrap_or(limits.default_function_clients),
                clients: AtomicUsize::new(0),
                max_waiting: configured
                    .and_then(|f| f.max_waiting)
                    .unwrap_or(limits.default_function_waiting),
                waiting: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                rejected: Default::default(),
                metrics: self.metrics.function(&account.name, key),
            })
        });
        Ok(Arc::clone(state))
    }

    /// Admits a new client connection of (account, function), or says which client cap
    /// (function, account) is full or that the function is not allowed.
    pub fn admit(&self, account: &str, function: &str) -> Result<ClientSlot, CapError> {
        let account = self.account(account);
        let function = self.function(&account, function)?;
        if !take(&function.clients, function.max_clients) {
            function.reject(CapKind::Clients);
            return Err(CapError::FunctionClients {
                account: account.name.clone(),
                function: function.name.clone(),
                max: function.max_clients,
            });
        }
        if !take(&account.clients, account.max_clients.unwrap_or(usize::MAX)) {
            function.clients.fetch_sub(1, Ordering::Relaxed);
            function.reject(CapKind::Clients);
            let max = account.max_clients.unwrap_or(usize::MAX);
            return Err(CapError::AccountClients {
                account: account.name.clone(),
                max,
            });
        }
        Ok(ClientSlot { account, function })
    }

    /// Waits (FIFO) for a concurrency slot of the client's function, then of its account,
    /// until `deadline`. A waiter blocked on its function holds nothing of the account.
    /// Cancel-safe: dropping the future leaves both queues.
    pub async fn acquire(slot: &ClientSlot, deadline: Instant) -> Result<Permits, CapError> {
        let function = &slot.function;
        let max_waiting = function.max_waiting;
        if max_waiting > 0 && !take(&function.waiting, max_waiting) {
            function.reject(CapKind::Queue);
            return Err(CapError::Queue {
                account: slot.account.name.clone(),
                function: function.name.clone(),
                max: max_waiting,
            });
        }
        if max_waiting == 0 {
            function.waiting.fetch_add(1, Ordering::Relaxed);
        }
        let waiting = Waiting {
            function: Arc::clone(function),
            active: false,
        };
        let started = Instant::now();
        let timed_out = |cap: CapKind| {
            function.reject(cap);
            match cap {
                CapKind::Function => CapError::FunctionBusy {
                    account: slot.account.name.clone(),
                    function: function.name.clone(),
                    cap: function.cap.capacity(),
                    waited: started.elapsed(),
                },
                _ => CapError::AccountBusy {
                    account: slot.account.name.clone(),
                    cap: slot.account.cap.capacity(),
                    waited: started.elapsed(),
                },
            }
        };
        let function_permit = until(deadline, function.cap.acquire())
            .await
            .ok_or_else(|| timed_out(CapKind::Function))?;
        let account_permit = until(deadline, slot.account.cap.acquire())
            .await
            .ok_or_else(|| timed_out(CapKind::Account))?;
        Ok(Permits {
            _function: function_permit,
            _account: account_permit,
            stage: waiting,
        })
    }
}

/// Runs `f` until `deadline`; `None` on time out (or a closed semaphore).
async fn until<T>(deadline: Instant, f: impl std::future::Future<Output = Option<T>>) -> Option<T> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    tokio::time::timeout(left, f).await.ok().flatten()
}

#[cfg(test)]
mod tests;
