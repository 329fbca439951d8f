//! Metric names (the only place they are spelled), their help text and histogram buckets,
//! and the handles the rest of the broker records through (the `metrics` facade's
//! [`Counter`], [`Gauge`] and [`Histogram`]).
//!
//! Each [`crate::Broker`] owns its own Prometheus recorder instead of installing one
//! process-wide, so several brokers in one process (the tests, an embedding) each report
//! only their own traffic. Handles are registered once per label set (per function, per
//! pool) and kept by their owner, so recording on the hot path is an atomic add.
//!
//! Label values are bounded: functions by `limits.max_tracked_functions` (see
//! [`crate::limits`]), pools by the configured users, SQLSTATEs by [`MAX_SQLSTATES`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ::metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Client connections by account, function and state (active / waiting / idle).
pub const CLIENT_CONNECTIONS: &str = "pgbroker_client_connections";
/// Server connections by database, user and state (active / idle).
pub const SERVER_CONNECTIONS: &str = "pgbroker_server_connections";
/// Transactions ended (ReadyForQuery 'I') by account and function.
pub const TRANSACTIONS: &str = "pgbroker_transactions_total";
/// Queries (simple Query and extended Execute messages) by account and function.
pub const QUERIES: &str = "pgbroker_queries_total";
/// Wait for caps and a server connection, by account and function.
pub const BORROW_WAIT: &str = "pgbroker_borrow_wait_seconds";
/// Time a transaction held its server connection, by account and function.
pub const TRANSACTION_SECONDS: &str = "pgbroker_transaction_seconds";
/// Refusals by account, function and cap (function / account / pool / clients).
pub const CAP_REJECTIONS: &str = "pgbroker_cap_rejections_total";
/// Connections the reaper ended, by reason.
pub const REAPED: &str = "pgbroker_reaped_total";
/// Sessions pinned to their server connection, by account, function and reason.
pub const PINNED: &str = "pgbroker_pinned_sessions_total";
/// Server logins completed, by database and user.
pub const SERVER_CONNECTS: &str = "pgbroker_server_connects_total";
/// Server login time (connect + authentication), by database and user.
pub const SERVER_CONNECT_SECONDS: &str = "pgbroker_server_connect_seconds";
/// Server logins in flight, all pools together.
pub const LOGINS_IN_FLIGHT: &str = "pgbroker_server_logins_in_flight";
/// pool.size of each (database, user) pool: the ceiling of its server connections.
pub const POOL_SIZE: &str = "pgbroker_pool_size";
/// Client backends connected to Postgres (everyone's, not only the broker's), from the
/// latest backend check.
pub const BACKEND_CONNECTIONS: &str = "pgbroker_backend_connections";
/// 1 while the broker is ready (what /readyz answers), else 0.
pub const BACKEND_READY: &str = "pgbroker_backend_ready";
/// Postgres' max_connections, from the latest backend check.
pub const BACKEND_MAX_CONNECTIONS: &str = "pgbroker_backend_max_connections";
/// Errors clients were sent (the broker's own and the server's), by SQLSTATE.
pub const ERRORS: &str = "pgbroker_errors_total";

/// Distinct SQLSTATE label values kept; later codes are counted as "other" (a client can
/// raise any code it likes from PL/pgSQL).
pub const MAX_SQLSTATES: usize = 256;

/// Label value shared by whatever is past a bound.
pub const OTHER: &str = "other";

const HELP: &[(&str, &str)] = &[
    (CLIENT_CONNECTIONS, "Client connections open, by state: active (holding a server connection), waiting (for a cap or a server connection), idle."),
    (SERVER_CONNECTIONS, "Server connections open, by state: active (lent to a client) or idle (in the pool)."),
    (TRANSACTIONS, "Transactions that ended (ReadyForQuery 'I'), implicit ones included."),
    (QUERIES, "Queries sent: simple Query messages and extended-protocol Executes."),
    (BORROW_WAIT, "Wait of a transaction for its function and account caps and a server connection."),
    (TRANSACTION_SECONDS, "Time a transaction held its server connection, to its ReadyForQuery 'I'."),
    (CAP_REJECTIONS, "Transactions or connections refused: cap = function (its concurrency cap or its full queue), account, pool (no server connection within borrow_timeout), clients (client caps at connect)."),
    (REAPED, "Connections ended by the reaper: client_idle, idle_in_transaction (clients), server_idle, server_lifetime (server connections)."),
    (PINNED, "Sessions pinned to one server connection for the rest of their life, by what pinned them."),
    (SERVER_CONNECTS, "Server connections logged in to Postgres."),
    (SERVER_CONNECT_SECONDS, "Time to connect and log in to Postgres."),
    (LOGINS_IN_FLIGHT, "Server logins in flight, all pools together (bounded by backend.max_concurrent_logins)."),
    (POOL_SIZE, "Most server connections a pool may open (pool.size)."),
    (BACKEND_CONNECTIONS, "Client backends connected to Postgres, the broker's and everyone else's (pg_stat_activity, at the latest backend check)."),
    (BACKEND_MAX_CONNECTIONS, "Postgres' max_connections (at the latest backend check)."),
    (BACKEND_READY, "1 while a backend check passed within two backend.health_intervals and the broker is not shutting down (what /readyz answers), else 0."),
    (ERRORS, "ErrorResponses sent to clients, the broker's own and those forwarded from Postgres, by SQLSTATE."),
];

/// Borrow waits: from 100µs (a free slot) to the longest borrow_timeout.
const BORROW_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Transactions: from a sub-millisecond `SELECT 1` to minutes.
const TRANSACTION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Logins: a local trust login takes a millisecond, a remote SCRAM one hundreds.
const CONNECT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// Why the reaper ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// A client silent past reaper.client_idle_timeout.
    ClientIdle = 0,
    /// A client silent inside a transaction past reaper.idle_in_transaction_timeout.
    IdleInTransaction = 1,
    /// An idle server connection past pool.server_idle_timeout.
    ServerIdle = 2,
    /// A server connection older than pool.server_lifetime.
    ServerLifetime = 3,
}

impl Reaped {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reaped::ClientIdle => "client_idle",
            Reaped::IdleInTransaction => "idle_in_transaction",
            Reaped::ServerIdle => "server_idle",
            Reaped::ServerLifetime => "server_lifetime",
        }
    }
}

const REAP_REASONS: [Reaped; 4] = [
    Reaped::ClientIdle,
    Reaped::IdleInTransaction,
    Reaped::ServerIdle,
    Reaped::ServerLifetime,
];

/// The cap label values, in the order of [`crate::limits::CapKind`].
pub const CAP_LABELS: [&str; 4] = ["function", "account", "pool", "clients"];

/// The handles of one (account, function).
#[derive(Debug)]
pub struct FunctionMetrics {
    /// Transactions ended.
    pub transactions: Counter,
    /// Queries sent.
    pub queries: Counter,
    /// Borrow waits.
    pub borrow_wait: Histogram,
    /// Transaction times.
    pub transaction_seconds: Histogram,
    /// Client connections: active, waiting, idle (set when scraped).
    pub clients: [Gauge; 3],
    /// Refusals by cap, in [`CAP_LABELS`] order (set when scraped).
    pub rejections: [Counter; 4],
}

/// The handles of one (database, user) pool.
#[derive(Debug)]
pub struct PoolMetrics {
    /// Logins completed.
    pub connects: Counter,
    /// Login times.
    pub connect_seconds: Histogram,
    /// Server connections lent out (set when scraped).
    pub active: Gauge,
    /// Server connections idle in the pool (set when scraped).
    pub idle: Gauge,
    /// pool.size (set when scraped).
    pub size: Gauge,
}

/// One broker's metrics: its recorder and the handles without a per-function owner.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    reaped: [Counter; 4],
    logins_in_flight: Gauge,
    backend: [Gauge; 3],
    errors: Mutex<HashMap<String, Counter>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A recorder with every metric described and the histogram buckets set.
    pub fn new() -> Metrics {
        let recorder = builder().build_recorder();
        for (name, help) in HELP {
            let (name, help) = (KeyName::from(*name), SharedString::from(*help));
            if name.as_str().ends_with("_seconds") {
                recorder.describe_histogram(name, Some(Unit::Seconds), help);
            } else if name.as_str().ends_with("_total") {
                recorder.describe_counter(name, None, help);
            } else {
                recorder.describe_gauge(name, None, help);
            }
        }
        let errors = crate::error::client::BROKER_SQLSTATES
            .iter()
            .map(|&code| {
                (
                    code.to_owned(),
                    counter(&recorder, ERRORS, &[("sqlstate", code)]),
                )
            })
            .collect();
        let reaped = REAP_REASONS.map(|r| counter(&recorder, REAPED, &[("reason", r.as_str())]));
        Metrics {
            handle: recorder.handle(),
            reaped,
            logins_in_flight: recorder.register_gauge(&Key::from_name(LOGINS_IN_FLIGHT), &METADATA),
            backend: [BACKEND_CONNECTIONS, BACKEND_MAX_CONNECTIONS, BACKEND_READY]
                .map(|name| recorder.register_gauge(&Key::from_name(name), &METADATA)),
            errors: Mutex::new(errors),
            recorder,
        }
    }

    /// Registers the handles of (account, function).
    pub fn function(&self, account: &str, function: &str) -> FunctionMetrics {
        let l = Labeled {
            recorder: &self.recorder,
            labels: [("account", account), ("function", function)],
        };
        FunctionMetrics {
            transactions: l.counter(TRANSACTIONS, None),
            queries: l.counter(QUERIES, None),
            borrow_wait: l.histogram(BORROW_WAIT),
            transaction_seconds: l.histogram(TRANSACTION_SECONDS),
            clients: ["active", "waiting", "idle"]
                .map(|state| l.gauge(CLIENT_CONNECTIONS, Some(("state", state)))),
            rejections: CAP_LABELS.map(|cap| l.counter(CAP_REJECTIONS, Some(("cap", cap)))),
        }
    }

    /// Registers the handles of the (database, user) pool.
    pub fn pool(&self, database: &str, user: &str) -> PoolMetrics {
        let l = Labeled {
            recorder: &self.recorder,
            labels: [("database", database), ("user", user)],
        };
        PoolMetrics {
            connects: l.counter(SERVER_CONNECTS, None),
            connect_seconds: l.histogram(SERVER_CONNECT_SECONDS),
            active: l.gauge(SERVER_CONNECTIONS, Some(("state", "active"))),
            idle: l.gauge(SERVER_CONNECTIONS, Some(("state", "idle"))),
            size: l.gauge(POOL_SIZE, None),
        }
    }

    /// Counts a session pinned to its server connection.
    pub fn pinned(&self, account: &str, function: &str, reason: &'static str) {
        let labels = [
            ("account", account),
            ("function", function),
            ("reason", reason),
        ];
        counter(&self.recorder, PINNED, &labels).increment(1);
    }

    /// Counts connections the reaper ended.
    pub fn reaped(&self, reason: Reaped, count: u64) {
        self.reaped[reason as usize].increment(count);
    }

    /// Sets the gauge of server logins in flight.
    pub fn logins_in_flight(&self, count: usize) {
        self.logins_in_flight.set(count as f64);
    }

    /// Sets the backend's connections and max_connections, as the backend check saw them.
    pub fn backend_connections(&self, connections: f64, max_connections: f64) {
        self.backend[0].set(connections);
        self.backend[1].set(max_connections);
    }

    /// Sets whether the broker is ready (before a scrape).
    pub fn backend_ready(&self, ready: bool) {
        self.backend[2].set(if ready { 1.0 } else { 0.0 });
    }

    /// Counts an error sent to a client. Codes that are not five SQLSTATE characters, and
    /// codes past [`MAX_SQLSTATES`] distinct ones, are counted as [`OTHER`]; the broker's
    /// own codes are registered up front, so they always keep their label.
    pub fn error(&self, sqlstate: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counter) = errors.get(sqlstate) {
            counter.increment(1);
            return;
        }
        let valid = sqlstate.len() == 5
            && sqlstate
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        let label = if valid && errors.len() < MAX_SQLSTATES {
            sqlstate
        } else {
            OTHER
        };
        let counter = errors
            .entry(label.to_owned())
            .or_insert_with(|| counter(&self.recorder, ERRORS, &[("sqlstate", label)]));
        counter.increment(1);
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds pending histogram samples into their buckets, so memory stays bounded
    /// between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn builder() -> PrometheusBuilder {
    let buckets = [
        (BORROW_WAIT, BORROW_BUCKETS),
        (TRANSACTION_SECONDS, TRANSACTION_BUCKETS),
        (SERVER_CONNECT_SECONDS, CONNECT_BUCKETS),
    ];
    buckets
        .into_iter()
        .fold(PrometheusBuilder::new(), |builder, (name, values)| {
            // Only an empty bucket list is refused, and these are constants.
            builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), values)
                .unwrap_or_else(|_| unreachable!("bucket lists are not empty"))
        })
}

/// Registers metrics of one label pair (account and function, database and user), with
/// one more label where a metric has it.
struct Labeled<'a> {
    recorder: &'a PrometheusRecorder,
    labels: [(&'static str, &'a str); 2],
}

type Extra<'a> = Option<(&'static str, &'a str)>;

impl Labeled<'_> {
    fn key(&self, name: &'static str, extra: Extra<'_>) -> Key {
        let [a, b] = self.labels;
        match extra {
            Some(c) => key(name, &[a, b, c]),
            None => key(name, &[a, b]),
        }
    }

    fn counter(&self, name: &'static str, extra: Extra<'_>) -> Counter {
        (self.recorder).register_counter(&self.key(name, extra), &METADATA)
    }

    fn gauge(&self, name: &'static str, extra: Extra<'_>) -> Gauge {
        (self.recorder).register_gauge(&self.key(name, extra), &METADATA)
    }

    fn histogram(&self, name: &'static str) -> Histogram {
        (self.recorder).register_histogram(&self.key(name, None), &METADATA)
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

fn counter(
    recorder: &PrometheusRecorder,
    name: &'static str,
    labels: &[(&'static str, &str)],
) -> Counter {
    recorder.register_counter(&key(name, labels), &METADATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_buckets_and_bounded_sqlstates() {
        let metrics = Metrics::new();
        let f = metrics.function("acme", "orders");
        f.transactions.increment(3);
        f.borrow_wait.record(0.0002);
        metrics.reaped(Reaped::ServerIdle, 2);
        for i in 0..MAX_SQLSTATES + 10 {
            metrics.error(&format!("{:05}", i));
        }
        metrics.error("not a code");
        let text = metrics.render();
        assert!(text.contains("# HELP pgbroker_transactions_total Transactions"));
        assert!(
            text.contains("pgbroker_transactions_total{account=\"acme\",function=\"orders\"} 3")
        );
        assert!(text.contains(
            "pgbroker_borrow_wait_seconds_bucket{account=\"acme\",function=\"orders\",le=\"0.00025\"} 1"
        ));
        assert!(text.contains("pgbroker_reaped_total{reason=\"server_idle\"} 2"));
        metrics.error("53300");
        assert!(text.contains("pgbroker_errors_total{sqlstate=\"00005\"} 1"));
        let codes = text
            .lines()
            .filter(|l| l.starts_with("pgbroker_errors_total{"))
            .count();
        assert_eq!(codes, MAX_SQLSTATES + 1);
        let text = metrics.render();
        assert!(
            text.contains("pgbroker_errors_total{sqlstate=\"53300\"} 1"),
            "the broker's own codes keep their label past the bound"
        );
    }
}
