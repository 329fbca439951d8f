//! SCRAM passthrough: a user configured with only its SCRAM secret (copied from pg_authid)
//! logs in to Postgres with the ClientKey its clients' SCRAM logins reveal; a secret that is
//! not the server's gets 28P01 with a hint, never a hang.

use std::collections::HashSet;
use std::time::Duration;

use pgbroker::auth::ScramSecret;
use pgbroker::config::User;
use pgbroker::sandbox::Cluster;

use crate::common::{config_for, eventually, scalar, server_replaced, sqlstate, Harness};
use crate::observe::http_get;

/// Bound on anything that could hang if passthrough went wrong.
const NO_HANG: Duration = Duration::from_secs(20);

/// app's SCRAM verifier as the server stores it.
async fn server_verifier(cluster: &Cluster) -> String {
    let direct = cluster.superuser("app").await.unwrap();
    let row = direct
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
            &[],
        )
        .await
        .unwrap();
    let verifier: String = row.get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    verifier
}

/// A broker whose only user is app, with `secret` as its password.
async fn broker_with_secret(cluster: Cluster, secret: &str, pool_size: usize) -> Harness {
    let mut config = config_for(&cluster);
    config.users = vec![User {
        name: "app".into(),
        password: secret.into(),
        password_file: None,
        account: None,
        auth_method: None,
    }];
    config.pool.size = pool_size;
    config.pool.server_lifetime = Duration::from_secs(1);
    config.reaper.interval = Duration::from_millis(100);
    config.backend.health_interval = Duration::from_millis(200);
    Harness::with_config(cluster, config).await
}

#[tokio::test]
async fn a_scram_secret_from_pg_authid_logs_in_with_the_recovered_key() {
    let cluster = crate::common::cluster(20).await;
    let verifier = server_verifier(&cluster).await;
    let h = broker_with_secret(cluster, &verifier, 2).await;
    let direct = h.direct().await;

    // Four clients at once over a pool of two: each authenticates with SCRAM, and the
    // pool logs in both server connections with the key, whichever client's it was.
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let url = h.url("app", "app", &format!("c{i}"));
            tokio::spawn(async move {
                let client = crate::common::connect_url(&url).await.unwrap();
                client.batch_execute("BEGIN").await.unwrap();
                let pid = scalar(&client, "SELECT pg_backend_pid()").await;
                scalar(&client, "SELECT pg_sleep(0.3)").await;
                client.batch_execute("COMMIT").await.unwrap();
                pid
            })
        })
        .collect();
    let mut pids = HashSet::new();
    for task in tasks {
        let pid = tokio::time::timeout(NO_HANG, task).await.unwrap().unwrap();
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 2, "both server connections logged in: {pids:?}");

    // The clients are gone; a new one stays while server_lifetime retires its server
    // connection: the pool logs in again with the key, no client authenticating meanwhile.
    let client = h.connect().await;
    let replaced = server_replaced(&client, &direct, NO_HANG).await;
    assert!(replaced, "a new server connection logged in with the key");
    assert_eq!(scalar(&client, "SELECT current_user").await, "app");

    // The backend check does not log in as a SCRAM-only user (its key may not be known
    // yet): it connects over TCP, and readiness holds.
    let metrics = h.metrics.unwrap();
    let ready = eventually(NO_HANG, || async {
        http_get(metrics, "/readyz").await.0 == 200
    });
    assert!(ready.await, "/readyz");
    let (_, status) = http_get(metrics, "/status").await;
    assert!(status.contains("TCP connect only"), "{status}");
    assert!(
        !status.contains(&verifier),
        "the secret stays out of /status"
    );
}

/// The 28P01 with the hint that a mismatched secret must get, within [`NO_HANG`].
async fn assert_mismatch(h: &Harness, password: &str) {
    let refused = tokio::time::timeout(NO_HANG, h.connect_as("app", password, "t"))
        .await
        .expect("refused in time, not hung")
        .err()
        .expect("the server refuses the key");
    assert_eq!(sqlstate(&refused), "28P01", "{refused}");
    let db = refused.as_db_error().unwrap();
    assert!(db.message().starts_with("pgbroker: "), "{}", db.message());
    assert!(
        db.hint().unwrap_or_default().contains("pg_authid"),
        "{db:?}"
    );
}

#[tokio::test]
async fn a_secret_that_is_not_the_servers_gets_28p01_with_a_hint() {
    // Same password, but the broker's own salt: refused before any proof is sent.
    let cluster = crate::common::cluster(20).await;
    let elsewhere = pgbroker::auth::scram_secret("app", 4096);
    let h = broker_with_secret(cluster, &elsewhere, 2).await;
    assert_mismatch(&h, "app").await;
    // A wrong password is still the client's own failure, checked first.
    let err = h.connect_as("app", "bad", "t").await.err().expect("bad");
    assert_eq!(sqlstate(&err), "28P01");
    assert!(err.as_db_error().unwrap().hint().is_none(), "{err}");
    drop(h);

    // The server's salt and iteration count, another password: the server refuses the proof.
    let cluster = crate::common::cluster(20).await;
    let server = ScramSecret::parse(&server_verifier(&cluster).await).unwrap();
    let other = ScramSecret::derive("other", &server.salt, server.iterations).to_string();
    let h = broker_with_secret(cluster, &other, 2).await;
    assert_mismatch(&h, "other").await;
}
