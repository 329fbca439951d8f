//! Storm protection: a cold-start burst bigger than Postgres takes, logins bounded, refused
//! logins retried; a full waiting queue refuses at once; a killed client's server is reused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::config::{Account, AuthMethod, Function};
use tokio_postgres::NoTls;

use crate::common::{scalar, Harness};

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
            c.limits.default_function_concurrency = 200;
            c.limits.default_account_concurrency = 200;
            c.limits.default_function_waiting = 0;
        })
        .await,
    );
    let tasks: Vec<_> = (0..150)
        .map(|i| {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let client = h.connect_as("app", "app", "burst").await?;
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
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
    let sleeper =
        tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let _ = waiting.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The queue (max_waiting = 1) has room again: a new waiter is queued, not refused.
    let newcomer = h.connect_as("app", "app", "w").await.unwrap();
    let asked = tokio::spawn(async move { scalar(&newcomer, "SELECT 'newcomer'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
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
