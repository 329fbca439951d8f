//! Session state under transaction pooling: settings follow the client from server to
//! server; state that would leak pins the client; session mode resets with DISCARD ALL.

use std::time::Duration;

use crate::common::{scalar, session_mode, sqlstate, Harness};

fn one_server(c: &mut pgbroker::Config) {
    c.pool.size = 1;
    c.pool.borrow_timeout = Duration::from_millis(500);
}

#[tokio::test]
async fn set_of_a_reported_parameter_follows_the_client() {
    let h = Harness::start(one_server).await;
    let a = h.connect_as("app", "app", "alpha").await.unwrap();
    let b = h.connect_as("app", "app", "beta").await.unwrap();
    let zone = scalar(&b, "SHOW TimeZone").await;
    assert_ne!(zone, "Asia/Tokyo");
    a.simple_query("SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    // b shares the only server connection but keeps its own settings.
    assert_eq!(scalar(&b, "SHOW TimeZone").await, zone);
    assert_eq!(scalar(&b, "SHOW application_name").await, "beta");
    assert_eq!(scalar(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(scalar(&a, "SHOW application_name").await, "alpha");
    assert_eq!(scalar(&b, "SELECT current_setting('TimeZone')").await, zone);
}

#[tokio::test]
async fn set_and_listen_pin_but_set_local_does_not() {
    for (sql, pins) in [
        ("SET work_mem = '8MB'", true),
        ("LISTEN chan", true),
        ("SELECT pg_advisory_lock(1)", true),
        ("CREATE TEMP TABLE t (x int)", true),
        ("SELECT set_config('app.tenant', '42', false)", true),
        ("SET local.tenant = 42", true),
        ("SELECT 1 INTO TEMP t2", true),
        ("BEGIN; SET LOCAL work_mem = '8MB'; COMMIT", false),
        ("SELECT pg_advisory_xact_lock(1)", false),
    ] {
        let h = Harness::start(one_server).await;
        let a = h.connect().await;
        let b = h.connect().await;
        a.simple_query(sql).await.unwrap();
        let other = b.simple_query("SELECT 1").await;
        if pins {
            // The only server connection stays with `a`: b's borrow times out with 53300.
            let err = other.expect_err(sql);
            assert_eq!(sqlstate(&err), "53300", "{sql}");
            assert!(err
                .as_db_error()
                .unwrap()
                .message()
                .starts_with("pgbroker: "));
            // b's session is still usable once a is gone.
            drop(a);
            // a's server comes back once its session is cleaned up (DISCARD ALL).
            let mut freed = false;
            for _ in 0..20 {
                if b.simple_query("SELECT 2").await.is_ok() {
                    freed = true;
                    break;
                }
            }
            assert!(
                freed,
                "{sql}: the pinned server came back after its client left"
            );
            // ... and the pinned state did not leak to it.
            assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB", "{sql}");
        } else {
            other.unwrap_or_else(|e| panic!("{sql} must not pin: {e}"));
            assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB", "{sql}");
        }
    }
}

#[tokio::test]
async fn pinned_client_keeps_its_session_state() {
    let h = Harness::start(|c| c.pool.size = 3).await;
    let a = h.connect().await;
    a.simple_query("SET work_mem = '9MB'").await.unwrap();
    let others: Vec<_> = futures_util::future::join_all((0..4).map(|_| h.connect())).await;
    for _ in 0..5 {
        for o in &others {
            assert_eq!(scalar(o, "SHOW work_mem").await, "4MB");
        }
        assert_eq!(scalar(&a, "SHOW work_mem").await, "9MB");
    }
}

#[tokio::test]
async fn session_mode_resets_with_discard_all() {
    let h = Harness::start(|c| {
        one_server(c);
        session_mode(c);
        c.pool.borrow_timeout = Duration::from_secs(5);
    })
    .await;
    let a = h.connect().await;
    let pid = scalar(&a, "SELECT pg_backend_pid()").await;
    a.batch_execute("SET work_mem = '7MB'; CREATE TEMP TABLE scratch (x int); PREPARE p AS SELECT 1; LISTEN chan")
        .await
        .unwrap();
    drop(a);
    let b = h.connect().await;
    assert_eq!(
        scalar(&b, "SELECT pg_backend_pid()").await,
        pid,
        "the same server connection"
    );
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(
        scalar(&b, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
    assert_eq!(
        scalar(&b, "SELECT count(*) FROM pg_listening_channels()").await,
        "0"
    );
    assert_eq!(
        scalar(
            &b,
            "SELECT count(*) FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't'"
        )
        .await,
        "0"
    );
}

/// Connection string with `options` (startup settings the server does not report).
fn with_options(h: &Harness, app: &str, options: &str) -> String {
    format!("{} options='{options}'", h.url("app", "app", app))
}

#[tokio::test]
async fn startup_options_are_replayed_and_survive_another_clients_reset() {
    let h = Harness::start(one_server).await;
    let opts = "-c statement_timeout=1234 -c default_transaction_read_only=on";
    let a = crate::common::connect_url(&with_options(&h, "a", opts))
        .await
        .unwrap();
    assert_eq!(scalar(&a, "SHOW statement_timeout").await, "1234ms");
    assert_eq!(scalar(&a, "SHOW default_transaction_read_only").await, "on");
    let err = a
        .simple_query("CREATE TABLE nope (x int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006", "read-only transaction");
    a.simple_query("RESET statement_timeout").await.unwrap();
    let plain = h.connect().await;
    assert_eq!(
        scalar(&plain, "SHOW statement_timeout").await,
        "0",
        "a's settings did not leak"
    );
    let b = crate::common::connect_url(&with_options(&h, "b", "-c statement_timeout=1234"))
        .await
        .unwrap();
    assert_eq!(scalar(&b, "SHOW statement_timeout").await, "1234ms");
    assert_eq!(
        scalar(&b, "SHOW default_transaction_read_only").await,
        "off"
    );
    a.simple_query("DISCARD ALL").await.unwrap();
    assert_eq!(scalar(&b, "SHOW statement_timeout").await, "1234ms");
}

#[tokio::test]
async fn invalid_startup_setting_fails_the_session_clearly() {
    let h = Harness::start(|_| {}).await;
    let client =
        crate::common::connect_url(&with_options(&h, "bad", "-c TimeZone=Mars/Olympus_Mons"))
            .await
            .unwrap();
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err}");
    let db = err.as_db_error().unwrap();
    assert!(
        db.message()
            .starts_with("pgbroker: a session parameter was rejected"),
        "{}",
        db.message()
    );
    // The server connection went back clean: others are unaffected.
    assert_eq!(scalar(&h.connect().await, "SELECT 'fine'").await, "fine");
}
