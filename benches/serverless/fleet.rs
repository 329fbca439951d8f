//! The simulated function fleet: invocations written with tokio-postgres, as a function
//! would, in the four shapes the harness compares.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::targets::Target;

/// Longest an invocation may take before it counts as failed ("timeout"): a hang fails the
/// run instead of stalling it.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The transaction of one invocation: a read by key, in one round trip.
fn transaction(i: u64) -> String {
    format!("SELECT v FROM kv WHERE k = {}", i % 10_000 + 1)
}

/// What a group of invocations did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Invocations that completed.
    pub done: u64,
    /// Connect latencies, seconds.
    pub connect: Vec<f64>,
    /// Whole-invocation latencies (connect included where there is one), seconds.
    pub invoke: Vec<f64>,
    /// Failures by SQLSTATE (or "io" / "timeout" when Postgres sent none).
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.done += other.done;
        self.connect.extend(other.connect);
        self.invoke.extend(other.invoke);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }

    fn timed_out(&mut self) {
        *self.errors.entry("timeout".to_owned()).or_default() += 1;
    }

    fn failed(&mut self, error: &tokio_postgres::Error) {
        let code = match error.as_db_error() {
            Some(db) => db.code().code().to_owned(),
            None if error.to_string().contains("timeout") => "timeout".to_owned(),
            None => "io".to_owned(),
        };
        *self.errors.entry(code).or_default() += 1;
    }
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// One cold invocation: connect, one transaction, disconnect, within [`INVOCATION_TIMEOUT`].
async fn cold_once(url: &str, i: u64, tally: &mut Tally) {
    if tokio::time::timeout(INVOCATION_TIMEOUT, cold_steps(url, i, tally))
        .await
        .is_err()
    {
        tally.timed_out();
    }
}

async fn cold_steps(url: &str, i: u64, tally: &mut Tally) {
    let started = Instant::now();
    let client = match connect(url).await {
        Ok(client) => client,
        Err(e) => return tally.failed(&e),
    };
    let connected = started.elapsed().as_secs_f64();
    if let Err(e) = client.simple_query(&transaction(i)).await {
        return tally.failed(&e);
    }
    drop(client);
    tally.done += 1;
    tally.connect.push(connected);
    tally.invoke.push(started.elapsed().as_secs_f64());
}

/// `clients` workers invoke cold, back to back, until `duration` is over.
pub async fn cold(target: &Target, clients: usize, duration: Duration) -> Tally {
    let deadline = Instant::now() + duration;
    let workers = (0..clients).map(|w| {
        let url = target.url(&format!("fn{}", w % 8));
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = w as u64;
            while Instant::now() < deadline {
                cold_once(&url, i, &mut tally).await;
                i += clients as u64;
            }
            tally
        })
    });
    gather(workers).await
}

/// `n` cold invocations released at the same instant.
pub async fn burst(target: &Target, n: usize) -> Tally {
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let workers = (0..n).map(|w| {
        let (url, start) = (target.url(&format!("fn{}", w % 8)), Arc::clone(&start));
        tokio::spawn(async move {
            let mut tally = Tally::default();
            start.wait().await;
            cold_once(&url, w as u64, &mut tally).await;
            tally
        })
    });
    gather(workers).await
}

/// `clients` containers keep their connection and invoke back to back (pgbench -S style):
/// simple-protocol queries, or with `prepared` one named statement each, prepared once.
pub async fn warm(target: &Target, clients: usize, duration: Duration, prepared: bool) -> Tally {
    let workers = (0..clients).map(|w| {
        let url = target.url(&format!("fn{}", w % 8));
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let client = match connect(&url).await {
                Ok(client) => client,
                Err(e) => {
                    tally.failed(&e);
                    return tally;
                }
            };
            let statement = if prepared {
                match client.prepare("SELECT v FROM kv WHERE k = $1::int4").await {
                    Ok(statement) => Some(statement),
                    Err(e) => {
                        tally.failed(&e);
                        return tally;
                    }
                }
            } else {
                None
            };
            let deadline = Instant::now() + duration;
            let mut i = w as u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                let outcome = match &statement {
                    Some(statement) => {
                        let key = i32::try_from(i % 10_000 + 1).unwrap_or(1);
                        let params: [&(dyn ToSql + Sync); 1] = [&key];
                        let query = client.query(statement, &params);
                        (tokio::time::timeout(INVOCATION_TIMEOUT, query).await).map(|r| r.map(drop))
                    }
                    None => {
                        let sql = transaction(i);
                        let query = client.simple_query(&sql);
                        (tokio::time::timeout(INVOCATION_TIMEOUT, query).await).map(|r| r.map(drop))
                    }
                };
                match outcome {
                    Ok(Ok(())) => {
                        tally.done += 1;
                        tally.invoke.push(started.elapsed().as_secs_f64());
                    }
                    Ok(Err(e)) => tally.failed(&e),
                    Err(_) => tally.timed_out(),
                }
                i += clients as u64;
            }
            tally
        })
    });
    gather(workers).await
}

/// Opens `n` idle client connections (64 logins at a time), as frozen containers leave
/// them; returns them and how opening went.
pub async fn freeze(target: &Target, n: usize) -> (Vec<Client>, Tally) {
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let opening = (0..n).map(|w| {
        let (url, gate) = (target.url(&format!("frozen{}", w % 8)), Arc::clone(&gate));
        tokio::spawn(async move {
            let _turn = gate.acquire().await;
            let started = Instant::now();
            let client = tokio::time::timeout(INVOCATION_TIMEOUT, connect(&url)).await;
            (client, started.elapsed().as_secs_f64())
        })
    });
    let mut clients = Vec::with_capacity(n);
    let mut tally = Tally::default();
    for task in opening.collect::<Vec<_>>() {
        match task.await {
            Ok((Ok(Ok(client)), took)) => {
                clients.push(client);
                tally.connect.push(took);
            }
            Ok((Ok(Err(e)), _)) => tally.failed(&e),
            Ok((Err(_), _)) => tally.timed_out(),
            Err(_) => *tally.errors.entry("panic".to_owned()).or_default() += 1,
        }
    }
    (clients, tally)
}

async fn gather(workers: impl Iterator<Item = tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    for worker in workers.collect::<Vec<_>>() {
        match worker.await {
            Ok(tally) => total.merge(tally),
            Err(_) => *total.errors.entry("panic".to_owned()).or_default() += 1,
        }
    }
    total
}
