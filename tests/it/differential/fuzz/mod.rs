//! Randomized differential run: seeded scenarios (see [`gen`]) run on a direct connection to
//! Postgres and through the broker on every target of [`super::broker_targets`]; each broker
//! transcript must be the direct one. A divergence is minimized and printed. Scenarios that
//! cannot be compared (nothing well-formed generated, or 53300 from the one-server pool) are
//! counted and printed as skipped, and the run fails when they are more than a fifth.
//!
//! FUZZ_SEED, FUZZ_N (scenarios per capacity, 40 by default), FUZZ_CAPS ("1,250") and
//! FUZZ_MAX_REPORTS tune a run; FUZZ_SHOW_INVALID prints the skipped scenarios. Written by a
//! reviewer's randomized hunt; its findings are in the other differential tests.

mod gen;

use pgbroker::sandbox::Cluster;

use super::oracle::{transcript, Exchange, Target, Until};
use gen::{show, Gen, Msg, Rng, Step, KNOWN};

/// Largest share of generated scenarios that may be skipped as invalid, in percent.
const MAX_INVALID_PERCENT: usize = 20;

/// What a scenario runs with.
#[derive(Clone, Copy)]
struct Case {
    capacity: usize,
    clients: usize,
    /// Scenarios include the divergences of [`KNOWN`].
    known: bool,
}

/// Outcome of one scenario.
enum Outcome {
    Same,
    /// Not comparable: empty, or broken by the one-server pool (53300).
    Invalid,
    /// A broker run (`.0`) read `.1` where Postgres sent `.2`.
    Diverged(&'static str, Vec<String>, Vec<String>),
}

/// The steps as exchanges: reading the ReadyForQuery counts `owed` (from the direct run),
/// or without them what the messages owe.
fn exchanges(steps: &[Step], owed: Option<&[usize]>) -> Vec<Exchange> {
    let until = |i: usize, step: &Step| match (owed, step.owed()) {
        (Some(owed), _) => Until::Ready(owed[i]),
        (None, (n, true)) => Until::Quiet(n),
        (None, (n, false)) => Until::Ready(n),
    };
    let exchange = |(i, step): (usize, &Step)| Exchange {
        client: step.client,
        bytes: step.msgs.iter().flat_map(Msg::encode).collect(),
        until: until(i, step),
    };
    steps.iter().enumerate().map(exchange).collect()
}

/// The tokens of a transcript line: split at spaces outside brackets (`E:26000[the text]`).
fn tokens(line: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in line.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ' ' if depth == 0 => {
                out.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&line[start..]);
    out
}

/// Transcripts equal, but for [`KNOWN`]'s part 4 tolerances when `known` divergences are
/// left out.
fn same(broker: &[String], pg: &[String], known: bool) -> bool {
    let token_same = |x: &&str, y: &&str| {
        x == y
            || (!known && x.starts_with("E:42P05[") && y.starts_with("E:42601["))
            || (!known && x.contains("\"pgbroker_*\"") && x.get(..8) == y.get(..8))
    };
    broker.len() == pg.len()
        && broker.iter().zip(pg).all(|(b, p)| {
            let (b, p) = (tokens(b), tokens(p));
            b.len() == p.len() && b.iter().zip(&p).all(|(x, y)| token_same(x, y))
        })
}

/// The first tokens that differ, to group divergences.
fn signature(broker: &[String], pg: &[String]) -> String {
    for (b, p) in broker.iter().zip(pg) {
        for (x, y) in tokens(b).into_iter().zip(tokens(p)) {
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

/// How many ReadyForQuery messages each line of a transcript shows.
fn ready_counts(lines: &[String]) -> Vec<usize> {
    let ready = |t: &&str| t.len() == 2 && t.starts_with('Z');
    let count = |l: &String| tokens(l).into_iter().filter(ready).count();
    lines.iter().map(count).collect()
}

async fn check(cluster: &Cluster, case: Case, steps: &[Step]) -> Outcome {
    if steps.is_empty() || !steps.iter().all(|s| s.well_formed(case.known)) {
        return Outcome::Invalid;
    }
    let probe = exchanges(steps, None);
    let pg = transcript(cluster, Target::Direct, case.clients, &probe).await;
    let owed = ready_counts(&pg[..steps.len()]);
    let exchanges = exchanges(steps, Some(&owed));
    for (label, target) in super::broker_targets(case.capacity) {
        let broker = transcript(cluster, target, case.clients, &exchanges).await;
        if broker.iter().any(|l| l.contains("E:53300")) {
            if std::env::var("FUZZ_SHOW_INVALID").is_ok() {
                let (b, p) = (broker.join("\n    "), pg.join("\n    "));
                let s = show(steps);
                eprintln!("invalid ({label}):\n{s}  broker:\n    {b}\n  postgres:\n    {p}");
            }
            return Outcome::Invalid;
        }
        if !same(&broker, &pg, case.known) {
            return Outcome::Diverged(label, broker, pg);
        }
    }
    Outcome::Same
}

async fn diverges(cluster: &Cluster, case: Case, steps: &[Step]) -> bool {
    matches!(check(cluster, case, steps).await, Outcome::Diverged(..))
}

/// Greedy minimization: drop steps, then messages, while it still diverges.
async fn minimize(cluster: &Cluster, case: Case, steps: Vec<Step>) -> Vec<Step> {
    let mut best = steps;
    loop {
        let mut progress = false;
        let mut i = 0;
        while i < best.len() {
            let mut cand = best.clone();
            cand.remove(i);
            if diverges(cluster, case, &cand).await {
                (best, progress) = (cand, true);
            } else {
                i += 1;
            }
        }
        for s in 0.. {
            let mut j = 0;
            while s < best.len() && j < best[s].msgs.len() {
                let mut cand = best.clone();
                cand[s].msgs.remove(j);
                if cand[s].msgs.is_empty() {
                    cand.remove(s);
                }
                if diverges(cluster, case, &cand).await {
                    (best, progress) = (cand, true);
                } else {
                    j += 1;
                }
            }
            if s >= best.len() {
                break;
            }
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

/// Tallies of a run.
#[derive(Default)]
struct Tally {
    scenarios: usize,
    invalid: usize,
    diverged: usize,
    steps: usize,
    dropped: usize,
    reports: Vec<String>,
    signatures: std::collections::HashSet<String>,
}

impl Tally {
    /// Minimizes and records a divergence not seen before (at most FUZZ_MAX_REPORTS).
    async fn diverged(
        &mut self,
        cluster: &Cluster,
        case: Case,
        k: usize,
        steps: &[Step],
        sig: String,
    ) {
        self.diverged += 1;
        eprintln!("diverged: capacity {} scenario {k}: {sig}", case.capacity);
        if self.reports.len() >= env_or("FUZZ_MAX_REPORTS", 20) || !self.signatures.insert(sig) {
            return;
        }
        let min = minimize(cluster, case, steps.to_vec()).await;
        let text = show(&min);
        if self.reports.iter().any(|r| r.contains(&text)) {
            return;
        }
        let Outcome::Diverged(label, b, p) = check(cluster, case, &min).await else {
            return;
        };
        let (b, p, clients) = (b.join("\n    "), p.join("\n    "), case.clients);
        let report = format!(
            "capacity {}, scenario {k}, {clients} client(s), {label}:\n{text}  broker:\n    {b}\n  postgres:\n    {p}\n",
            case.capacity
        );
        eprintln!("DIVERGENCE\n{report}");
        self.reports.push(report);
    }
}

/// The capacities to run with (FUZZ_CAPS).
fn capacities() -> Vec<usize> {
    std::env::var("FUZZ_CAPS")
        .unwrap_or_else(|_| "1,250".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

async fn fuzz(known: bool) {
    let seed: u64 = env_or("FUZZ_SEED", 0x5eed_1234_abcd_0001);
    let n: usize = env_or("FUZZ_N", 40);
    match known {
        true => eprintln!("known divergences left out: none"),
        false => eprintln!("known divergences left out:\n  - {}", KNOWN.join("\n  - ")),
    }
    let cluster = crate::common::cluster(100).await;
    let mut tally = Tally::default();
    for capacity in capacities() {
        let rng = Rng(seed ^ (capacity as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut gen = Gen { rng, known };
        for k in 0..n {
            let (clients, steps, dropped) = gen.scenario();
            let case = Case {
                capacity,
                clients,
                known,
            };
            tally.scenarios += 1;
            tally.steps += steps.len() + dropped;
            tally.dropped += dropped;
            match check(&cluster, case, &steps).await {
                Outcome::Same => {}
                Outcome::Invalid => tally.invalid += 1,
                Outcome::Diverged(_, b, p) => {
                    let sig = signature(&b, &p);
                    tally.diverged(&cluster, case, k, &steps, sig).await;
                }
            }
        }
    }
    tally.conclude();
}

impl Tally {
    /// Prints the counts; fails on a divergence or when too many scenarios were skipped.
    fn conclude(self) {
        let Tally {
            scenarios,
            invalid,
            diverged,
            steps,
            dropped,
            reports,
            ..
        } = self;
        eprintln!(
            "fuzz: {scenarios} scenarios, {diverged} diverged, {invalid} skipped as invalid \
             (nothing well-formed, or 53300 from the one-server pool); {dropped} of {steps} \
             generated steps left out as ill-formed"
        );
        assert!(reports.is_empty(), "divergences:\n{}", reports.join("\n"));
        assert!(
            invalid * 100 <= scenarios * MAX_INVALID_PERCENT,
            "{invalid} of {scenarios} scenarios skipped as invalid: the run compares too little"
        );
    }
}

#[tokio::test]
async fn fuzz_against_postgres() {
    fuzz(false).await;
}

#[tokio::test]
#[ignore = "issue 12 parts 1-4: with the known divergences (gen::KNOWN) put back"]
async fn fuzz_with_known_divergences() {
    fuzz(true).await;
}
