//! `[auth]` (auth_query): users not listed in the config are looked up in Postgres by the
//! broker's own auth user (md5 hashes and SCRAM verifiers, the latter logged in to Postgres
//! by SCRAM passthrough); a wrong password, an unknown user and an expired password
//! (`VALID UNTIL` in the past) are refused with the one 28P01 a client gets for all of them.

use std::time::Duration;

use pgbroker::config::AuthQuery;

use crate::common::{self, scalar, sqlstate, Harness};

/// A broker in front of a cluster where `fn_md5` (md5 password `pw1`) exists only in
/// Postgres, and the auth user `pgbroker_auth` may read pg_shadow.
async fn looked_up() -> Harness {
    let cluster = common::cluster(20).await;
    let su = cluster.superuser("postgres").await.unwrap();
    su.batch_execute("CREATE ROLE pgbroker_auth LOGIN SUPERUSER PASSWORD 'authpw'")
        .await
        .unwrap();
    cluster
        .create_md5_login("fn_md5", "pw1", "app")
        .await
        .unwrap();
    cluster
        .create_login("fn_scram", "pw2", "app")
        .await
        .unwrap();
    let mut config = common::config_for(&cluster);
    config.auth = Some(AuthQuery {
        user: "pgbroker_auth".into(),
        password: "authpw".into(),
        cache_ttl: Duration::from_millis(200),
        negative_ttl: Duration::from_millis(200),
        ..AuthQuery::default()
    });
    Harness::with_config(cluster, config).await
}

#[tokio::test]
async fn a_user_known_only_to_postgres_logs_in_and_bad_logins_read_the_same() {
    let h = looked_up().await;
    let client = h
        .connect_as("fn_md5", "pw1", "fn")
        .await
        .expect("looked up");
    assert_eq!(scalar(&client, "SELECT current_user").await, "fn_md5");
    let wrong = h
        .connect_as("fn_md5", "nope", "fn")
        .await
        .expect_err("wrong password");
    let unknown = h
        .connect_as("nobody", "pw1", "fn")
        .await
        .expect_err("unknown user");
    for error in [&wrong, &unknown] {
        assert_eq!(sqlstate(error), "28P01");
    }
    let words = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .unwrap()
            .message()
            .replace("nobody", "fn_md5")
    };
    assert_eq!(words(&wrong), words(&unknown), "the same words for both");
    // A SCRAM verifier from pg_shadow: the client's proof gives the key the pool logs in
    // with (SCRAM passthrough), so no password of this user is known to the broker at all.
    let scram = h
        .connect_as("fn_scram", "pw2", "fn")
        .await
        .expect("SCRAM, looked up");
    assert_eq!(scalar(&scram, "SELECT current_user").await, "fn_scram");
    // The configured user still logs in as before.
    assert_eq!(scalar(&h.connect().await, "SELECT 1").await, "1");
}

#[tokio::test]
async fn an_expired_password_is_refused() {
    let h = looked_up().await;
    let su = h.direct().await;
    drop(
        h.connect_as("fn_md5", "pw1", "fn")
            .await
            .expect("valid today"),
    );
    su.batch_execute("ALTER ROLE fn_md5 VALID UNTIL '2000-01-01'")
        .await
        .unwrap();
    // Deliberate: the cached secret stays good for cache_ttl (200ms), then is looked up again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expired = h
        .connect_as("fn_md5", "pw1", "fn")
        .await
        .expect_err("expired");
    assert_eq!(sqlstate(&expired), "28P01");
    su.batch_execute("ALTER ROLE fn_md5 VALID UNTIL 'infinity'")
        .await
        .unwrap();
    let back = common::eventually(Duration::from_secs(5), || async {
        h.connect_as("fn_md5", "pw1", "fn").await.is_ok()
    })
    .await;
    assert!(back, "valid again once the negative entry expires");
}
