//! Named prepared statements in transaction pooling: tracked per client, prepared on demand
//! on whichever server connection serves it, shared between clients, bounded per server,
//! without pinning, and with the replies and errors Postgres itself would give.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{scalar, Harness};
use crate::observe::Scrape;
use crate::raw::{
    bind, cleartext_one_server, close_statement, describe_statement, execute, field, message,
    parse, raw_login, read_message, sync,
};
use crate::tools::{failures, processed, run};

/// What a client sees of a reply up to `until_ready` ReadyForQuery messages: each
/// message's tag, with the SQLSTATE after an 'E' and the first column after a 'D', e.g.
/// "1 2 D:42 C Z".
async fn replies(raw: &mut TcpStream, until_ready: usize) -> String {
    let seen = crate::differential::collect(raw, crate::differential::Until::Ready(until_ready));
    let seen = seen.await;
    assert!(!seen.contains("<STALL>"), "reply stalled: {seen}");
    // Command tags left out: "C[SELECT 1]" reads "C".
    let mut depth = 0;
    seen.chars()
        .filter(|&c| {
            depth += i32::from(c == '[');
            let keep = depth == 0;
            depth -= i32::from(c == ']');
            keep
        })
        .collect()
}

async fn send(raw: &mut TcpStream, parts: &[Vec<u8>]) {
    raw.write_all(&parts.concat()).await.unwrap();
}

const STATEMENTS: &str = "pgbroker_prepared_statements_total";

/// Scrapes the broker's metrics after checking that no session was pinned.
pub async fn unpinned(h: &Harness) -> Scrape {
    let s = Scrape::take(h.metrics.unwrap()).await;
    let pins = s.sum("pgbroker_pinned_sessions_total", &[]);
    assert_eq!(pins, 0.0, "no session was pinned");
    s
}

fn named_statements(c: &mut pgbroker::Config) {
    cleartext_one_server(c);
    c.pool.borrow_timeout = Duration::from_secs(2);
}

#[tokio::test]
async fn describe_before_bind_and_a_statement_shared_by_two_clients() {
    let h = Harness::start(named_statements).await;
    let mut a = raw_login(&h).await;
    let sql = "SELECT $1::int + 1";
    send(
        &mut a,
        &[parse("s1", sql, &[23]), describe_statement("s1"), sync()],
    )
    .await;
    assert_eq!(replies(&mut a, 1).await, "1 t T Z");
    // Another client, same text under its own name: the server has it; answered in place.
    let mut b = raw_login(&h).await;
    send(
        &mut b,
        &[
            parse("mine", sql, &[23]),
            bind("mine", &["41"]),
            execute(),
            sync(),
        ],
    )
    .await;
    assert_eq!(replies(&mut b, 1).await, "1 2 D:42 C Z");
    // The first client's name still stands, in a later transaction.
    send(&mut a, &[bind("s1", &["1"]), execute(), sync()]).await;
    assert_eq!(replies(&mut a, 1).await, "2 D:2 C Z");
    // Postgres holds one statement for both names.
    send(
        &mut a,
        &[message(
            b'Q',
            b"SELECT count(*) FROM pg_prepared_statements\0",
        )],
    )
    .await;
    assert_eq!(replies(&mut a, 1).await, "T D:1 C Z");
}

#[tokio::test]
async fn a_parse_error_mid_pipeline_reaches_the_client_in_its_place() {
    let h = Harness::start(named_statements).await;
    let mut raw = raw_login(&h).await;
    send(&mut raw, &[parse("a", "SELECT 1", &[]), sync()]).await;
    assert_eq!(replies(&mut raw, 1).await, "1 Z");
    an_error_skips_to_the_sync(&mut raw).await;
    skipped_parses_prepared_nothing(&mut raw).await;
    a_reused_name_fails_in_its_place(&mut raw).await;
    close_frees_the_name(&mut raw).await;
}

/// A failed Parse mid-pipeline: what came before it ran, its error comes in its place,
/// the rest up to Sync is skipped, and after the Sync the server works again.
async fn an_error_skips_to_the_sync(raw: &mut TcpStream) {
    send(
        raw,
        &[
            bind("a", &[]),
            execute(),
            parse("b", "SELEC oops", &[]),
            bind("b", &[]),
            execute(),
            parse("c", "SELECT 3", &[]),
            parse("a2", "SELECT 1", &[]),
            sync(),
            parse("d", "SELECT 4", &[]),
            bind("d", &[]),
            execute(),
            sync(),
        ],
    )
    .await;
    assert_eq!(replies(raw, 2).await, "2 D:1 C E:42601 Z 1 2 D:4 C Z");
}

/// What the error skipped was never prepared, as in Postgres: c and a2 do not exist, and
/// their names are free.
async fn skipped_parses_prepared_nothing(raw: &mut TcpStream) {
    send(raw, &[bind("c", &[]), execute(), sync()]).await;
    assert_eq!(replies(raw, 1).await, "E:26000 Z");
    let again = [
        parse("c", "SELECT 33", &[]),
        parse("a2", "SELECT 1", &[]),
        sync(),
    ];
    send(raw, &again).await;
    assert_eq!(replies(raw, 1).await, "1 1 Z");
}

/// Reusing a name without Close is Postgres's error, at its place in the pipeline.
async fn a_reused_name_fails_in_its_place(raw: &mut TcpStream) {
    let pipeline = [
        bind("c", &[]),
        execute(),
        parse("a", "SELECT 5", &[]),
        bind("a", &[]),
        execute(),
        sync(),
    ];
    send(raw, &pipeline).await;
    assert_eq!(replies(raw, 1).await, "2 D:33 C E:42P05 Z");
}

/// Close frees the name.
async fn close_frees_the_name(raw: &mut TcpStream) {
    let pipeline = [
        close_statement("a"),
        parse("a", "SELECT 5", &[]),
        bind("a", &[]),
        execute(),
        sync(),
    ];
    send(raw, &pipeline).await;
    assert_eq!(replies(raw, 1).await, "3 1 2 D:5 C Z");
}

#[tokio::test]
async fn duplicate_name_error_reads_as_postgres_words_it() {
    let h = Harness::start(named_statements).await;
    let mut raw = raw_login(&h).await;
    send(
        &mut raw,
        &[
            parse("dup", "SELECT 1", &[]),
            sync(),
            parse("dup", "SELECT 1", &[]),
            sync(),
        ],
    )
    .await;
    let mut messages = Vec::new();
    loop {
        let (tag, body) = read_message(&mut raw).await;
        messages.push((tag, body));
        if messages.iter().filter(|(t, _)| *t == b'Z').count() == 2 {
            break;
        }
    }
    let error = &messages
        .iter()
        .find(|(t, _)| *t == b'E')
        .expect("an error")
        .1;
    assert_eq!(field(error, b'C'), "42P05");
    assert_eq!(
        field(error, b'M'),
        "prepared statement \"dup\" already exists"
    );
    assert_eq!(field(error, b'S'), "ERROR");
}

#[tokio::test]
async fn flush_without_sync_answers_as_asyncpg_expects() {
    let h = Harness::start(named_statements).await;
    let mut raw = raw_login(&h).await;
    let flush = message(b'H', &[]);
    send(
        &mut raw,
        &[
            parse("__asyncpg_1__", "SELECT $1::text", &[0]),
            describe_statement("__asyncpg_1__"),
            flush.clone(),
        ],
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(read_message(&mut raw).await.0);
    }
    assert_eq!(seen, b"1tT", "answers flushed without a Sync");
    send(
        &mut raw,
        &[bind("__asyncpg_1__", &["hi"]), execute(), sync()],
    )
    .await;
    assert_eq!(replies(&mut raw, 1).await, "2 D:hi C Z");
    // A second client's Parse of the same text, flushed: answered by the broker at once.
    let mut other = raw_login(&h).await;
    send(
        &mut other,
        &[
            parse("x", "SELECT $1::text", &[0]),
            describe_statement("x"),
            flush,
        ],
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(read_message(&mut other).await.0);
    }
    assert_eq!(seen, b"1tT");
    send(&mut other, &[bind("x", &["there"]), execute(), sync()]).await;
    assert_eq!(replies(&mut other, 1).await, "2 D:there C Z");
}

#[tokio::test]
async fn deallocate_all_clears_the_clients_names_and_keeps_others_working() {
    let h = Harness::start(named_statements).await;
    let mut a = raw_login(&h).await;
    let mut b = raw_login(&h).await;
    send(&mut b, &[parse("shared", "SELECT 7", &[]), sync()]).await;
    assert_eq!(replies(&mut b, 1).await, "1 Z");
    send(
        &mut a,
        &[
            parse("s", "SELECT 7", &[]),
            sync(),
            message(b'Q', b"DEALLOCATE ALL\0"),
        ],
    )
    .await;
    assert_eq!(replies(&mut a, 2).await, "1 Z C Z");
    send(&mut a, &[bind("s", &[]), execute(), sync()]).await;
    assert_eq!(
        replies(&mut a, 1).await,
        "E:26000 Z",
        "gone, as in Postgres"
    );
    send(
        &mut a,
        &[
            parse("s", "SELECT 8", &[]),
            bind("s", &[]),
            execute(),
            sync(),
        ],
    )
    .await;
    assert_eq!(replies(&mut a, 1).await, "1 2 D:8 C Z", "the name is free");
    // The other client's statement was deallocated on the server too: prepared again.
    send(&mut b, &[bind("shared", &[]), execute(), sync()]).await;
    assert_eq!(replies(&mut b, 1).await, "2 D:7 C Z");
}

#[tokio::test]
async fn tokio_postgres_clients_share_one_server_without_pinning() {
    // One server, a short borrow timeout, and sessions far longer than it: a pinned client
    // would starve the others into 53300.
    let h = Harness::start(|c| {
        c.pool.size = 1;
        c.pool.borrow_timeout = Duration::from_millis(300);
    })
    .await;
    let sum = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for id in 0..4i32 {
        let client = h.connect_as("app", "app", "driver").await.unwrap();
        let sum = Arc::clone(&sum);
        tasks.push(tokio::spawn(async move {
            let typed = client
                .prepare(
                    "SELECT $1::int4 + 1, $2::text || '!', $3::float8 * 2, NOT $4::bool, $5::bytea",
                )
                .await
                .unwrap();
            for round in 0..40i32 {
                let row = client
                    .query_one(
                        &typed,
                        &[
                            &(id * 100 + round),
                            &format!("c{id}"),
                            &1.5f64,
                            &true,
                            &vec![1u8, 2],
                        ],
                    )
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(0), id * 100 + round + 1);
                assert_eq!(row.get::<_, String>(1), format!("c{id}!"));
                assert_eq!(row.get::<_, f64>(2), 3.0);
                assert!(!row.get::<_, bool>(3));
                assert_eq!(row.get::<_, Vec<u8>>(4), vec![1u8, 2]);
                // query() prepares an unnamed-or-named statement of its own each time.
                let n: i64 = client
                    .query_one("SELECT $1::int8 * 2", &[&i64::from(round)])
                    .await
                    .unwrap()
                    .get(0);
                sum.fetch_add(n, Ordering::Relaxed);
                // A deliberate pause between rounds: the four sessions interleave on the one
                // server and last far longer than the borrow timeout.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        sum.load(Ordering::Relaxed),
        4 * (0..40).map(|r| r * 2).sum::<i64>()
    );
    let s = unpinned(&h).await;
    assert!(s.sum(STATEMENTS, &[("event", "prepared")]) >= 2.0);
    assert!(s.sum(STATEMENTS, &[("event", "reused")]) >= 3.0);
}

#[tokio::test]
async fn a_statement_outlives_its_server_connection() {
    let h = Harness::start(|c| c.pool.size = 1).await;
    let client = h.connect().await;
    let statement = client.prepare("SELECT $1::int4 * 3").await.unwrap();
    let row = client.query_one(&statement, &[&2i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 6);
    let direct = h.direct().await;
    direct
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'")
        .await
        .unwrap();
    // Once the backend is gone, the next borrow finds its connection dead and logs in a
    // new one, which has not prepared the statement: the broker prepares it there before
    // the Bind. (A query sent while the backend is still exiting would end this session.)
    let gone = crate::common::eventually(Duration::from_secs(10), || async {
        h.server_connections(&direct).await == 0
    })
    .await;
    assert!(gone, "the terminated backend exits");
    let row = client.query_one(&statement, &[&5i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 15);
}

#[tokio::test]
async fn each_server_keeps_a_bounded_lru_of_statements() {
    let h = Harness::start(|c| {
        c.pool.size = 1;
        c.pool.prepared_statements_per_server = 250;
    })
    .await;
    let client = h.connect().await;
    let mut statements = Vec::new();
    for i in 0..1000 {
        let sql = format!("SELECT {i}::int4 + $1::int4");
        let statement = client.prepare(&sql).await.unwrap();
        let row = client.query_one(&statement, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
        statements.push(statement);
    }
    let held = scalar(&client, "SELECT count(*) FROM pg_prepared_statements").await;
    assert_eq!(held, "250", "the server keeps the 250 most recently used");
    // The evicted ones are prepared again when used.
    for (i, statement) in statements.iter().enumerate().step_by(37) {
        let row = client.query_one(statement, &[&0i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i32::try_from(i).unwrap());
    }
    let s = Scrape::take(h.metrics.unwrap()).await;
    assert!(
        s.sum(
            "pgbroker_prepared_statements_total",
            &[("event", "evicted")]
        ) >= 750.0
    );
    let held = scalar(&client, "SELECT count(*) FROM pg_prepared_statements").await;
    assert_eq!(held, "250");
}

#[tokio::test]
async fn pgbench_prepared_mode_through_a_small_pool() {
    let h = Harness::start(|c| c.pool.size = 8).await;
    let (ok, out) = run(&h, "pgbench", &["-i", "-s", "1", "-q"], "").await;
    assert!(ok, "pgbench -i: {out}");
    let direct = h.direct().await;
    let peak = Arc::new(AtomicI64::new(0));
    let done = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), done.clone());
        let direct = h.direct().await;
        tokio::spawn(async move {
            while !done.is_cancelled() {
                let row = direct
                    .query_one("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' AND application_name <> 'pgbroker health check'", &[])
                    .await
                    .unwrap();
                peak.fetch_max(row.get(0), Ordering::Relaxed);
                // A deliberate sampling pace while pgbench runs.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // pgbench prepares a statement at its first use with a blocking PQprepare that stalls
    // every client of its thread: with TPC-B's multi-statement transactions, a thread whose
    // clients hold servers mid-transaction would wait on itself (as through any pooler), so
    // that script runs a thread per client.
    for mode in [&["-S", "-j", "2"][..], &["-j", "50"]] {
        let mut args = vec!["-n", "-M", "prepared", "-c", "50", "-t", "40"];
        args.extend_from_slice(mode);
        let (ok, out) = run(&h, "pgbench", &args, "").await;
        assert!(ok, "pgbench -M prepared {mode:?}: {out}");
        assert_eq!(failures(&out), Some(0), "{out}");
        assert_eq!(processed(&out), Some(2000), "{out}");
    }
    done.cancel();
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        (1..=8).contains(&peak),
        "server connections peaked at {peak}"
    );
    assert!(h.server_connections(&direct).await <= 8);
    unpinned(&h).await;
}

#[tokio::test]
async fn extra_float_digits_follows_its_client_without_pinning() {
    // pgjdbc sends this on every connect: carried like a startup setting, not pinned.
    let h = Harness::start(|c| c.pool.size = 1).await;
    let (a, b) = (h.connect().await, h.connect().await);
    a.simple_query("SET extra_float_digits = 3").await.unwrap();
    assert_eq!(scalar(&b, "SHOW extra_float_digits").await, "1");
    assert_eq!(scalar(&a, "SHOW extra_float_digits").await, "3");
    assert_eq!(scalar(&b, "SHOW extra_float_digits").await, "1");
    unpinned(&h).await;
}

#[tokio::test]
async fn a_client_cannot_hold_statements_without_bound() {
    let h = Harness::start(named_statements).await;
    let mut raw = raw_login(&h).await;
    let max = pgbroker::backend::ClientStatements::MAX_COUNT;
    let mut batch: Vec<Vec<u8>> = (0..max)
        .map(|i| parse(&format!("s{i}"), "SELECT 1", &[]))
        .collect();
    batch.push(sync());
    send(&mut raw, &batch).await;
    let reply = replies(&mut raw, 1).await;
    assert_eq!(reply.matches('1').count(), max, "every Parse answered");
    send(
        &mut raw,
        &[
            parse("one_more", "SELECT 1", &[]),
            bind("s0", &[]),
            execute(),
            sync(),
        ],
    )
    .await;
    assert_eq!(replies(&mut raw, 1).await, "E:54000 Z");
    send(
        &mut raw,
        &[
            close_statement("s0"),
            parse("one_more", "SELECT 2", &[]),
            bind("one_more", &[]),
            execute(),
            sync(),
        ],
    )
    .await;
    assert_eq!(replies(&mut raw, 1).await, "3 1 2 D:2 C Z");
}
