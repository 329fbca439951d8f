//! Differential tests: Postgres is the oracle. Each scenario is a fixed sequence of raw
//! frontend messages from one or two clients; it runs on a direct connection to a cluster
//! (what Postgres itself answers), then through the broker on the same cluster in session
//! mode, and in transaction mode on one and on two server connections with other clients
//! churning (more clients than servers: no client keeps its server, or its server's state,
//! by luck). Every broker run must read exactly what the direct run read, normalised only
//! for the broker's statement names and backend pids (see [`oracle::oracle_token`]).
//!
//! Scenarios that diverge until the other parts of issue 12 are merged are kept, each
//! behind an `#[ignore = "issue 12 part N: …"]` that says why: `cargo test --release --test
//! it differential -- --ignored` runs them.

mod churn;
mod fuzz;
mod named;
mod oracle;
mod segments;
mod settings;
mod statements;

pub use oracle::{collect, Until};
use oracle::{transcript, Exchange, Target};

/// What client `.0` sends at one point of a scenario (`.1`, concatenated into one write),
/// and how much of the reply to read (`.2`).
pub struct Step(pub usize, pub Vec<Vec<u8>>, pub Until);

/// One simple Query of client `c`, read to its ReadyForQuery.
pub fn q(c: usize, sql: &str) -> Step {
    Step(c, vec![crate::raw::query(sql)], Until::Ready(1))
}

/// Messages of client `c`, read to one ReadyForQuery per Sync or Query among them.
pub fn step(c: usize, parts: Vec<Vec<u8>>) -> Step {
    let ready = parts.iter().filter(|m| matches!(m[0], b'S' | b'Q')).count();
    Step(c, parts, Until::Ready(ready))
}

/// The broker runs each scenario is compared on, after the direct one.
fn broker_targets(capacity: usize) -> [(&'static str, Target); 3] {
    let transaction = |servers| Target::Transaction { servers, capacity };
    [
        ("session mode", Target::Session),
        ("transaction mode, 1 server", transaction(1)),
        ("transaction mode, 2 servers", transaction(2)),
    ]
}

/// Runs `steps` directly and on every broker target, with `capacity` named statements per
/// server in transaction mode, and asserts that every broker run reads what Postgres sent.
pub async fn check(capacity: usize, clients: usize, steps: &[Step]) {
    let cluster = crate::common::cluster(100).await;
    let exchanges: Vec<Exchange> = steps
        .iter()
        .map(|Step(client, parts, until)| Exchange {
            client: *client,
            bytes: parts.concat(),
            until: *until,
        })
        .collect();
    let direct = transcript(&cluster, Target::Direct, clients, &exchanges).await;
    show("postgres (direct connection)", &direct);
    let mut diverged = Vec::new();
    for (label, target) in broker_targets(capacity) {
        let broker = transcript(&cluster, target, clients, &exchanges).await;
        show(&format!("broker, {label}"), &broker);
        if broker != direct {
            diverged.push(label);
        }
    }
    assert!(
        diverged.is_empty(),
        "the broker in {diverged:?} answered otherwise than Postgres (transcripts above)"
    );
}

fn show(label: &str, transcript: &[String]) {
    eprintln!("=== {label} ===");
    for line in transcript {
        eprintln!("{line}");
    }
}
