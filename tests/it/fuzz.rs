//! Randomized differential test of named statements: seeded scenarios of raw extended- and
//! simple-protocol messages for one or two clients run through the broker in transaction
//! mode (one server connection, names translated) and in session mode (passthrough: what
//! Postgres answers); the transcripts must match. A divergence is minimized and printed.
//!
//! FUZZ_SEED, FUZZ_N (scenarios per capacity, 40 by default) and FUZZ_CAPS ("1,250") tune
//! a run. Written by a reviewer's randomized hunt; its findings are in differential.rs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use pgbroker::sandbox::Cluster;
use pgbroker::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::raw::{
    bind, close_statement, describe_statement, execute, message, parse, read_message, send_startup,
    token,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Statement texts a Parse may carry, with their parameter counts.
const TEXTS: &[(&str, usize)] = &[
    ("SELECT 1", 0),
    ("SELECT $1::int", 1),
    ("SELECT 1/$1::int", 1),
    ("SELEC 1", 0),
    ("SELECT 2", 0),
    ("DEALLOCATE ALL", 0),
    ("DEALLOCATE a", 0),
    ("DISCARD ALL", 0),
    ("BEGIN", 0),
    ("COMMIT", 0),
];

const QUERIES: &[&str] = &[
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT 1/0",
    "DEALLOCATE a",
    "DEALLOCATE ALL",
    "DISCARD ALL",
    "DEALLOCATE b",
];

#[derive(Clone, Debug, PartialEq)]
enum Msg {
    Parse(&'static str, usize, bool),
    Bind(&'static str, Vec<&'static str>),
    DescribeS(&'static str),
    DescribeP,
    Execute,
    CloseS(&'static str),
    Sync,
    Flush,
    Query(&'static str),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Parse(name, text, typed) => {
                let (sql, params) = TEXTS[*text];
                let types = vec![23; if *typed { params } else { 0 }];
                parse(name, sql, &types)
            }
            Msg::Bind(statement, params) => bind(statement, params),
            Msg::DescribeS(name) => describe_statement(name),
            Msg::DescribeP => message(b'D', b"P\0"),
            Msg::Execute => execute(),
            Msg::CloseS(name) => close_statement(name),
            Msg::Sync => message(b'S', &[]),
            Msg::Flush => message(b'H', &[]),
            Msg::Query(sql) => message(b'Q', format!("{sql}\0").as_bytes()),
        }
    }

    fn show(&self) -> String {
        match self {
            Msg::Parse(name, text, typed) => {
                let t = if *typed && TEXTS[*text].1 > 0 {
                    ",int"
                } else {
                    ""
                };
                format!("P({name:?},{:?}{t})", TEXTS[*text].0)
            }
            Msg::Bind(name, params) => format!("B({name:?},{params:?})"),
            Msg::DescribeS(name) => format!("DS({name:?})"),
            Msg::DescribeP => "DP".into(),
            Msg::Execute => "E".into(),
            Msg::CloseS(name) => format!("CS({name:?})"),
            Msg::Sync => "S".into(),
            Msg::Flush => "H".into(),
            Msg::Query(sql) => format!("Q({sql:?})"),
        }
    }
}

#[derive(Clone, Debug)]
struct Step {
    client: usize,
    msgs: Vec<Msg>,
}

impl Step {
    /// ReadyForQuery messages owed; `risky` when a Query follows unsynced extended
    /// messages (Postgres skips it after an error: one fewer).
    fn owed(&self) -> (usize, bool) {
        let (mut n, mut open, mut risky) = (0, false, false);
        for m in &self.msgs {
            match m {
                Msg::Sync => {
                    n += 1;
                    open = false;
                }
                Msg::Query(_) => {
                    n += 1;
                    risky |= open;
                }
                Msg::Flush => {}
                _ => open = true,
            }
        }
        (n, risky)
    }

    /// A step ends with a Sync or a Query, so that the server is not left mid-batch.
    /// The unnamed statement is used only in the step that parsed it: in transaction mode
    /// it does not outlive the borrow (the broker closes it for the next one), by design.
    fn well_formed(&self) -> bool {
        let mut unnamed = false;
        for m in &self.msgs {
            match m {
                Msg::Parse("", ..) => unnamed = true,
                // FUZZ_FILTER_KNOWN: not across a Sync either (the broker may give the
                // server back while a frame waits, see the report).
                Msg::Sync if known_filtered() => unnamed = false,
                Msg::Bind("", _) | Msg::DescribeS("") if !unnamed => return false,
                _ => {}
            }
        }
        matches!(self.msgs.last(), Some(Msg::Sync | Msg::Query(_)))
    }
}

fn show(steps: &[Step]) -> String {
    let mut s = String::new();
    for step in steps {
        let msgs: Vec<String> = step.msgs.iter().map(Msg::show).collect();
        let _ = writeln!(s, "  [{}] {}", step.client, msgs.join(" "));
    }
    s
}

/// One scenario: 1 or 2 clients, a few steps.
fn scenario(rng: &mut Rng) -> (usize, Vec<Step>) {
    let clients = 1 + usize::from(rng.chance(40));
    let mut steps: Vec<Step> = Vec::new();
    let mut began = [false; 2];
    // Parameter counts of the names, as far as the generator knows.
    let mut params: [std::collections::HashMap<&'static str, usize>; 2] = Default::default();
    let n_steps = 2 + rng.below(6);
    let mut last = 0;
    for _ in 0..n_steps {
        let c = rng.below(clients);
        if c != last && began[last] {
            // The pool has one server: a block left open would make the other client wait.
            steps.push(Step {
                client: last,
                msgs: vec![Msg::Query("ROLLBACK")],
            });
            began[last] = false;
        }
        last = c;
        let mut msgs = Vec::new();
        if rng.chance(25) {
            for _ in 0..1 + rng.below(3) {
                let q = *rng.pick(queries());
                began[c] |= q == "BEGIN";
                msgs.push(Msg::Query(q));
            }
        } else {
            for _ in 0..1 + rng.below(7) {
                push_extended(rng, &mut msgs, &mut params[c], &mut began[c]);
            }
            msgs.push(Msg::Sync);
        }
        let step = Step { client: c, msgs };
        if step.well_formed() {
            steps.push(step);
        }
    }
    (clients, steps)
}

#[allow(clippy::explicit_auto_deref)] // the picks need their type spelled out
fn push_extended(
    rng: &mut Rng,
    msgs: &mut Vec<Msg>,
    params: &mut std::collections::HashMap<&'static str, usize>,
    began: &mut bool,
) {
    let names = ["a", "b", "c", ""];
    match rng.below(100) {
        0..=27 => {
            let name = *rng.pick(&names);
            let text = if rng.chance(8) && !known_filtered() {
                5 + rng.below(3)
            } else if rng.chance(6) {
                8 + rng.below(2)
            } else {
                rng.below(5)
            };
            *began |= text == 8;
            params.insert(name, TEXTS[text].1);
            msgs.push(Msg::Parse(name, text, rng.chance(50)));
        }
        28..=52 => {
            let name = *rng.pick(&["a", "b", "c", "", "", "zz"]);
            let mut n = params.get(name).copied().unwrap_or(0);
            if rng.chance(7) {
                n = 1 - n.min(1);
            }
            let p = (0..n)
                .map(|_| if rng.chance(30) { "0" } else { "1" })
                .collect();
            msgs.push(Msg::Bind(name, p));
            if rng.chance(75) {
                if rng.chance(15) {
                    msgs.push(Msg::DescribeP);
                }
                msgs.push(Msg::Execute);
            }
        }
        53..=60 => msgs.push(Msg::DescribeS(*rng.pick(&names))),
        61..=63 => msgs.push(Msg::DescribeP),
        64..=68 => msgs.push(Msg::Execute),
        69..=78 => msgs.push(Msg::CloseS(*rng.pick(&["a", "b", "c", "zz", ""]))),
        79..=89 => msgs.push(Msg::Sync),
        90..=93 => msgs.push(Msg::Flush),
        _ => {
            let q = *rng.pick(queries());
            *began |= q == "BEGIN";
            msgs.push(Msg::Query(q));
        }
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

async fn start(cluster: &Cluster, transaction: bool, capacity: usize) -> Running {
    let mut config = crate::common::config_for(cluster);
    crate::raw::cleartext_one_server(&mut config);
    config.pool.borrow_timeout = Duration::from_secs(2);
    config.pool.prepared_statements_per_server = capacity;
    if !transaction {
        config.pool.size = 2;
        config.pool.mode = pgbroker::config::PoolMode::Session;
    }
    let broker = Broker::bind(config).await.expect("bind broker");
    let addr = broker.local_addr().unwrap();
    let shutdown = broker.shutdown_token();
    let handle = tokio::spawn(broker.run_until(std::future::pending()));
    Running {
        addr,
        shutdown,
        handle,
    }
}

async fn login(addr: SocketAddr) -> TcpStream {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    send_startup(&mut raw, 0, b"user\0app\0database\0app\0\0").await;
    let mut request = [0u8; 9];
    raw.read_exact(&mut request).await.unwrap();
    raw.write_all(b"p\0\0\0\x08app\0").await.unwrap();
    crate::raw::read_reply(&mut raw).await;
    raw
}

/// Reads a step's replies: up to `owed` ReadyForQuery, or (`idle`) until the server is
/// quiet for a while. Returns the transcript and how many ReadyForQuery came.
async fn collect(raw: &mut TcpStream, owed: usize, idle: bool) -> (String, usize) {
    let mut seen = Vec::new();
    let mut ready = 0;
    let wait = if idle { 700 } else { 4000 };
    while ready < owed {
        let got = tokio::time::timeout(Duration::from_millis(wait), read_message(raw)).await;
        let Ok((tag, body)) = got else {
            if !idle {
                seen.push("<STALL>".to_string());
            }
            break;
        };
        ready += usize::from(tag == b'Z');
        seen.extend(token(tag, &body, true));
    }
    (seen.join(" "), ready)
}

/// Runs `steps` on a fresh broker; `owed`: the ReadyForQuery count per step to expect
/// (from the session run) or `None` to find out.
async fn run(
    cluster: &Cluster,
    transaction: bool,
    capacity: usize,
    clients: usize,
    steps: &[Step],
    owed: Option<&[usize]>,
) -> (Vec<String>, Vec<usize>) {
    let broker = start(cluster, transaction, capacity).await;
    let mut raws = Vec::new();
    for _ in 0..clients {
        raws.push(login(broker.addr).await);
    }
    let (mut out, mut counts) = (Vec::new(), Vec::new());
    for (i, step) in steps.iter().enumerate() {
        let bytes: Vec<u8> = step.msgs.iter().flat_map(Msg::encode).collect();
        raws[step.client].write_all(&bytes).await.unwrap();
        let (n, risky) = step.owed();
        let (want, idle) = match owed {
            Some(o) => (o[i], false),
            None => (n, risky),
        };
        let (got, ready) = collect(&mut raws[step.client], want, idle).await;
        out.push(format!("[{}] {got}", step.client));
        counts.push(ready);
    }
    // Anything extra the broker sends after the last step.
    for (c, raw) in raws.iter_mut().enumerate() {
        let mut extra = Vec::new();
        while let Ok((tag, body)) =
            tokio::time::timeout(Duration::from_millis(50), read_message(raw)).await
        {
            extra.extend(token(tag, &body, true));
        }
        if !extra.is_empty() {
            out.push(format!("[{c}] extra: {}", extra.join(" ")));
        }
        let _ = raw.write_all(b"X\0\0\0\x04").await;
    }
    drop(raws);
    broker.shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), broker.handle)
        .await
        .is_err()
    {
        out.push("<BROKER DID NOT STOP>".into());
    }
    (out, counts)
}

/// By default the scenarios leave out what produces the divergences still open
/// (DEALLOCATE/DISCARD in some positions, a reused name with bad SQL, the unnamed statement
/// across a Sync); FUZZ_FILTER_KNOWN=0 puts them back, to work on them.
fn known_filtered() -> bool {
    std::env::var("FUZZ_FILTER_KNOWN").map_or(true, |v| v != "0")
}

fn queries() -> &'static [&'static str] {
    if known_filtered() {
        &QUERIES[..5]
    } else {
        QUERIES
    }
}

/// Transcripts equal but for the accepted differences: inside a failed block Postgres
/// answers 25P02 where the broker's rewrite may fail differently first.
fn same(broker: &[String], pg: &[String]) -> bool {
    broker.len() == pg.len()
        && broker.iter().zip(pg).all(|(b, p)| {
            let (b, p): (Vec<&str>, Vec<&str>) = (b.split(' ').collect(), p.split(' ').collect());
            b.len() == p.len()
                && b.iter().zip(&p).all(|(x, y)| {
                    x == y
                        || (known_filtered() && *x == "E:42P05" && *y == "E:42601")
                        || (x.starts_with("E:")
                            && y.starts_with("E:")
                            && (*x == "E:25P02" || *y == "E:25P02"))
                })
        })
}

/// The first tokens that differ, to group divergences.
fn signature(broker: &[String], pg: &[String]) -> String {
    for (b, p) in broker.iter().zip(pg) {
        for (x, y) in b.split(' ').zip(p.split(' ')) {
            if x != y {
                return format!("{x} vs {y}");
            }
        }
        if b != p {
            return format!("{b} vs {p}");
        }
    }
    format!("{} lines vs {}", broker.len(), pg.len())
}

/// Outcome of one scenario.
enum Outcome {
    Same,
    /// Broken by the one-server pool (53300), not a divergence.
    Invalid,
    Diverged(Vec<String>, Vec<String>),
}

async fn check(cluster: &Cluster, capacity: usize, clients: usize, steps: &[Step]) -> Outcome {
    if steps.is_empty() || !steps.iter().all(Step::well_formed) {
        return Outcome::Invalid;
    }
    let (pg, owed) = run(cluster, false, capacity, clients, steps, None).await;
    let (broker, _) = run(cluster, true, capacity, clients, steps, Some(&owed)).await;
    if broker.iter().any(|l| l.contains("E:53300")) {
        if std::env::var("FUZZ_SHOW_INVALID").is_ok() {
            eprintln!(
                "invalid:\n{}  broker:\n    {}\n  postgres:\n    {}",
                show(steps),
                broker.join("\n    "),
                pg.join("\n    ")
            );
        }
        return Outcome::Invalid;
    }
    if same(&broker, &pg) {
        Outcome::Same
    } else {
        Outcome::Diverged(broker, pg)
    }
}

/// Greedy minimization: drop steps, then messages, while it still diverges.
async fn minimize(
    cluster: &Cluster,
    capacity: usize,
    clients: usize,
    steps: Vec<Step>,
) -> Vec<Step> {
    let mut best = steps;
    loop {
        let mut progress = false;
        let mut i = 0;
        while i < best.len() {
            let mut cand = best.clone();
            cand.remove(i);
            if matches!(
                check(cluster, capacity, clients, &cand).await,
                Outcome::Diverged(..)
            ) {
                best = cand;
                progress = true;
            } else {
                i += 1;
            }
        }
        let mut s = 0;
        while s < best.len() {
            let mut j = 0;
            while s < best.len() && j < best[s].msgs.len() {
                let mut cand = best.clone();
                cand[s].msgs.remove(j);
                if cand[s].msgs.is_empty() {
                    cand.remove(s);
                }
                if matches!(
                    check(cluster, capacity, clients, &cand).await,
                    Outcome::Diverged(..)
                ) {
                    best = cand;
                    progress = true;
                } else {
                    j += 1;
                }
            }
            s += 1;
        }
        if !progress {
            return best;
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn fuzz_named_statements_against_passthrough() {
    let seed: u64 = env_or("FUZZ_SEED", 0x5eed_1234_abcd_0001);
    let n: usize = env_or("FUZZ_N", 40);
    let caps: Vec<usize> = std::env::var("FUZZ_CAPS")
        .unwrap_or_else(|_| "1,250".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let max_reports: usize = env_or("FUZZ_MAX_REPORTS", 20);
    let cluster = crate::common::cluster(100).await;
    let mut reports: Vec<String> = Vec::new();
    let (mut invalid, mut diverged) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    for &capacity in &caps {
        let mut rng = Rng(seed ^ (capacity as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for k in 0..n {
            let (clients, steps) = scenario(&mut rng);
            match check(&cluster, capacity, clients, &steps).await {
                Outcome::Same => {}
                Outcome::Invalid => invalid += 1,
                Outcome::Diverged(b, p) => {
                    diverged += 1;
                    let sig = signature(&b, &p);
                    eprintln!("diverged: capacity {capacity} scenario {k}: {sig}");
                    if reports.len() >= max_reports || !seen.insert(sig) {
                        continue;
                    }
                    let min = minimize(&cluster, capacity, clients, steps.clone()).await;
                    let text = show(&min);
                    if reports.iter().any(|r| r.contains(&text)) {
                        continue;
                    }
                    let Outcome::Diverged(b, p) = check(&cluster, capacity, clients, &min).await
                    else {
                        continue;
                    };
                    let report = format!(
                        "capacity {capacity}, scenario {k}, {clients} client(s):\n{text}  broker:\n    {}\n  postgres:\n    {}\n",
                        b.join("\n    "),
                        p.join("\n    ")
                    );
                    eprintln!("DIVERGENCE\n{report}");
                    reports.push(report);
                }
            }
        }
    }
    eprintln!(
        "fuzz: {} scenarios, {diverged} diverged, {invalid} skipped (empty, or 53300 from the one-server pool)",
        n * caps.len()
    );
    assert!(reports.is_empty(), "divergences:\n{}", reports.join("\n"));
}
