//! Differential tests of named statements: each scenario runs through the broker in
//! transaction mode (names translated, one server connection shared) and in session mode
//! (pure passthrough: what Postgres itself answers), and the client must see the same.
//! The scenarios come from a review of the translation; each failed before its fix.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::Harness;
use crate::raw::{
    bind, close_statement, execute, flush, message, parse, query, raw_login, read_message, sync,
    token,
};

/// How much of a reply to read.
#[derive(Clone, Copy)]
pub enum Until {
    Ready(usize),
    Msgs(usize),
}

/// A client's view of what it reads: tags, `E:<SQLSTATE>`, `D:<first column>`,
/// `C[<command tag>]` (ParameterStatus and notices left out), `<STALL>` after 4s of nothing.
pub async fn collect(raw: &mut TcpStream, until: Until) -> String {
    let mut seen = Vec::new();
    let (mut ready, mut msgs) = (0, 0);
    loop {
        match until {
            Until::Ready(n) if ready >= n => break,
            Until::Msgs(n) if msgs >= n => break,
            _ => {}
        }
        let got = tokio::time::timeout(Duration::from_secs(4), read_message(raw)).await;
        let Ok((tag, body)) = got else {
            seen.push("<STALL>".to_string());
            break;
        };
        msgs += 1;
        seen.extend(token(tag, &body, false));
        ready += usize::from(tag == b'Z');
    }
    seen.join(" ")
}

struct Step(usize, Vec<Vec<u8>>, Until);

async fn run_steps(h: &Harness, clients: usize, steps: &[Step]) -> Vec<String> {
    let mut raws = Vec::new();
    for _ in 0..clients {
        raws.push(raw_login(h).await);
    }
    let mut out = Vec::new();
    for Step(c, parts, until) in steps {
        raws[*c].write_all(&parts.concat()).await.unwrap();
        let got = collect(&mut raws[*c], *until).await;
        out.push(format!("[{c}] {got}"));
    }
    out
}

async fn compare(capacity: usize, clients: usize, steps: &[Step]) -> (Vec<String>, Vec<String>) {
    let tx = Harness::start(|c| {
        crate::raw::cleartext_one_server(c);
        c.pool.borrow_timeout = Duration::from_secs(2);
        c.pool.prepared_statements_per_server = capacity;
    })
    .await;
    let broker = run_steps(&tx, clients, steps).await;
    let session = Harness::start(|c| {
        crate::raw::cleartext_one_server(c);
        c.pool.size = clients.max(1);
        c.pool.mode = pgbroker::config::PoolMode::Session;
    })
    .await;
    let pg = run_steps(&session, clients, steps).await;
    eprintln!("=== broker (transaction mode) ===");
    for l in &broker {
        eprintln!("{l}");
    }
    eprintln!("=== postgres (session passthrough) ===");
    for l in &pg {
        eprintln!("{l}");
    }
    (broker, pg)
}

use Until::{Msgs, Ready};

/// A later Sync segment relies on a Parse queued in an earlier one that an error skipped.
#[tokio::test]
async fn r1_cross_segment_pending_parse() {
    let steps = [
        Step(
            0,
            vec![parse("a", "SELECT 1/$1::int", &[23]), sync()],
            Ready(1),
        ),
        Step(
            0,
            vec![
                bind("a", &["0"]),
                execute(),
                parse("s1", "SELECT 42", &[]),
                sync(),
                parse("s2", "SELECT 42", &[]),
                bind("s2", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
        Step(0, vec![bind("s2", &[]), execute(), sync()], Ready(1)),
    ];
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
}

/// Same with an on-demand Parse (statement known to the client, not yet on this server).
#[tokio::test]
async fn r1b_cross_segment_on_demand() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 42", &[]), sync()], Ready(1)),
        // Evict it with capacity 1 so the next use prepares on demand.
        Step(0, vec![parse("other", "SELECT 7", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                bind("s1", &[]),
                execute(),
                sync(),
                bind("s1", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
    ];
    let (b, p) = compare(1, 1, &steps).await;
    assert_eq!(b, p);
}

/// An eviction Close skipped by an error, while a later segment prepared the statement
/// again: 42P05, and the LRU loses a statement the server still has.
#[tokio::test]
async fn r2_skipped_eviction_then_persistent_42p05() {
    let steps = [
        Step(0, vec![parse("sx", "SELECT 1", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                parse("y", "SELECT 2", &[]),
                sync(),
                bind("sx", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
        Step(0, vec![bind("sx", &[]), execute(), sync()], Ready(1)),
        Step(
            1,
            vec![
                parse("mine", "SELECT 1", &[]),
                bind("mine", &[]),
                execute(),
                sync(),
            ],
            Ready(1),
        ),
        Step(1, vec![bind("mine", &[]), execute(), sync()], Ready(1)),
    ];
    let (b, p) = compare(1, 2, &steps).await;
    assert_eq!(b, p);
}

/// A Close skipped by an error is undone after a later segment re-Parsed the name.
#[tokio::test]
async fn r3_skipped_close_rebinds_over_a_newer_parse() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                close_statement("s1"),
                sync(),
                parse("s1", "SELECT 2", &[]),
                bind("s1", &[]),
                execute(),
                sync(),
                bind("s1", &[]),
                execute(),
                sync(),
            ],
            Ready(3),
        ),
    ];
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
}

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
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
}

/// DISCARD ALL that fails (inside a transaction block) still clears the client's names.
#[tokio::test]
async fn r5_failed_discard_all_clears_names() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(0, vec![query("BEGIN")], Ready(1)),
        Step(0, vec![query("DISCARD ALL")], Ready(1)),
        Step(0, vec![query("ROLLBACK")], Ready(1)),
        Step(0, vec![bind("s1", &[]), execute(), sync()], Ready(1)),
    ];
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
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
    let (b, p) = compare(250, 2, &steps).await;
    assert_eq!(b, p);
}

/// A Sync sent during COPY IN (Postgres ignores it) stays owed in the pipeline.
#[tokio::test]
async fn r7_sync_during_copy_in() {
    let steps = [
        Step(
            0,
            vec![query("CREATE TABLE IF NOT EXISTS ct(x int)")],
            Ready(1),
        ),
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
    let (b, p) = compare(250, 2, &steps).await;
    assert_eq!(b, p);
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
    let (b, p) = compare(250, 2, &steps).await;
    assert_eq!(b, p);
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

/// A Parse that fails, then the same text under another name in a later segment: the
/// broker answers the second one itself.
#[tokio::test]
async fn r11_fake_parse_complete_for_a_failed_text() {
    let steps = [Step(
        0,
        vec![
            parse("s1", "SELEC 1", &[]),
            sync(),
            parse("s2", "SELEC 1", &[]),
            sync(),
        ],
        Ready(2),
    )];
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
}

/// r3 continued: later, the name the client re-Parsed runs the old statement.
#[tokio::test]
async fn r3b_name_switches_statement_later() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                close_statement("s1"),
                sync(),
                parse("s1", "SELECT 2", &[]),
                bind("s1", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
        Step(0, vec![bind("s1", &[]), execute(), sync()], Ready(1)),
    ];
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
}

/// A simple Query sent while the server skips to Sync: Postgres ignores it.
#[tokio::test]
async fn r12_query_while_ignoring() {
    let steps = [
        Step(
            0,
            vec![bind("nope", &[]), execute(), query("SELECT 1"), sync()],
            Ready(1),
        ),
        Step(0, vec![query("SELECT 3")], Ready(1)),
        Step(1, vec![query("SELECT 2")], Ready(1)),
    ];
    let (b, p) = compare(250, 2, &steps).await;
    assert_eq!(b, p);
}

#[tokio::test]
async fn r13_reparse_after_failed_parse_in_earlier_segment() {
    let steps = [Step(
        0,
        vec![
            parse("s1", "SELEC 1", &[]),
            sync(),
            parse("s1", "SELECT 1", &[]),
            sync(),
        ],
        Ready(2),
    )];
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
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
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
}

/// From the randomized differential run: frames that wait for an earlier batch's answer
/// keep the server (a re-borrow would close the client's unnamed statement).
#[tokio::test]
async fn waiting_frames_keep_their_server() {
    let steps = [Step(
        0,
        vec![
            parse("", "SELECT 1", &[]),
            parse("a", "SELECT 2", &[]),
            sync(),
            bind("", &[]),
            execute(),
            sync(),
        ],
        Ready(2),
    )];
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
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
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
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
    let (b, p) = compare(250, 1, &steps).await;
    assert_eq!(b, p);
}
