//! One broker's metrics: the recorder, and the handles the rest of the broker records
//! through (the `metrics` facade's [`Counter`], [`Gauge`] and [`Histogram`]). The names,
//! help text and buckets live in `names.rs`, the only place they are spelled.
//!
//! Each [`crate::Broker`] owns its own Prometheus recorder instead of installing one
//! process-wide, so several brokers in one process (the tests, an embedding) each report
//! only their own traffic. Handles are registered once per label set (per function, per
//! pool) and kept by their owner, so recording on the hot path is an atomic add.
//!
//! Label values are bounded: functions by `limits.max_tracked_functions` (see
//! [`crate::limits`]), pools by the (database, user) pairs a login reached, SQLSTATEs by
//! [`MAX_SQLSTATES`].

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

mod names;
pub use names::*;
use names::{BORROW_BUCKETS, CONNECT_BUCKETS, HELP, TRANSACTION_BUCKETS};

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
    /// Named statements prepared, reused and evicted.
    pub statements: [Counter; 3],
}

impl PoolMetrics {
    /// Counts what happened to named statements.
    pub fn statements(&self, prepared: u64, reused: u64, evicted: u64) {
        for (counter, n) in self.statements.iter().zip([prepared, reused, evicted]) {
            if n > 0 {
                counter.increment(n);
            }
        }
    }
}

/// One broker's metrics: its recorder and the handles without a per-function owner.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    reaped: [Counter; 4],
    /// TLS handshakes: client ok, client error, server ok, server error.
    tls: [Counter; 4],
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
    /// A recorder that keeps no SQLSTATE's label past the bound (for tests of other parts).
    fn default() -> Self {
        Metrics::new(&[])
    }
}

impl Metrics {
    /// A recorder with every metric described and the histogram buckets set; `sqlstates`
    /// (the codes the broker itself chooses) always keep their label in `errors_total`.
    pub fn new(sqlstates: &[&str]) -> Metrics {
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
        let errors = (sqlstates.iter())
            .map(|&code| {
                (
                    code.to_owned(),
                    counter(&recorder, ERRORS, &[("sqlstate", code)]),
                )
            })
            .collect();
        let reaped = REAP_REASONS.map(|r| counter(&recorder, REAPED, &[("reason", r.as_str())]));
        let tls = [
            ("client", "ok"),
            ("client", "error"),
            ("server", "ok"),
            ("server", "error"),
        ]
        .map(|(side, outcome)| {
            counter(
                &recorder,
                TLS_HANDSHAKES,
                &[("side", side), ("outcome", outcome)],
            )
        });
        Metrics {
            handle: recorder.handle(),
            reaped,
            tls,
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
            statements: ["prepared", "reused", "evicted"]
                .map(|event| l.counter(STATEMENTS, Some(("event", event)))),
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

    /// Counts a TLS handshake: with a client (`server_side` false) or with Postgres.
    pub fn tls_handshake(&self, server_side: bool, ok: bool) {
        let index = usize::from(server_side) * 2 + usize::from(!ok);
        self.tls[index].increment(1);
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
mod tests;
