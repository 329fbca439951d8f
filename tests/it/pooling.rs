//! Multiplexing: many clients over a bounded pool, never more server connections than the
//! pool size, and connection-per-transaction clients past the server's max_connections.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{scalar, Harness};

#[tokio::test]
async fn sixty_clients_through_a_pool_of_eight() {
    let h = Arc::new(
        Harness::start_with(30, |c| {
            c.pool.size = 8;
            c.pool.borrow_timeout = Duration::from_secs(30);
        })
        .await,
    );
    let direct = h.direct().await;
    direct
        .batch_execute("CREATE TABLE hits (client int, n int); GRANT ALL ON hits TO app")
        .await
        .unwrap();
    let mut clients = Vec::new();
    for i in 0..60 {
        clients.push(h.connect_as("app", "app", &format!("fn{i}")).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                // pg_sleep: each transaction holds its server a moment, so clients contend.
                client
                    .simple_query(&format!(
                        "BEGIN; INSERT INTO hits VALUES ({i}, {n}); SELECT pg_sleep(0.01); COMMIT"
                    ))
                    .await
                    .unwrap();
            }
            client
        }));
    }
    let mut peak = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        peak = peak.max(h.server_connections(&direct).await);
        // A deliberate sampling pace: the peak is sampled while the clients run, not awaited.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    assert!(
        (2..=8).contains(&peak),
        "server connections peaked at {peak}"
    );
    assert!(h.server_connections(&direct).await <= 8);
    let rows = direct
        .query_one("SELECT count(*) FROM hits", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 300);
    // Every client's application_name is its own, though they shared 8 servers.
    for (i, client) in clients.iter().enumerate().step_by(7) {
        assert_eq!(
            scalar(client, "SHOW application_name").await,
            format!("fn{i}")
        );
    }
}

#[tokio::test]
async fn connection_per_transaction_past_max_connections() {
    let h = Arc::new(Harness::start_with(20, |c| c.pool.size = 5).await);
    let direct = h.direct().await;
    let mut tasks = Vec::new();
    for worker in 0..10 {
        let h = Arc::clone(&h);
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                let client = h.connect_as("app", "app", "percall").await.unwrap();
                let got = scalar(&client, &format!("SELECT {worker} * 100 + {n}")).await;
                assert_eq!(got, (worker * 100 + n).to_string());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 100 client connections came and went over a server that takes 20 at most.
    assert!(h.server_connections(&direct).await <= 5);
}
