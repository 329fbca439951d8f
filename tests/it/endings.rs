//! How sessions end: a client killed mid-transaction, a backend that is down, and a
//! graceful shutdown.

use std::time::Duration;

use pgbroker::config::OnClientDisconnect;
use tokio_postgres::{Client, NoTls};

use crate::common::{config_for, eventually, scalar, sqlstate, until_running, Harness};

/// A client whose connection can be cut without a goodbye (no Terminate).
async fn killable(h: &Harness) -> (Client, tokio::task::JoinHandle<()>) {
    let (client, connection) = tokio_postgres::connect(&h.url("app", "app", "victim"), NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, task)
}

async fn killed_mid_transaction(policy: OnClientDisconnect, running_query: bool) {
    let h = Harness::start(|c| {
        c.pool.size = 1;
        c.pool.borrow_timeout = Duration::from_secs(10);
        c.pool.on_client_disconnect = policy;
    })
    .await;
    let direct = h.direct().await;
    direct.batch_execute("CREATE TABLE k (id int PRIMARY KEY, v int); INSERT INTO k VALUES (1, 0); GRANT ALL ON k TO app").await.unwrap();
    let (victim, connection) = killable(&h).await;
    victim
        .batch_execute("BEGIN; INSERT INTO k VALUES (2, 0); UPDATE k SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    if running_query {
        // A query that runs until its client is killed.
        tokio::spawn(async move {
            let _ = victim.simple_query("SELECT pg_sleep(30)").await;
        });
        until_running(&direct, "SELECT pg_sleep(30)").await;
    } else {
        std::mem::forget(victim);
    }
    connection.abort();
    let other = h.connect().await;
    let started = std::time::Instant::now();
    assert_eq!(
        scalar(&other, "SELECT count(*) FROM k").await,
        "1",
        "the insert was not committed"
    );
    assert_eq!(
        scalar(&other, "SELECT v FROM k WHERE id = 1 FOR UPDATE NOWAIT").await,
        "0",
        "no lock left behind"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the server came back within the drain bound"
    );
    assert!(h.server_connections(&direct).await <= 1);
    let locks = direct.query_one("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'app' AND l.locktype = 'transactionid'", &[]).await.unwrap();
    assert_eq!(locks.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn client_killed_mid_transaction_reuse() {
    killed_mid_transaction(OnClientDisconnect::Reuse, false).await;
}

#[tokio::test]
async fn client_killed_mid_query_reuse() {
    killed_mid_transaction(OnClientDisconnect::Reuse, true).await;
}

#[tokio::test]
async fn client_killed_mid_transaction_close() {
    killed_mid_transaction(OnClientDisconnect::Close, true).await;
}

#[tokio::test]
async fn backend_down_at_connect() {
    let cluster = crate::common::cluster(10).await;
    let mut config = config_for(&cluster);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    config.backend.port = port;
    drop(closed);
    let h = Harness::with_config(cluster, config).await;
    let err = h
        .connect_as("app", "app", "t")
        .await
        .err()
        .expect("backend is down");
    assert_eq!(sqlstate(&err), "08001", "{err}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(
        message.starts_with(&format!(
            "pgbroker: cannot connect to backend 127.0.0.1:{port}: "
        )),
        "{message}"
    );
}

#[tokio::test]
async fn backend_restart_mid_session() {
    let mut h = Harness::start(|_| {}).await;
    let client = h.connect().await;
    assert_eq!(scalar(&client, "SELECT 1").await, "1");
    h.cluster.stop().unwrap();
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.as_db_error()
            .is_none_or(|e| e.code().code().starts_with("08") || e.code().code().starts_with("57")),
        "{err}"
    );
    h.cluster.restart().unwrap();
    let fresh = h.connect().await;
    assert_eq!(scalar(&fresh, "SELECT 'back'").await, "back");
}

#[tokio::test]
async fn graceful_shutdown() {
    let mut h = Harness::start(|c| c.listen.shutdown_timeout = Duration::from_secs(10)).await;
    let direct = h.direct().await;
    direct
        .batch_execute("CREATE TABLE done (x int); GRANT ALL ON done TO app")
        .await
        .unwrap();
    let idle = h.connect().await;
    let busy = h.connect().await;
    busy.batch_execute("BEGIN; INSERT INTO done VALUES (1)")
        .await
        .unwrap();
    // The transaction goes on only once the shutdown has begun and been checked.
    let (go, shutting_down) = tokio::sync::oneshot::channel();
    let finisher = tokio::spawn(async move {
        shutting_down.await.unwrap();
        // pg_sleep: the transaction is still busy for a while during the drain.
        let committed = busy.batch_execute("SELECT pg_sleep(0.2); COMMIT").await;
        (committed, busy)
    });
    h.shutdown.cancel();
    // The idle session is ended with 57P01 right away: while the drain still waits for the
    // transaction this test holds open, well within the 10s grace period.
    let ended = eventually(Duration::from_secs(5), || async { idle.is_closed() }).await;
    assert!(ended, "idle session ended");
    assert!(
        idle.simple_query("SELECT 1").await.is_err(),
        "idle session ended"
    );
    // New clients are turned away.
    assert!(h.connect_as("app", "app", "late").await.is_err());
    // The transaction in flight finishes and commits.
    go.send(()).unwrap();
    let (committed, busy) = finisher.await.unwrap();
    committed.unwrap();
    assert_eq!(scalar(&direct, "SELECT count(*) FROM done").await, "1");
    h.stop().await;
    assert!(
        busy.simple_query("SELECT 1").await.is_err(),
        "ended after its transaction"
    );
}
