//! Observability: /metrics counts what a known workload did, gauges return to zero,
//! /readyz follows the backend, /status, and bounded function labels.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use pgbroker::config::{Account, AuthMethod, Function};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{connect_url, eventually, scalar, sqlstate, Harness};

/// GET `path` over plain HTTP/1.1; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let status = head.split(' ').nth(1).expect("status").parse().unwrap();
    (status, body.to_owned())
}

/// One scrape of /metrics: samples as (name, labels, value).
pub struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    pub async fn take(addr: SocketAddr) -> Scrape {
        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        Scrape(body.lines().filter_map(sample).collect())
    }

    /// The sum of `name`'s samples whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Whether `name` has any sample at all.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }

    /// The distinct values of `label` among `name`'s samples.
    pub fn values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect()
    }
}

/// Parses `name{a="x",b="y"} value` (label values here hold no quotes or commas).
fn sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect();
    Some((name.to_owned(), labels, value))
}

fn orders_capped(c: &mut pgbroker::Config) {
    let mut account = Account::default();
    account.functions.insert(
        "orders".into(),
        Function {
            max_concurrency: Some(1),
            max_clients: Some(2),
            max_waiting: None,
        },
    );
    c.accounts.insert("default".into(), account);
    c.users[0].account = Some("default".into());
    c.pool.borrow_timeout = Duration::from_millis(300);
}

const ORDERS: [(&str, &str); 2] = [("account", "default"), ("function", "orders")];

/// Client connections of `orders` in `state` (active, idle, waiting).
fn orders_clients(s: &Scrape, state: &str) -> f64 {
    let labels = [ORDERS[0], ORDERS[1], ("state", state)];
    s.sum("pgbroker_client_connections", &labels)
}

/// Server connections in `state` (active, idle).
fn servers(s: &Scrape, state: &str) -> f64 {
    s.sum("pgbroker_server_connections", &[("state", state)])
}

#[tokio::test]
async fn counters_match_a_known_workload_and_gauges_return_to_zero() {
    let h = Harness::start(orders_capped).await;
    let metrics = h.metrics.expect("metrics endpoint on");
    let (a, b) = orders_fills_its_caps(&h).await;
    let during = Scrape::take(metrics).await;
    assert_eq!(orders_clients(&during, "active"), 1.0);
    assert_eq!(orders_clients(&during, "idle"), 1.0);
    assert_eq!(orders_clients(&during, "waiting"), 0.0);
    assert_eq!(servers(&during, "active"), 1.0);
    a.batch_execute("COMMIT").await.unwrap();
    scalar(&b, "SELECT 3").await;
    let billing = billing_fails_once_then_works(&h).await;
    drop((a, b, billing));
    counters_match_the_workload(&Scrape::take(metrics).await);
    // The clients are gone: every client gauge returns to zero, the server sits idle.
    let settled = eventually(Duration::from_secs(5), || async {
        let s = Scrape::take(metrics).await;
        s.sum("pgbroker_client_connections", &[]) == 0.0
            && servers(&s, "active") == 0.0
            && servers(&s, "idle") == 1.0
    })
    .await;
    assert!(settled, "gauges did not return to zero");
}

/// orders runs 5 queries, then A holds its only slot in a transaction: B's query waits out
/// the borrow timeout (53300) and a third client is over its client cap (53300).
async fn orders_fills_its_caps(h: &Harness) -> (tokio_postgres::Client, tokio_postgres::Client) {
    let a = h.connect_as("app", "app", "orders").await.unwrap();
    for _ in 0..5 {
        scalar(&a, "SELECT 1").await;
    }
    a.batch_execute("BEGIN").await.unwrap();
    scalar(&a, "SELECT 2").await;
    let b = h.connect_as("app", "app", "orders").await.unwrap();
    let refused = b.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&refused), "53300");
    let third = h.connect_as("app", "app", "orders").await.unwrap_err();
    assert_eq!(sqlstate(&third), "53300", "orders allows two clients");
    (a, b)
}

/// billing runs a failing query (22012) and two good ones.
async fn billing_fails_once_then_works(h: &Harness) -> tokio_postgres::Client {
    let billing = h.connect_as("app", "app", "billing").await.unwrap();
    let error = billing.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&error), "22012");
    scalar(&billing, "SELECT 1").await;
    scalar(&billing, "SELECT 1").await;
    billing
}

/// The counters after both workloads, each to the unit.
fn counters_match_the_workload(s: &Scrape) {
    let billing = [("account", "default"), ("function", "billing")];
    // orders: 5 + BEGIN..COMMIT + B's SELECT; the refused SELECT never reached Postgres.
    assert_eq!(s.sum("pgbroker_transactions_total", &ORDERS), 7.0);
    assert_eq!(s.sum("pgbroker_queries_total", &ORDERS), 9.0);
    assert_eq!(s.sum("pgbroker_transactions_total", &billing), 3.0);
    assert_eq!(s.sum("pgbroker_queries_total", &billing), 3.0);
    assert_eq!(s.sum("pgbroker_transaction_seconds_count", &ORDERS), 7.0);
    // Every borrow is timed, the one that timed out too.
    assert_eq!(s.sum("pgbroker_borrow_wait_seconds_count", &ORDERS), 8.0);
    let cap = |c: &str| {
        s.sum(
            "pgbroker_cap_rejections_total",
            &[ORDERS[0], ORDERS[1], ("cap", c)],
        )
    };
    assert_eq!(
        (cap("function"), cap("account"), cap("pool"), cap("clients")),
        (1.0, 0.0, 0.0, 1.0)
    );
    assert_eq!(
        s.sum("pgbroker_errors_total", &[("sqlstate", "53300")]),
        2.0
    );
    assert_eq!(
        s.sum("pgbroker_errors_total", &[("sqlstate", "22012")]),
        1.0
    );
    assert_eq!(s.sum("pgbroker_pinned_sessions_total", &[]), 0.0);
    assert_eq!(s.sum("pgbroker_server_connects_total", &[]), 1.0);
    assert_eq!(s.sum("pgbroker_server_connect_seconds_count", &[]), 1.0);
    assert!(s.has("pgbroker_server_logins_in_flight"));
}

#[tokio::test]
async fn histograms_have_help_and_buckets_from_100_microseconds() {
    let h = Harness::start(|_| {}).await;
    let client = h.connect().await;
    scalar(&client, "SELECT 1").await;
    let (_, body) = http_get(h.metrics.unwrap(), "/metrics").await;
    for name in [
        "pgbroker_client_connections",
        "pgbroker_server_connections",
        "pgbroker_transactions_total",
        "pgbroker_queries_total",
        "pgbroker_borrow_wait_seconds",
        "pgbroker_transaction_seconds",
        "pgbroker_cap_rejections_total",
        "pgbroker_reaped_total",
        "pgbroker_server_connects_total",
        "pgbroker_server_connect_seconds",
        "pgbroker_server_logins_in_flight",
    ] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no help for {name}"
        );
    }
    assert!(body.contains("# TYPE pgbroker_borrow_wait_seconds histogram"));
    assert!(body.contains(
        "pgbroker_borrow_wait_seconds_bucket{account=\"app\",function=\"test\",le=\"0.0001\"}"
    ));
    assert!(
        body.contains(
            "pgbroker_borrow_wait_seconds_bucket{account=\"app\",function=\"test\",le=\"5\"}"
        ),
        "borrow wait buckets reach seconds"
    );
}

#[tokio::test]
async fn pinned_sessions_are_counted_by_reason() {
    let h = Harness::start(|_| {}).await;
    let client = h.connect_as("app", "app", "pinner").await.unwrap();
    client.batch_execute("LISTEN news").await.unwrap();
    scalar(&client, "SELECT 1").await;
    let s = Scrape::take(h.metrics.unwrap()).await;
    let labels = [("function", "pinner"), ("reason", "listen")];
    assert_eq!(s.sum("pgbroker_pinned_sessions_total", &labels), 1.0);
}

#[tokio::test]
async fn reaps_are_counted_by_reason() {
    let h = Harness::start(|c| {
        c.reaper.client_idle_timeout = Duration::from_millis(600);
        c.reaper.idle_in_transaction_timeout = Duration::from_millis(600);
        c.reaper.interval = Duration::from_millis(100);
        c.pool.server_idle_timeout = Duration::from_millis(800);
    })
    .await;
    let metrics = h.metrics.unwrap();
    let idle = h.connect().await;
    let in_tx = h.connect().await;
    in_tx.batch_execute("BEGIN").await.unwrap();
    scalar(&idle, "SELECT 1").await;
    let reaped = |s: &Scrape, r: &str| s.sum("pgbroker_reaped_total", &[("reason", r)]);
    let all_reaped = eventually(Duration::from_secs(10), || async {
        let s = Scrape::take(metrics).await;
        reaped(&s, "client_idle") == 1.0
            && reaped(&s, "idle_in_transaction") == 1.0
            && reaped(&s, "server_idle") == s.sum("pgbroker_server_connects_total", &[])
    })
    .await;
    let s = Scrape::take(metrics).await;
    assert!(
        all_reaped,
        "client_idle {} idle_in_transaction {} server_idle {} of {} logins",
        reaped(&s, "client_idle"),
        reaped(&s, "idle_in_transaction"),
        reaped(&s, "server_idle"),
        s.sum("pgbroker_server_connects_total", &[])
    );
    assert_eq!(reaped(&s, "server_lifetime"), 0.0);
    assert!(idle.is_closed() && in_tx.is_closed());
    let direct = h.direct().await;
    assert_eq!(h.server_connections(&direct).await, 0);
}

#[tokio::test]
async fn aged_server_connections_are_counted_as_server_lifetime() {
    let h = Harness::start(|c| {
        c.reaper.interval = Duration::from_millis(100);
        c.pool.server_lifetime = Duration::from_millis(500);
    })
    .await;
    let client = h.connect().await;
    scalar(&client, "SELECT 1").await;
    let metrics = h.metrics.unwrap();
    let aged = eventually(Duration::from_secs(10), || async {
        let s = Scrape::take(metrics).await;
        s.sum("pgbroker_reaped_total", &[("reason", "server_lifetime")]) == 1.0
    })
    .await;
    assert!(aged);
    let s = Scrape::take(metrics).await;
    assert_eq!(
        s.sum("pgbroker_reaped_total", &[("reason", "server_idle")]),
        0.0
    );
}

#[tokio::test]
async fn readyz_follows_the_backend() {
    let mut h = Harness::start(|c| c.backend.health_interval = Duration::from_millis(200)).await;
    let metrics = h.metrics.unwrap();
    let status_is = |want: u16| async move { http_get(metrics, "/readyz").await.0 == want };
    assert!(eventually(Duration::from_secs(5), || status_is(200)).await);
    // The check also reports how close Postgres is to its connection limit.
    let s = Scrape::take(metrics).await;
    assert_eq!(s.sum("pgbroker_backend_max_connections", &[]), 100.0);
    assert!(s.sum("pgbroker_backend_connections", &[]) >= 1.0);
    assert_eq!(s.sum("pgbroker_backend_ready", &[]), 1.0);
    h.cluster.stop().unwrap();
    assert!(eventually(Duration::from_secs(10), || status_is(503)).await);
    let s = Scrape::take(metrics).await;
    assert_eq!(s.sum("pgbroker_backend_ready", &[]), 0.0);
    let (_, reason) = http_get(metrics, "/readyz").await;
    assert!(reason.contains("backend check failed"), "{reason}");
    assert_eq!(
        http_get(metrics, "/healthz").await.0,
        200,
        "alive all along"
    );
    h.cluster.restart().unwrap();
    assert!(eventually(Duration::from_secs(10), || status_is(200)).await);
    // Clients work again. Shutdown turns readiness off while a transaction drains.
    let client = h.connect().await;
    client.batch_execute("BEGIN").await.unwrap();
    h.shutdown.cancel();
    let (status, body) = http_get(metrics, "/readyz").await;
    assert!(
        status == 503 && body.contains("shutting down"),
        "{status} {body}"
    );
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn status_is_a_json_snapshot() {
    let h = Harness::start(orders_capped).await;
    let client = h.connect_as("app", "app", "orders").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let (status, body) = http_get(h.metrics.unwrap(), "/status").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["uptime_seconds"].is_u64());
    let pool = &json["pools"][0];
    assert_eq!(
        (pool["database"].as_str(), pool["size"].as_u64()),
        (Some("app"), Some(4))
    );
    assert_eq!(
        (pool["in_use"].as_u64(), pool["idle"].as_u64()),
        (Some(1), Some(0))
    );
    let account = &json["accounts"][0];
    assert_eq!(account["account"], "default");
    assert_eq!(account["in_use"], 1);
    let orders = &account["functions"][0];
    assert_eq!(orders["function"], "orders");
    assert_eq!(
        (orders["cap"].as_u64(), orders["active"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(orders["clients"], 1);
    let s = Scrape::take(h.metrics.unwrap()).await;
    assert_eq!(s.sum("pgbroker_pool_size", &[("database", "app")]), 4.0);
    let (missing, _) = http_get(h.metrics.unwrap(), "/nothing").await;
    assert_eq!(missing, 404);
}

#[tokio::test]
async fn invented_application_names_share_the_other_label() {
    let h = Harness::start(|c| {
        c.limits.max_tracked_functions = 10;
        // Cleartext: 2,000 logins without 2,000 PBKDF2 runs in the client.
        c.users[0].auth_method = Some(AuthMethod::Password);
    })
    .await;
    let total = 2000;
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let url = |i: usize| h.url("app", "app", &format!("fn-{i}"));
            let urls: Vec<String> = (w..total).step_by(8).map(url).collect();
            tokio::spawn(async move {
                for url in urls {
                    let client = connect_url(&url).await.unwrap();
                    scalar(&client, "SELECT 1").await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let s = Scrape::take(h.metrics.unwrap()).await;
    let functions = s.values("pgbroker_transactions_total", "function");
    assert!(
        functions.len() <= 11,
        "{} labels: {functions:?}",
        functions.len()
    );
    assert!(functions.contains("other"));
    for name in [
        "pgbroker_client_connections",
        "pgbroker_borrow_wait_seconds_count",
        "pgbroker_cap_rejections_total",
    ] {
        assert!(s.values(name, "function").len() <= 11, "{name}");
    }
    assert_eq!(s.sum("pgbroker_transactions_total", &[]), total as f64);
}

#[tokio::test]
async fn dashboard_and_readme_alerts_use_only_exported_metrics() {
    let h = Harness::start(|_| {}).await;
    let client = h.connect().await;
    // Counters with a label from the event appear once there is one.
    assert!(client.simple_query("SELECT 1/0").await.is_err());
    client.batch_execute("LISTEN pinned").await.unwrap();
    let (_, body) = http_get(h.metrics.unwrap(), "/metrics").await;
    let exported: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["examples/grafana-dashboard.json", "README.md"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let mut used = 0;
        for (at, _) in text.match_indices("pgbroker_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name == "pgbroker_" || name.starts_with("pgbroker_auth") {
                continue;
            }
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exported.contains(base),
                "{file} uses {name}, which is not exported"
            );
            used += 1;
        }
        assert!(used > 5, "{file} names metrics");
    }
}

#[tokio::test]
async fn pipelined_transactions_are_each_timed() {
    let h = Harness::start(|_| {}).await;
    let client = h.connect_as("app", "app", "pipeline").await.unwrap();
    // Polled together, tokio-postgres sends them back to back on one connection.
    let queries =
        (0..50).map(|i| client.simple_query(if i % 2 == 0 { "SELECT 1" } else { "SELECT 2" }));
    for result in futures_util::future::join_all(queries).await {
        result.unwrap();
    }
    let s = Scrape::take(h.metrics.unwrap()).await;
    let f = [("function", "pipeline")];
    assert_eq!(s.sum("pgbroker_transactions_total", &f), 50.0);
    assert_eq!(s.sum("pgbroker_transaction_seconds_count", &f), 50.0);
}

#[tokio::test]
async fn invented_database_names_leave_no_labels() {
    let h = Harness::start(|_| {}).await;
    for i in 0..20 {
        let url = format!(
            "host={} port={} user=app password=app dbname=invented{i}",
            h.addr.ip(),
            h.addr.port()
        );
        assert_eq!(sqlstate(&connect_url(&url).await.unwrap_err()), "3D000");
    }
    scalar(&h.connect().await, "SELECT 1").await;
    let s = Scrape::take(h.metrics.unwrap()).await;
    for name in [
        "pgbroker_server_connections",
        "pgbroker_pool_size",
        "pgbroker_server_connects_total",
        "pgbroker_server_connect_seconds_count",
    ] {
        let databases = s.values(name, "database");
        assert_eq!(databases, BTreeSet::from(["app".to_owned()]), "{name}");
    }
}

#[tokio::test]
async fn the_endpoint_can_be_turned_off() {
    let h = Harness::start(|c| c.listen.metrics_addr = String::new()).await;
    assert!(h.metrics.is_none());
    scalar(&h.connect().await, "SELECT 1").await;
}
