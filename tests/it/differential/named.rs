//! Differential scenarios of named statements (see [`super`]): each came from a review of
//! the broker's name translation and failed before its fix.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{check, collect, Step, Until};
use crate::common::Harness;
use crate::raw::{
    bind, close_statement, execute, flush, message, parse, query, raw_login, read_message, sync,
};

use Until::{Msgs, Ready};

/// DEALLOCATE of one name (psycopg 3 with libpq < 17 evicting from its cache).
#[tokio::test]
async fn r4_deallocate_one_name() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![query("DEALLOCATE s1")], Ready(1)),
        Step(
            0,
            vec![
                parse("s1", "SELECT 2", &[]),
                bind("s1", &[]),
                execute(),
                sync(),
            ],
            Ready(1),
        ),
    ];
    check(250, 1, &steps).await;
}

/// A DISCARD ALL that fails (inside a transaction block) leaves the client's names.
#[tokio::test]
async fn r5_failed_discard_all_clears_names() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![query("BEGIN")], Ready(1)),
        Step(0, vec![query("DISCARD ALL")], Ready(1)),
        Step(0, vec![query("ROLLBACK")], Ready(1)),
        Step(0, vec![bind("s1", &[]), execute(), sync()], Ready(1)),
    ];
    check(250, 1, &steps).await;
}

/// A named statement of DEALLOCATE ALL, executed by Bind: the server loses every statement,
/// the LRU does not know; another client's Parse is answered by the broker, its Bind fails.
#[tokio::test]
async fn r6_deallocate_all_via_bind() {
    let steps = [
        Step(0, vec![parse("d", "DEALLOCATE ALL", &[]), sync()], Ready(1)),
        Step(0, vec![parse("s1", "SELECT 5", &[]), sync()], Ready(1)),
        Step(0, vec![bind("d", &[]), execute(), sync()], Ready(1)),
        Step(
            1,
            vec![
                parse("t", "SELECT 5", &[]),
                bind("t", &[]),
                execute(),
                sync(),
            ],
            Ready(1),
        ),
    ];
    check(250, 2, &steps).await;
}

/// A Sync sent during COPY IN (Postgres ignores it) stays owed in the pipeline.
#[tokio::test]
async fn r7_sync_during_copy_in() {
    let steps = [
        Step(
            0,
            vec![
                parse("", "COPY ct FROM STDIN", &[]),
                bind("", &[]),
                execute(),
                flush(),
            ],
            Msgs(3),
        ),
        Step(
            0,
            vec![message(b'd', b"1\n"), sync(), message(b'c', b""), sync()],
            Ready(1),
        ),
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![parse("s2", "SELECT 1", &[]), sync()], Ready(1)),
        Step(1, vec![query("SELECT 2")], Ready(1)),
    ];
    check(250, 2, &steps).await;
}

/// pgjdbc's SET extra_float_digits behind a pipelined BEGIN is not carried as a setting
/// (the block may roll it back): it pins, and the ROLLBACK undoes it as in Postgres.
#[tokio::test]
async fn r8_carried_set_inside_a_rolled_back_block() {
    let steps = [
        Step(
            0,
            vec![
                query("BEGIN"),
                query("SET extra_float_digits = 3"),
                query("ROLLBACK"),
            ],
            Ready(3),
        ),
        Step(0, vec![query("SHOW extra_float_digits")], Ready(1)),
    ];
    check(250, 2, &steps).await;
}

/// One client closes a broker statement by its server-side name.
#[tokio::test]
async fn r9_close_of_a_server_side_name() {
    let h = Harness::start(|c| {
        crate::raw::cleartext_one_server(c);
        c.pool.borrow_timeout = Duration::from_secs(2);
    })
    .await;
    let mut a = raw_login(&h).await;
    let mut b = raw_login(&h).await;
    a.write_all(&[parse("s1", "SELECT 1", &[]), sync()].concat())
        .await
        .unwrap();
    eprintln!("a: {}", collect(&mut a, Ready(1)).await);
    b.write_all(&query("SELECT name FROM pg_prepared_statements"))
        .await
        .unwrap();
    let mut name = String::new();
    loop {
        let (tag, body) = read_message(&mut b).await;
        if tag == b'D' {
            let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
            name = String::from_utf8_lossy(&body[6..6 + len]).into_owned();
        }
        if tag == b'Z' {
            break;
        }
    }
    eprintln!("server name: {name}");
    b.write_all(&[close_statement(&name), sync()].concat())
        .await
        .unwrap();
    eprintln!("b: {}", collect(&mut b, Ready(1)).await);
    a.write_all(&[bind("s1", &[]), execute(), sync()].concat())
        .await
        .unwrap();
    let got = collect(&mut a, Ready(1)).await;
    eprintln!("a: {got}");
    assert_eq!(got, "2 D:1 C[SELECT 1] Z");
}

/// psycopg 3 on a libpq before 17 (here the pure-Python implementation on Debian's libpq 15)
/// deallocates by SQL when its statement cache is full.
#[tokio::test]
async fn r10_psycopg_deallocate_name() {
    tokio::task::spawn_blocking(crate::drivers::setup)
        .await
        .unwrap();
    let h = Harness::start(|c| c.pool.size = 1).await;
    let dir = crate::drivers::drivers_dir().join("python");
    let script = r#"
import os, psycopg
conn = psycopg.connect(os.environ["PGB_DSN"], prepare_threshold=0, autocommit=True)
conn.prepared_max = 1
print("impl", psycopg.pq.__impl__, psycopg.pq.version())
for i in range(4):
    for q in ("SELECT 1", "SELECT 2", "SELECT 3"):
        try:
            print(q, conn.execute(q).fetchone())
        except Exception as e:
            print(q, "ERROR", type(e).__name__, e)
"#;
    let dsn = h.url("app", "app", "psy");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .env("PYTHONPATH", dir)
            .env("PSYCOPG_IMPL", "python")
            .env("PGB_DSN", dsn)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("SELECT 3 (3,)"),
        "{text}"
    );
    assert!(!text.contains("ERROR"), "{text}");
}

/// A Parse in a failed transaction block: Postgres refuses it with 25P02 even when the
/// broker could answer it (the server has the statement), and the name stays free.
#[tokio::test]
async fn parse_in_a_failed_transaction_block() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![query("BEGIN"), query("SELECT 1/0")], Ready(2)),
        Step(0, vec![parse("s2", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![query("ROLLBACK")], Ready(1)),
        Step(
            0,
            vec![
                parse("s2", "SELECT 1", &[]),
                bind("s2", &[]),
                execute(),
                sync(),
            ],
            Ready(1),
        ),
    ];
    check(250, 1, &steps).await;
}

/// From the randomized differential run: DEALLOCATE of a name in a failed block fails and
/// keeps the name; a Parse pipelined into a failed block gets 25P02, not a ParseComplete.
#[tokio::test]
async fn failed_blocks_refuse_deallocate_and_parse() {
    let steps = [
        Step(0, vec![parse("a", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![query("BEGIN"), query("SELECT 1/0")], Ready(2)),
        Step(0, vec![query("DEALLOCATE a")], Ready(1)),
        Step(0, vec![query("ROLLBACK")], Ready(1)),
        Step(0, vec![bind("a", &[]), execute(), sync()], Ready(1)),
        Step(
            0,
            vec![
                query("BEGIN"),
                query("SELECT 1/0"),
                parse("b", "SELECT 1", &[]),
                sync(),
                query("ROLLBACK"),
                bind("b", &[]),
                execute(),
                sync(),
            ],
            Ready(5),
        ),
    ];
    check(250, 1, &steps).await;
}

/// From the randomized differential run: a named `DEALLOCATE name` bound twice without
/// running keeps its own statement listed.
#[tokio::test]
async fn a_bound_deallocate_statement_stays_prepared() {
    let steps = [
        Step(0, vec![parse("c", "DEALLOCATE a", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![bind("c", &[]), sync(), bind("c", &[]), sync()],
            Ready(2),
        ),
    ];
    check(250, 1, &steps).await;
}
