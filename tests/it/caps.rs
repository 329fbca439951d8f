//! Concurrency caps per function and account, client caps, unknown functions, and every
//! release path giving the slots back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::config::{Account, Function, UnknownFunctions};
use tokio_postgres::NoTls;

use crate::common::{
    cluster, config_for, connect_url, eventually, scalar, sqlstate, until_running, Harness,
};
use crate::observe::http_get;

fn acme(c: &mut pgbroker::Config, account_cap: usize, functions: &[(&str, usize)]) {
    c.users[0].account = Some("acme".into());
    let mut account = Account {
        max_concurrency: Some(account_cap),
        ..Account::default()
    };
    for (name, cap) in functions {
        account.functions.insert(
            (*name).into(),
            Function {
                max_concurrency: Some(*cap),
                ..Function::default()
            },
        );
    }
    c.accounts.insert("acme".into(), account);
}

/// The largest number of spans (of one function, or all with `None`) open at one instant.
async fn peak(direct: &tokio_postgres::Client, function: Option<&str>) -> i64 {
    let filter = function.map_or(String::new(), |f| format!("WHERE s.fn = '{f}'"));
    let sql = format!(
        "WITH spans AS (SELECT s.fn, s.at AS t0, e.at AS t1 FROM starts s JOIN ends e USING (tx) {filter}) \
         SELECT coalesce(max((SELECT count(*) FROM spans b WHERE b.t0 <= a.t0 AND a.t0 < b.t1)), 0) FROM spans a"
    );
    direct.query_one(&sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn function_and_account_caps_hold_under_load() {
    let h = Arc::new(
        Harness::start(|c| {
            acme(c, 4, &[("f2", 2), ("f3", 3)]);
            c.pool.size = 10;
            c.pool.borrow_timeout = Duration::from_secs(60);
        })
        .await,
    );
    let direct = h.direct().await;
    direct
        .batch_execute(
            "CREATE TABLE starts (fn text, tx bigint, at timestamptz); CREATE TABLE ends (tx bigint, at timestamptz); \
             GRANT ALL ON starts, ends TO app",
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let h = Arc::clone(&h);
        let function = if i % 2 == 0 { "f2" } else { "f3" };
        tasks.push(tokio::spawn(async move {
            let client = h.connect_as("app", "app", function).await.unwrap();
            for _ in 0..4 {
                // pg_sleep: each transaction lasts long enough to overlap the others, so
                // the caps, not luck, bound how many run at once.
                let sql = format!(
                    "BEGIN; INSERT INTO starts VALUES ('{function}', txid_current(), clock_timestamp()); \
                     SELECT pg_sleep(0.05); INSERT INTO ends VALUES (txid_current(), clock_timestamp()); COMMIT"
                );
                client.batch_execute(&sql).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (f2, f3, all) = (
        peak(&direct, Some("f2")).await,
        peak(&direct, Some("f3")).await,
        peak(&direct, None).await,
    );
    assert!(
        f2 <= 2 && f3 <= 3 && all <= 4,
        "peaks f2={f2} f3={f3} account={all}"
    );
    assert_eq!(all, 4, "the account reaches its cap");
}

#[tokio::test]
async fn a_capped_borrow_times_out_with_53300_and_the_session_goes_on() {
    let h = Harness::start(|c| {
        acme(c, 10, &[("solo", 1)]);
        c.pool.borrow_timeout = Duration::from_millis(500);
    })
    .await;
    let a = h.connect_as("app", "app", "solo").await.unwrap();
    let b = h.connect_as("app", "app", "solo").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    let started = Instant::now();
    let err = b.simple_query("SELECT 1").await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(sqlstate(&err), "53300");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(
        message.starts_with(
            "pgbroker: function \"solo\" of account \"acme\" reached its concurrency cap of 1"
        ),
        "{message}"
    );
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(scalar(&b, "SELECT 'b goes on'").await, "b goes on");
    // Another function of the account is not blocked by solo's cap.
    a.batch_execute("BEGIN").await.unwrap();
    let other = h.connect_as("app", "app", "other").await.unwrap();
    assert_eq!(scalar(&other, "SELECT 'free'").await, "free");
}

#[tokio::test]
async fn client_caps_and_unknown_functions() {
    let h = Harness::start(|c| {
        acme(c, 10, &[("listed", 5)]);
        c.accounts
            .get_mut("acme")
            .unwrap()
            .functions
            .get_mut("listed")
            .unwrap()
            .max_clients = Some(2);
        c.limits.unknown_functions = UnknownFunctions::Deny;
    })
    .await;
    let _one = h.connect_as("app", "app", "listed").await.unwrap();
    let _two = h.connect_as("app", "app", "listed").await.unwrap();
    let err = h
        .connect_as("app", "app", "listed")
        .await
        .err()
        .expect("third client refused");
    assert_eq!(sqlstate(&err), "53300");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("client cap of 2"),
        "{err}"
    );
    let err = h
        .connect_as("app", "app", "stranger")
        .await
        .err()
        .expect("unknown function refused");
    assert_eq!(sqlstate(&err), "28000");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("\"stranger\""),
        "{err}"
    );
}

/// After each way a transaction or session can end, the function's single slot is free.
#[tokio::test]
async fn every_release_path_gives_the_slot_back() {
    let h = Harness::start(|c| {
        acme(c, 1, &[("one", 1)]);
        c.pool.borrow_timeout = Duration::from_secs(3);
        c.reaper.idle_in_transaction_timeout = Duration::from_millis(500);
        c.reaper.interval = Duration::from_millis(100);
    })
    .await;
    let probe = h.connect_as("app", "app", "one").await.unwrap();
    let check = |what: &'static str| {
        let probe = &probe;
        async move {
            assert_eq!(
                scalar(probe, "SELECT 1").await,
                "1",
                "slot free after {what}"
            );
        }
    };
    let c = h.connect_as("app", "app", "one").await.unwrap();
    c.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();
    check("commit").await;
    assert!(c.batch_execute("BEGIN; SELECT 1/0").await.is_err());
    c.batch_execute("ROLLBACK").await.unwrap();
    check("error and rollback").await;
    let token = c.cancel_token();
    // A query that runs until cancelled.
    let sleeper =
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    until_running(&h.direct().await, "SELECT pg_sleep(30)").await;
    token.cancel_query(NoTls).await.unwrap();
    assert!(sleeper.await.unwrap().is_err());
    check("cancel").await;
    let (killed, connection) = tokio_postgres::connect(&h.url("app", "app", "one"), NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    killed.batch_execute("BEGIN; SELECT 1").await.unwrap();
    task.abort();
    check("client killed mid-transaction").await;
    let frozen = h.connect_as("app", "app", "one").await.unwrap();
    frozen.batch_execute("BEGIN").await.unwrap();
    let reaped = eventually(Duration::from_secs(5), || async { frozen.is_closed() }).await;
    assert!(
        reaped,
        "the reaper ended the session idle in its transaction"
    );
    check("idle in transaction reaped").await;
    let pinned = h.connect_as("app", "app", "one").await.unwrap();
    pinned.batch_execute("SET work_mem = '8MB'").await.unwrap();
    drop(pinned);
    check("pinned session ended").await;
}

#[tokio::test]
async fn the_user_can_name_the_function() {
    let h = Harness::start(|c| {
        acme(c, 10, &[("app", 5)]);
        c.accounts
            .get_mut("acme")
            .unwrap()
            .functions
            .get_mut("app")
            .unwrap()
            .max_clients = Some(1);
        c.limits.function_from = pgbroker::config::FunctionFrom::User;
    })
    .await;
    let _one = h.connect_as("app", "app", "whatever").await.unwrap();
    let err = h
        .connect_as("app", "app", "something_else")
        .await
        .err()
        .expect("same function");
    assert_eq!(sqlstate(&err), "53300");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("function \"app\""),
        "{err}"
    );
}

/// A broker on the shipped config.toml (its listener and backend aside), in front of a fresh
/// cluster, and its pool.size.
async fn shipped_harness() -> (Harness, usize) {
    let cluster = cluster(100).await;
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let mut config = pgbroker::Config::load(std::path::Path::new(shipped)).unwrap();
    let test = config_for(&cluster);
    (config.listen, config.backend) = (test.listen, test.backend);
    let size = config.pool.size;
    (Harness::with_config(cluster, config).await, size)
}

/// With the shipped config.toml, one application whose clients send no application_name
/// (most Lambda functions) runs on every server connection of the pool, without a 53300,
/// and counts as the function named after its user.
#[tokio::test]
async fn with_the_shipped_defaults_a_lone_application_gets_the_whole_pool() {
    let (h, size) = shipped_harness().await;
    let url = format!(
        "host=127.0.0.1 port={} user=app password=app dbname=app",
        h.addr.port()
    );
    const SLEEP: &str = "SELECT pg_sleep(1.5)";
    let tasks: Vec<_> = (0..2 * size)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = connect_url(&url).await.unwrap();
                client.simple_query(SLEEP).await.map(drop)
            })
        })
        .collect();
    let direct = h.direct().await;
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = '{SLEEP}'"
    );
    let peak = std::cell::Cell::new(0);
    let all_busy = eventually(Duration::from_secs(5), || async {
        let now: usize = scalar(&direct, &running).await.parse().unwrap();
        peak.set(peak.get().max(now));
        now == size
    })
    .await;
    assert!(
        all_busy,
        "at most {} of the pool's {size} server connections ran at once",
        peak.get()
    );
    one_uncapped_function_named_after_its_user(&h, size).await;
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(h.server_connections(&direct).await <= size as i64);
}

/// /status while `2 * size` clients of user app without application_name run: one account
/// and one function, `app`, neither capped, half of its transactions active.
async fn one_uncapped_function_named_after_its_user(h: &Harness, size: usize) {
    let (_, body) = http_get(h.metrics.unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let account = &status["accounts"][0];
    assert_eq!(
        (&account["account"], &account["cap"]),
        (&"default".into(), &serde_json::Value::Null)
    );
    let functions = account["functions"].as_array().unwrap();
    assert_eq!(functions.len(), 1, "{functions:?}");
    let f = &functions[0];
    assert_eq!(
        (&f["function"], &f["cap"], &f["clients"]),
        (&"app".into(), &serde_json::Value::Null, &(2 * size).into()),
        "no application_name: the function is the user's name"
    );
    assert_eq!(
        (&f["active"], &f["waiting"]),
        (&size.into(), &size.into()),
        "the other half waits for the pool, not for a cap"
    );
}
