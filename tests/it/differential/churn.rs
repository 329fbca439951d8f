//! Other clients churning through the broker while a scenario runs in transaction mode, so
//! that no scenario client keeps its server connection by luck: between two transactions
//! of a client, its server serves others, whose unnamed statement, named statements (under
//! the same client-side names) and transaction-scoped settings pass through it. Each
//! churner also reads the settings a scenario may change and notes any value that differs
//! from what a fresh direct connection shows: a setting leaked from another client.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::raw::{bind, close_statement, describe_statement, execute, parse, query, sync};

/// Clients churning beside a scenario's one or two.
pub const CHURNERS: usize = 2;

/// The settings a churning client checks, as one row.
pub const SETTINGS: &str = "SELECT concat_ws(',', current_setting('search_path'), \
    current_setting('statement_timeout'), current_setting('TimeZone'), \
    current_setting('DateStyle'), current_setting('extra_float_digits'), \
    current_setting('application_name'), current_setting('role'), current_setting('work_mem')) \
    FROM pg_sleep(0.002)";

/// One round of a churning client: what it sends and the ReadyForQuery messages owed.
/// Each holds its server a couple of milliseconds (`pg_sleep`), and churners do not pause
/// between rounds: the servers are busy most of the time, so a scenario client gets
/// whichever frees first (the pool hands out the most recently returned one, so with idle
/// servers a lone client would always get its previous one back).
fn rounds() -> Vec<(Vec<u8>, usize)> {
    let unnamed = [
        parse("", "SELECT 'churn' FROM pg_sleep(0.002)", &[]),
        bind("", &[]),
        execute(),
        sync(),
    ];
    let named = [
        close_statement("a"),
        parse("a", "SELECT 'churn a' FROM pg_sleep(0.002)", &[]),
        bind("a", &[]),
        execute(),
        sync(),
    ];
    let local = [
        query("BEGIN"),
        query("SET LOCAL search_path = pg_catalog"),
        query("SAVEPOINT c"),
        query("SET LOCAL statement_timeout = '9s'"),
        query("SELECT pg_sleep(0.002)"),
        query("COMMIT"),
    ];
    let described = [
        parse("", "SELECT $1::text FROM pg_sleep(0.002)", &[25]),
        describe_statement(""),
        bind("", &["churn"]),
        execute(),
        sync(),
    ];
    vec![
        (query(SETTINGS), 1),
        (unnamed.concat(), 1),
        (named.concat(), 1),
        (local.concat(), 6),
        (described.concat(), 1),
    ]
}

/// What the churning clients saw.
pub struct Report {
    /// Rounds completed by all churners.
    pub rounds: usize,
    /// Settings rows that differed from a fresh connection's.
    pub leaks: BTreeSet<String>,
}

/// Churning clients of a broker, until stopped.
pub struct Churn {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Report>>,
}

impl Churn {
    /// Starts [`CHURNERS`] clients of the broker at `addr`; `baseline` is the [`SETTINGS`]
    /// row of a fresh direct connection.
    pub fn start(addr: SocketAddr, baseline: &str) -> Churn {
        let stop = CancellationToken::new();
        let tasks = (0..CHURNERS)
            .map(|i| tokio::spawn(churner(addr, i, baseline.to_owned(), stop.clone())))
            .collect();
        Churn { stop, tasks }
    }

    /// Stops the churners; what they saw, together.
    pub async fn stop(self) -> Report {
        self.stop.cancel();
        let mut total = Report {
            rounds: 0,
            leaks: BTreeSet::new(),
        };
        for task in self.tasks {
            let report = task.await.expect("a churning client ends without panic");
            total.rounds += report.rounds;
            total.leaks.extend(report.leaks);
        }
        total
    }
}

/// One churning client: rounds until stopped, logging in again when the broker ends its
/// session (a borrow timeout while a scenario holds the servers is expected).
async fn churner(
    addr: SocketAddr,
    first: usize,
    baseline: String,
    stop: CancellationToken,
) -> Report {
    let rounds = rounds();
    let mut report = Report {
        rounds: 0,
        leaks: BTreeSet::new(),
    };
    'login: while !stop.is_cancelled() {
        let mut raw = crate::raw::raw_login_at(addr).await.0;
        loop {
            let (bytes, owed) = &rounds[(first + report.rounds) % rounds.len()];
            let round = tokio::select! {
                () = stop.cancelled() => break 'login,
                round = exchange(&mut raw, bytes, *owed) => round,
            };
            match round {
                Ok(rows) => {
                    let checked = rows.first().filter(|_| bytes == &rounds[0].0);
                    report
                        .leaks
                        .extend(checked.filter(|r| **r != baseline).cloned());
                    report.rounds += 1;
                }
                Err(_) => continue 'login,
            }
        }
    }
    report
}

/// Sends `bytes` and reads up to `owed` ReadyForQuery; returns the first column of each
/// row. Any failure (an error reply, a closed session) is an `Err`.
async fn exchange(raw: &mut TcpStream, bytes: &[u8], owed: usize) -> io::Result<Vec<String>> {
    raw.write_all(bytes).await?;
    let (mut ready, mut rows, mut failed) = (0, Vec::new(), false);
    while ready < owed {
        let mut header = [0u8; 5];
        let read = tokio::time::timeout(Duration::from_secs(10), raw.read_exact(&mut header));
        read.await.map_err(io::Error::other)??;
        let len = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        raw.read_exact(&mut body).await?;
        match header[0] {
            b'Z' => ready += 1,
            b'E' => failed = true,
            b'D' => rows.extend(crate::raw::token(b'D', &body, false)),
            _ => {}
        }
    }
    if failed {
        return Err(io::Error::other("error reply"));
    }
    Ok(rows
        .into_iter()
        .map(|r| r.trim_start_matches("D:").to_owned())
        .collect())
}

/// The transaction-mode runs do what they claim: with two servers and the churn, one
/// client's transactions land on both servers, the churners complete rounds, and they see
/// no other client's settings.
#[tokio::test]
async fn churn_moves_a_client_between_servers() {
    use super::oracle::{read_until, Running, Target};
    let cluster = crate::common::cluster(100).await;
    let target = Target::Transaction {
        servers: 2,
        capacity: 250,
    };
    let broker = Running::start(&cluster, target, 1).await;
    let mut raw = crate::raw::raw_login_at(broker.addr).await.0;
    let mut pids = BTreeSet::new();
    for _ in 0..20 {
        raw.write_all(&query("SELECT pg_backend_pid()"))
            .await
            .unwrap();
        let show = |tag, body: &[u8]| crate::raw::token(tag, body, false);
        let got = read_until(&mut raw, super::Until::Ready(1), show).await;
        pids.insert(got);
    }
    let mut out = Vec::new();
    let rounds = broker.stop(&mut out).await;
    assert!(
        pids.len() >= 2,
        "one server served every transaction: {pids:?}"
    );
    assert!(rounds > 0, "the churning clients completed no round");
    assert!(out.is_empty(), "{out:?}");
}
