//! The pools of server connections: one deadpool pool per (database, user), with a tiny
//! `Manager` (create = connect + login; recycle = synchronous checks), the set of pools,
//! and the login gate that bounds logins to the backend across all of them.

mod error;
pub mod gate;
mod pools;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use deadpool::managed::{self, PoolError, QueueMode, RecycleError, RecycleResult};
use deadpool::Runtime;

pub use error::BorrowError;
pub use gate::LoginGate;
pub use pools::{BackendAddr, Pools};

use crate::backend::{LoginError, LoginTarget, Params, ServerConn, StatementEvents};
use crate::config::PoolSettings;
use crate::metrics::{Metrics, PoolMetrics};

/// The deadpool manager of one (database, user) pool.
#[derive(Debug)]
pub struct Manager {
    target: LoginTarget,
    /// Parameters reported by the latest fresh login: what a new client is greeted with.
    baseline: Mutex<Option<Arc<Params>>>,
    /// Held while the first baseline is fetched.
    baseline_fetch: tokio::sync::Mutex<()>,
    /// The login gate all pools share.
    gate: Arc<LoginGate>,
    /// When the pool was created, and its last borrow (ms after that), for spare_ttl.
    epoch: Instant,
    last_borrow_ms: AtomicU64,
    /// Where its metric handles come from.
    registry: Arc<Metrics>,
    /// Its metric handles, registered at its first successful login: a pool for a database
    /// name a client made up never logs in, and leaves no labels behind.
    metrics: OnceLock<PoolMetrics>,
}

impl managed::Manager for Manager {
    type Type = ServerConn;
    type Error = LoginError;

    async fn create(&self) -> Result<ServerConn, LoginError> {
        let in_flight = self.gate.enter().await;
        let started = Instant::now();
        let conn = ServerConn::connect(&self.target).await;
        drop(in_flight);
        match &conn {
            Ok(conn) if conn.stream.is_tls() => self.registry.tls_handshake(true, true),
            Err(LoginError::Handshake { .. } | LoginError::Tls { .. }) => {
                self.registry.tls_handshake(true, false);
            }
            _ => {}
        }
        let conn = conn?;
        let metrics = self
            .metrics
            .get_or_init(|| (self.registry).pool(&self.target.database, &self.target.user));
        metrics.connects.increment(1);
        metrics
            .connect_seconds
            .record(started.elapsed().as_secs_f64());
        *self.baseline.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(conn.params.clone()));
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut ServerConn,
        _: &managed::Metrics,
    ) -> RecycleResult<LoginError> {
        if conn.is_reusable() {
            Ok(())
        } else {
            Err(RecycleError::message("server connection not reusable"))
        }
    }
}

/// A server connection checked out of its pool; dropping it gives it back.
pub type Borrowed = managed::Object<Manager>;

/// One (database, user) pool.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: managed::Pool<Manager>,
}

/// Settings every pool shares.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Server connections per pool.
    pub size: usize,
    /// Longest wait for a server connection.
    pub borrow_timeout: Duration,
}

impl Pool {
    fn new(
        target: LoginTarget,
        options: &PoolOptions,
        gate: Arc<LoginGate>,
        registry: Arc<Metrics>,
    ) -> Pool {
        let manager = Manager {
            target,
            registry,
            metrics: OnceLock::new(),
            gate,
            baseline: Mutex::new(None),
            baseline_fetch: tokio::sync::Mutex::new(()),
            epoch: Instant::now(),
            last_borrow_ms: AtomicU64::new(0),
        };
        let inner = managed::Pool::builder(manager)
            .max_size(options.size)
            // Most recently used first: under light load the same few connections serve
            // and the rest stay idle long enough for server_idle_timeout to close them.
            // (Waiters are served FIFO regardless: deadpool queues them on a fair semaphore.)
            .queue_mode(QueueMode::Lifo)
            .wait_timeout(Some(options.borrow_timeout))
            .runtime(Runtime::Tokio1)
            .build();
        // build() fails only without a runtime for timeouts, and one is set just above.
        Pool {
            inner: inner.unwrap_or_else(|_| unreachable!("runtime is set")),
        }
    }

    /// Checks out a server connection, waiting at most the borrow timeout for a free one.
    /// Cancel-safe: a dropped wait leaves the queue.
    pub async fn get(&self) -> Result<Borrowed, BorrowError> {
        let wait = self.inner.timeouts().wait.unwrap_or(Duration::ZERO);
        self.get_within(wait).await
    }

    /// Like [`Pool::get`], waiting at most `wait` (what is left of a client's borrow
    /// timeout after its caps). Cancel-safe.
    pub async fn get_within(&self, wait: Duration) -> Result<Borrowed, BorrowError> {
        let started = Instant::now();
        let deadline = started + wait;
        self.note_borrow(started);
        let mut refused = 0u32;
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let timeouts = managed::Timeouts {
                wait: Some(left),
                ..self.inner.timeouts()
            };
            // The deadline also bounds a login this waiter runs (its wait at the login gate
            // included): dropping the checkout drops the half-made connection.
            let got = match tokio::time::timeout(left, self.inner.timeout_get(&timeouts)).await {
                Ok(got) => got,
                Err(_) => return Err(self.slow_login(started)),
            };
            let login = match got {
                Ok(conn) => return Ok(conn),
                Err(PoolError::Backend(login)) => login,
                Err(PoolError::Timeout(_)) => return Err(self.full(started)),
                Err(_) => return Err(BorrowError::Closed),
            };
            // Postgres is full or starting: wait and try again (an idle connection another
            // client gives back may serve as well) until the borrow timeout.
            let delay = self.inner.manager().gate.retry_delay(refused);
            if !gate::retryable(&login) || Instant::now() + delay >= deadline {
                return Err(refusal(login, refused, started.elapsed()));
            }
            refused += 1;
            tokio::time::sleep(delay).await;
        }
    }

    fn full(&self, started: Instant) -> BorrowError {
        BorrowError::PoolFull {
            database: self.target().database.clone(),
            user: self.target().user.clone(),
            waited: started.elapsed(),
        }
    }

    fn slow_login(&self, started: Instant) -> BorrowError {
        let target = self.target();
        BorrowError::Login(LoginError::Timeout {
            addr: target.addr(),
            after: started.elapsed(),
        })
    }

    fn note_borrow(&self, now: Instant) {
        let manager = self.inner.manager();
        let since = now.saturating_duration_since(manager.epoch).as_millis();
        manager
            .last_borrow_ms
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The parameters a new client of this pool is greeted with; logs in a first server
    /// connection when none was made yet.
    pub async fn baseline(&self) -> Result<Arc<Params>, BorrowError> {
        if let Some(params) = self.cached_baseline() {
            return Ok(params);
        }
        // One login fetches it for a burst of clients connecting to a cold pool; the others
        // wait for that one (bounded by their startup timeout) instead of logging in too.
        let _fetching = self.inner.manager().baseline_fetch.lock().await;
        if let Some(params) = self.cached_baseline() {
            return Ok(params);
        }
        let conn = self.get().await?;
        drop(conn);
        self.cached_baseline().ok_or(BorrowError::Closed)
    }

    fn cached_baseline(&self) -> Option<Arc<Params>> {
        self.inner
            .manager()
            .baseline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Who this pool logs in as.
    pub fn target(&self) -> &LoginTarget {
        &self.inner.manager().target
    }

    /// Counts of connections (size) and idle ones (available).
    pub fn status(&self) -> managed::Status {
        self.inner.status()
    }

    /// Closes the pool: waiters fail, idle connections are dropped.
    pub fn close(&self) {
        self.inner.close();
    }

    /// True when a client borrowed from this pool within `ttl`.
    fn used_within(&self, ttl: Duration) -> bool {
        let manager = self.inner.manager();
        let last =
            manager.epoch + Duration::from_millis(manager.last_borrow_ms.load(Ordering::Relaxed));
        last.elapsed() < ttl
    }

    /// Closes idle connections past server_idle_timeout (keeping `min_idle` of them while
    /// the pool is in use) and past server_lifetime. The closing happens outside the pool
    /// lock. Returns how many were closed, for each reason.
    pub fn reap(&self, settings: &PoolSettings) -> ServerReaps {
        let keep = if self.used_within(settings.spare_ttl) {
            settings.min_idle
        } else {
            0
        };
        let mut removable = self.status().available.saturating_sub(keep);
        let now = Instant::now();
        let mut reaps = ServerReaps::default();
        let removed = self.inner.retain(|conn, _| {
            let aged = now.saturating_duration_since(conn.created()) >= settings.server_lifetime;
            let idle = conn.idle_for(now) >= settings.server_idle_timeout;
            if aged {
                reaps.aged += 1;
            } else if idle && removable > 0 {
                reaps.idle += 1;
            } else {
                return true;
            }
            removable = removable.saturating_sub(1);
            false
        });
        // Closed here, outside the pool lock.
        drop(removed);
        reaps
    }

    /// Counts what happened to named statements on its connections.
    pub fn count_statements(&self, events: StatementEvents) {
        if let Some(metrics) = self.inner.manager().metrics.get() {
            metrics.statements(events.prepared, events.reused, events.evicted);
        }
    }

    /// Sets its server connection gauges.
    pub fn publish(&self) {
        let status = self.status();
        let Some(metrics) = self.inner.manager().metrics.get() else {
            return;
        };
        metrics.idle.set(status.available as f64);
        metrics.size.set(status.max_size as f64);
        metrics
            .active
            .set(status.size.saturating_sub(status.available) as f64);
    }

    /// Logs in `min_idle` spares for a pool used within spare_ttl that has no idle
    /// connection left, without making any client wait (zero-wait checkouts). It acts only
    /// when none is idle, so it never holds an idle connection a client could use while it
    /// logs in the others.
    pub async fn top_up(&self, settings: &PoolSettings) {
        if settings.min_idle == 0
            || self.status().available > 0
            || !self.used_within(settings.spare_ttl)
        {
            return;
        }
        let timeouts = managed::Timeouts {
            wait: Some(Duration::ZERO),
            ..self.inner.timeouts()
        };
        let mut held = Vec::with_capacity(settings.min_idle);
        while held.len() < settings.min_idle {
            match self.inner.timeout_get(&timeouts).await {
                Ok(conn) => held.push(conn),
                Err(_) => break,
            }
        }
    }

    /// Discards a checked-out connection instead of giving it back.
    pub fn discard(conn: Borrowed) {
        drop(managed::Object::take(conn));
    }
}

/// Server connections one sweep closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerReaps {
    /// Idle past pool.server_idle_timeout.
    pub idle: u64,
    /// Older than pool.server_lifetime.
    pub aged: u64,
}

impl std::ops::AddAssign for ServerReaps {
    fn add_assign(&mut self, other: ServerReaps) {
        self.idle += other.idle;
        self.aged += other.aged;
    }
}

/// The error after the last failed login of a borrow: a refusal repeated until the borrow
/// timeout says how often Postgres refused.
fn refusal(login: LoginError, earlier: u32, waited: Duration) -> BorrowError {
    match login {
        LoginError::Refused { code, message } if earlier > 0 => BorrowError::Refused {
            code,
            message,
            times: earlier + 1,
            waited,
        },
        login => BorrowError::Login(login),
    }
}
