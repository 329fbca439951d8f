//! The reaper: idle clients (57P05), clients idle in a transaction (25P03), idle and aged
//! server connections, warm spares.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::common::{eventually, scalar, server_replaced, Harness};

fn quick_reaper(c: &mut pgbroker::Config) {
    c.reaper.client_idle_timeout = Duration::from_secs(1);
    c.reaper.idle_in_transaction_timeout = Duration::from_secs(1);
    c.reaper.interval = Duration::from_millis(100);
}

/// A client whose connection task reports how the connection ended.
async fn watched(
    h: &Harness,
    app: &str,
) -> (Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (client, connection) = tokio_postgres::connect(&h.url("app", "app", app), NoTls)
        .await
        .unwrap();
    (client, tokio::spawn(connection))
}

/// The SQLSTATE the server (the broker) ended a watched connection with.
async fn ended_with(handle: JoinHandle<Result<(), tokio_postgres::Error>>) -> String {
    let result = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("ended")
        .unwrap();
    let err = result.expect_err("ended by an error");
    err.as_db_error()
        .map(|e| e.code().code().to_owned())
        .unwrap_or_else(|| format!("{err}"))
}

#[tokio::test]
async fn idle_clients_are_reaped_and_talkers_survive() {
    let h = Harness::start(quick_reaper).await;
    let mut idle = Vec::new();
    for i in 0..20 {
        idle.push(watched(&h, &format!("idle{i}")).await);
    }
    let talker = h.connect().await;
    for _ in 0..15 {
        assert_eq!(scalar(&talker, "SELECT 1").await, "1");
        // A deliberate pace: the talker is never silent for the 1s idle timeout, over a span
        // (15 × 150ms) past it, while the idle clients stay silent and are reaped.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for (client, handle) in idle {
        assert_eq!(ended_with(handle).await, "57P05");
        assert!(client.is_closed());
    }
    assert_eq!(scalar(&talker, "SELECT 'alive'").await, "alive");
}

#[tokio::test]
async fn a_long_query_is_not_idleness() {
    let h = Harness::start(quick_reaper).await;
    let client = h.connect().await;
    // pg_sleep: queries longer than the 1s idle timeouts (in a transaction, then out).
    client
        .batch_execute("BEGIN; SELECT pg_sleep(1.5)")
        .await
        .unwrap();
    // Silence starts when the result arrived, not when the query was sent.
    assert_eq!(scalar(&client, "SELECT 'in time'").await, "in time");
    client
        .batch_execute("COMMIT; SELECT pg_sleep(1.5)")
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SELECT 'still here'").await, "still here");
}

#[tokio::test]
async fn idle_in_transaction_is_rolled_back_and_reaped() {
    let h = Harness::start(|c| {
        quick_reaper(c);
        c.reaper.client_idle_timeout = Duration::from_secs(60);
    })
    .await;
    let direct = h.direct().await;
    direct.batch_execute("CREATE TABLE it (id int PRIMARY KEY, v int); INSERT INTO it VALUES (1, 0); GRANT ALL ON it TO app").await.unwrap();
    let (client, handle) = watched(&h, "frozen").await;
    client
        .batch_execute("BEGIN; INSERT INTO it VALUES (2, 0); UPDATE it SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(ended_with(handle).await, "25P03");
    let other = h.connect().await;
    assert_eq!(
        scalar(&other, "SELECT count(*) FROM it").await,
        "1",
        "the insert was rolled back"
    );
    assert_eq!(
        scalar(&other, "SELECT v FROM it WHERE id = 1 FOR UPDATE NOWAIT").await,
        "0",
        "no lock left"
    );
}

#[tokio::test]
async fn idle_server_connections_drain_to_min_idle() {
    let h = Harness::start(|c| {
        quick_reaper(c);
        c.reaper.client_idle_timeout = Duration::from_secs(60);
        c.pool.size = 4;
        c.pool.min_idle = 1;
        c.pool.server_idle_timeout = Duration::from_secs(1);
    })
    .await;
    let direct = h.direct().await;
    let clients = futures_util::future::join_all((0..4).map(|_| h.connect())).await;
    // pg_sleep: the four queries overlap, so each takes a server connection of its own.
    futures_util::future::join_all(
        clients
            .iter()
            .map(|c| c.simple_query("SELECT pg_sleep(0.3)")),
    )
    .await;
    assert_eq!(h.server_connections(&direct).await, 4);
    let drained = eventually(Duration::from_secs(5), || async {
        h.server_connections(&direct).await == 1
    })
    .await;
    assert!(drained, "idle server connections drained to min_idle");
    assert_eq!(scalar(&clients[0], "SELECT 1").await, "1");
}

#[tokio::test]
async fn aged_server_connections_are_replaced_and_spares_kept_warm() {
    let h = Harness::start(|c| {
        quick_reaper(c);
        c.reaper.client_idle_timeout = Duration::from_secs(60);
        c.pool.size = 3;
        c.pool.min_idle = 2;
        c.pool.server_lifetime = Duration::from_secs(1);
    })
    .await;
    let direct = h.direct().await;
    let client = h.connect().await;
    let replaced = server_replaced(&client, &direct, Duration::from_secs(4)).await;
    assert!(
        replaced,
        "the connection older than server_lifetime was closed and replaced"
    );
    // The pool is in use: it keeps min_idle spares.
    let warm = eventually(Duration::from_secs(3), || async {
        h.server_connections(&direct).await >= 2
    })
    .await;
    assert!(warm, "min_idle spares");
}

#[tokio::test]
async fn a_client_frozen_mid_copy_is_reaped_and_nothing_committed() {
    let h = Harness::start(|c| {
        quick_reaper(c);
        c.reaper.client_idle_timeout = Duration::from_secs(60);
    })
    .await;
    let direct = h.direct().await;
    direct
        .batch_execute("CREATE TABLE cf (x int); GRANT ALL ON cf TO app")
        .await
        .unwrap();
    let (client, handle) = watched(&h, "frozen-copy").await;
    let sink = client.copy_in("COPY cf FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.feed(bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();
    sink.flush().await.unwrap();
    // The container freezes here: no CopyDone, no more data. (tokio-postgres, busy in
    // COPY, reports the broker's 25P03 as a closed connection.)
    let ended = ended_with(handle).await;
    assert!(ended == "25P03" || ended == "connection closed", "{ended}");
    assert_eq!(scalar(&direct, "SELECT count(*) FROM cf").await, "0");
}
