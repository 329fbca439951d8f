//! Storm protection: a cold-start burst bigger than Postgres takes, logins bounded, refused
//! logins retried; a full waiting queue refuses at once; a killed client's server is reused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::config::{Account, AuthMethod, Function};
use tokio_postgres::NoTls;

use crate::common::{eventually, scalar, until_running, Harness};
use crate::observe::Scrape;

/// Clients log in with cleartext: hundreds of SCRAM handshakes in a debug build would
/// measure PBKDF2, not the broker.
fn cheap_logins(c: &mut pgbroker::Config) {
    c.users[0].auth_method = Some(AuthMethod::Password);
}

#[tokio::test]
async fn a_burst_past_max_connections_finishes_without_errors() {
    let h = Arc::new(
        Harness::start_with(40, |c| {
            cheap_logins(c);
            c.pool.size = 60;
            c.pool.borrow_timeout = Duration::from_secs(60);
            c.limits.default_function_waiting = 0;
        })
        .await,
    );
    let tasks: Vec<_> = (0..150)
        .map(|i| {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let client = h.connect_as("app", "app", "burst").await?;
                // pg_sleep: each invocation holds its server a moment, so the burst overlaps.
                client
                    .simple_query(&format!("SELECT pg_sleep(0.05), {i}"))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e.to_string());
        }
    }
    assert!(
        errors.is_empty(),
        "{} client errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let peak = h.pools.gate().peak();
    assert!(
        peak <= 8,
        "logins in flight peaked at {peak} (max_concurrent_logins = 8)"
    );
}

#[tokio::test]
async fn a_full_waiting_queue_refuses_at_once() {
    let h = Arc::new(
        Harness::start(|c| {
            cheap_logins(c);
            c.users[0].account = Some("acme".into());
            let mut acme = Account::default();
            acme.functions.insert(
                "q".into(),
                Function {
                    max_concurrency: Some(1),
                    max_waiting: Some(100),
                    ..Function::default()
                },
            );
            c.accounts.insert("acme".into(), acme);
            c.pool.borrow_timeout = Duration::from_secs(20);
        })
        .await,
    );
    let holder = h.connect_as("app", "app", "q").await.unwrap();
    holder.batch_execute("BEGIN").await.unwrap();
    let clients =
        futures_util::future::join_all((0..300).map(|_| h.connect_as("app", "app", "q"))).await;
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let c = c.unwrap();
            tokio::spawn(async move {
                let result = c.simple_query("SELECT 1").await;
                (
                    result
                        .map(|_| ())
                        .map_err(|e| e.as_db_error().map(|d| d.message().to_owned())),
                    Instant::now(),
                )
            })
        })
        .collect();
    // 100 are queued once the 200 past the queue's room have been refused.
    let queue_full = eventually(Duration::from_secs(10), || async {
        tasks.iter().filter(|t| t.is_finished()).count() >= 200
    })
    .await;
    assert!(queue_full, "200 refused while the holder kept the slot");
    holder.batch_execute("COMMIT").await.unwrap();
    let (mut refused, mut served) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (Ok(()), _) => served += 1,
            (Err(Some(m)), at) if m.contains("transactions waiting") => {
                assert!(
                    at - started < Duration::from_millis(1400),
                    "refused at once, not after a wait"
                );
                refused += 1;
            }
            (Err(other), _) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!((refused, served), (200, 100));
}

#[tokio::test]
async fn a_client_killed_in_pg_sleep_leaves_its_server_to_the_next_client() {
    let h = Harness::start(|c| c.pool.size = 1).await;
    let (victim, connection) = tokio_postgres::connect(&h.url("app", "app", "victim"), NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let pid = scalar(&victim, "SELECT pg_backend_pid()").await;
    // A query that runs until its client is killed.
    let sleeper =
        tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    until_running(&h.direct().await, "SELECT pg_sleep(30)").await;
    task.abort();
    let _ = sleeper.await;
    let logins = h.pools.gate().total();
    let next = h.connect().await;
    assert_eq!(
        scalar(&next, "SELECT pg_backend_pid()").await,
        pid,
        "the same backend, reused"
    );
    assert_eq!(h.pools.gate().total(), logins, "no new server login");
}

/// Waits (up to 10s) until function `w` has `n` transactions waiting, as /metrics shows.
async fn queued(h: &Harness, n: u32) -> bool {
    let metrics = h.metrics.expect("metrics endpoint on");
    eventually(Duration::from_secs(10), || async {
        let s = Scrape::take(metrics).await;
        let labels = [("function", "w"), ("state", "waiting")];
        s.sum("pgbroker_client_connections", &labels) == f64::from(n)
    })
    .await
}

#[tokio::test]
async fn a_waiter_whose_client_left_leaves_the_queue() {
    let h = Harness::start(|c| {
        c.users[0].account = Some("acme".into());
        let mut acme = Account::default();
        acme.functions.insert(
            "w".into(),
            Function {
                max_concurrency: Some(1),
                max_waiting: Some(1),
                ..Function::default()
            },
        );
        c.accounts.insert("acme".into(), acme);
        c.pool.borrow_timeout = Duration::from_secs(10);
    })
    .await;
    let holder = h.connect_as("app", "app", "w").await.unwrap();
    holder.batch_execute("BEGIN").await.unwrap();
    let (ghost, connection) = tokio_postgres::connect(&h.url("app", "app", "w"), NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let waiting =
        tokio::spawn(async move { ghost.simple_query("SELECT 'ghost'").await.map(|_| ()) });
    assert!(queued(&h, 1).await, "the ghost waits in the queue");
    task.abort();
    let _ = waiting.await;
    assert!(queued(&h, 0).await, "the ghost left the queue");
    // The queue (max_waiting = 1) has room again: a new waiter is queued, not refused.
    let newcomer = h.connect_as("app", "app", "w").await.unwrap();
    let asked = tokio::spawn(async move { scalar(&newcomer, "SELECT 'newcomer'").await });
    assert!(queued(&h, 1).await, "the newcomer waits in the queue");
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(asked.await.unwrap(), "newcomer");
}

#[tokio::test]
async fn a_burst_of_connects_to_a_cold_pool_logs_in_once() {
    let h = Harness::start(cheap_logins).await;
    let names: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    let clients =
        futures_util::future::join_all(names.iter().map(|n| h.connect_as("app", "app", n))).await;
    assert!(clients.iter().all(Result::is_ok));
    assert_eq!(
        h.pools.gate().total(),
        1,
        "one login fetched the greeting's parameters for all"
    );
}
