//! The backend check behind `/readyz`: every `backend.health_interval`, a fresh login (as
//! `backend.health_user`, through the same login code the pools use) and a one-row query
//! (Postgres' connection count and max_connections, for the gauges). The broker is ready
//! while a check succeeded within the last two intervals.
//!
//! With no user whose password can log in (every one stored as a SCRAM secret), the check
//! is a TCP connect, and `/status` says so: a SCRAM-only user logs in with a ClientKey that
//! only a client's login recovers, and readiness must not wait for a client.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::auth::UserEntry;
use crate::backend::{LoginTarget, ServerConn};
use crate::config::{Config, PasswordKind};
use crate::metrics::Metrics;
use crate::pool::BackendAddr;

/// The check's query: as light as `SELECT 1`, and it says how close Postgres is to its
/// connection limit (and how much of it only superusers may use; `reserved_connections` is
/// Postgres 16's).
const CHECK_SQL: &str = "SELECT (SELECT count(*) FROM pg_stat_activity \
     WHERE backend_type = 'client backend'), current_setting('max_connections'), \
     current_setting('superuser_reserved_connections')::int \
     + coalesce(current_setting('reserved_connections', true), '0')::int";

/// The application_name of the check's connections in pg_stat_activity.
pub const HEALTH_APPLICATION_NAME: &str = "pgbroker health check";

/// What the check reads from Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendCounts {
    /// Client backends on Postgres (everyone's).
    pub connections: usize,
    /// Its `max_connections`.
    pub max_connections: usize,
    /// Of those, the connections only superusers may open.
    pub reserved: usize,
}

/// How the backend is checked.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Log in and run `SELECT 1`.
    Login(LoginTarget),
    /// Only open a TCP connection (no user can log in).
    Connect {
        /// host:port.
        addr: String,
        /// Bound on the connect.
        timeout: Duration,
    },
}

impl Probe {
    /// The probe the config asks for: its health user, else the first user with a
    /// password that can log in, else a TCP connect.
    pub fn from_config(
        config: &Config,
        users: &std::collections::HashMap<String, UserEntry>,
        addr: &BackendAddr,
    ) -> Probe {
        let backend = &config.backend;
        let chosen = match &backend.health_user {
            Some(name) => config.users.iter().find(|u| &u.name == name),
            None => config
                .users
                .iter()
                .find(|u| u.password_kind() != PasswordKind::ScramSha256),
        };
        let entry = chosen.and_then(|u| users.get(&u.name).map(|e| (u, e)));
        match entry {
            Some((user, entry)) => Probe::Login(LoginTarget {
                host: backend.host.clone(),
                port: backend.port,
                connect_timeout: backend.connect_timeout,
                database: backend
                    .health_database
                    .clone()
                    .unwrap_or_else(|| user.name.clone()),
                user: user.name.clone(),
                secret: entry.secret.clone(),
                client_keys: Arc::clone(&addr.client_keys),
                application_name: HEALTH_APPLICATION_NAME,
                tls: addr.tls.clone(),
            }),
            None => Probe::Connect {
                addr: format!("{}:{}", backend.host, backend.port),
                timeout: backend.connect_timeout,
            },
        }
    }

    /// What the probe does, for `/status`.
    pub fn describe(&self) -> String {
        match self {
            Probe::Login(t) => format!(
                "login as {} to {} and count connections in pg_stat_activity",
                t.user, t.database
            ),
            Probe::Connect { .. } => {
                "TCP connect only: no configured user has a password that can log in".to_owned()
            }
        }
    }

    /// Runs the check once: Postgres' connection counts when it logged in (and could read
    /// them); the error says what failed.
    pub async fn check(&self) -> Result<Option<BackendCounts>, String> {
        match self {
            Probe::Login(target) => {
                let mut conn = ServerConn::connect(target)
                    .await
                    .map_err(|e| e.to_string())?;
                let query = conn.query_row(CHECK_SQL, "health check");
                let row = match tokio::time::timeout(target.connect_timeout, query).await {
                    Ok(row) => row.map_err(|e| e.to_string())?,
                    Err(_) => {
                        let after = target.connect_timeout;
                        return Err(format!("the check query did not answer within {after:?}"));
                    }
                };
                let number = |i: usize| -> Option<usize> { row.get(i)?.as_deref()?.parse().ok() };
                let counts = number(0).zip(number(1));
                Ok(counts.map(|(connections, max_connections)| BackendCounts {
                    connections,
                    max_connections,
                    reserved: number(2).unwrap_or(0),
                }))
            }
            Probe::Connect { addr, timeout } => {
                match tokio::time::timeout(*timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => Ok(None),
                    Ok(Err(e)) => Err(format!("cannot connect to backend {addr}: {e}")),
                    Err(_) => Err(format!("cannot connect to backend {addr}: timed out")),
                }
            }
        }
    }
}

/// The outcome of the latest checks.
#[derive(Debug)]
pub struct Health {
    probe: Probe,
    metrics: Arc<Metrics>,
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_ok: Option<Instant>,
    last_error: Option<String>,
}

impl Health {
    /// No check run yet.
    pub fn new(probe: Probe, interval: Duration, metrics: Arc<Metrics>) -> Health {
        Health {
            probe,
            metrics,
            interval,
            state: Mutex::new(State::default()),
        }
    }

    /// The probe in use.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Ok while a check succeeded within the last two intervals; else why not.
    pub fn ready(&self, now: Instant) -> Result<(), String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = state
            .last_ok
            .is_some_and(|t| now.saturating_duration_since(t) <= self.interval * 2);
        if fresh {
            return Ok(());
        }
        Err(match (&state.last_error, state.last_ok) {
            (Some(error), _) => format!("backend check failed: {error}"),
            (None, Some(t)) => format!(
                "no backend check has succeeded for {:?}",
                now.saturating_duration_since(t)
            ),
            (None, None) => "no backend check has run yet".to_owned(),
        })
    }

    /// Keeps the outcome of a check; logs only when the backend's state changes.
    fn record(&self, outcome: Result<Option<BackendCounts>, String>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(counts) => {
                if let Some(c) = counts {
                    let max = c.max_connections as f64;
                    self.metrics.backend_connections(c.connections as f64, max);
                }
                if let Some(error) = state.last_error.take() {
                    tracing::info!(%error, "backend check succeeded again");
                }
                state.last_ok = Some(Instant::now());
            }
            Err(error) => {
                if state.last_error.is_none() {
                    tracing::warn!(%error, "backend check failed");
                }
                state.last_error = Some(error);
            }
        }
    }

    /// Checks the backend every interval until `stop` is cancelled. A check that outlasts
    /// the interval is not stacked on: the next one starts after it ends.
    pub async fn run(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let outcome = tokio::select! {
                outcome = self.probe.check() => outcome,
                () = stop.cancelled() => return,
            };
            self.record(outcome);
        }
    }
}
