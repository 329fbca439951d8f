//! The serverless harness: a simulated fleet of function invocations against a throwaway
//! Postgres (max_connections = 100, SCRAM), unpooled (straight to Postgres), pooled
//! (through pgbroker, a child process) and through PgBouncer when `pgbouncer` is on PATH,
//! back to back in one run. Four scenarios:
//!
//! - `cold`: invocations that connect, run one short transaction and disconnect;
//! - `burst`: 5 × max_connections such invocations released at once;
//! - `warm`: containers that keep their connection, invoking back to back;
//! - `warm_prepared`: the same with a named prepared statement each (tokio-postgres
//!   `prepare` + `query`), as most drivers send;
//! - `frozen`: thousands of idle connections held open while a few functions work.
//!
//! Per scenario and mode: invocations/s, connect and invocation latency percentiles, errors
//! by SQLSTATE, peak server connections, CPU and memory of the middle process, and the
//! server-side CPU per invocation (Postgres + middle, from /proc). Printed as a table,
//! written to target/bench/serverless.json and drawn at target/bench/serverless.svg.
//!
//! `cargo bench --bench serverless -- [--quick] [--scenario cold,burst,warm,frozen]
//! [--clients N] [--duration SECS] [--pool-size N] [--fleet N] [--broker-threads N]`

mod fleet;
mod probe;
mod report;
mod targets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pgbroker::sandbox::{Cluster, ClusterOptions};

use fleet::Tally;
use probe::Sampler;
use report::Row;
use targets::Target;

/// Postgres' max_connections in the harness.
const MAX_CONNECTIONS: u32 = 100;

#[derive(Parser, Debug)]
#[command(about = "pgbroker's serverless benchmark harness")]
struct Args {
    /// A short run for CI (under a minute): 2s scenarios, a fleet of 1,000.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated: cold, burst, warm, warm_prepared, frozen.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cold,burst,warm,warm_prepared,frozen"
    )]
    scenario: Vec<String>,
    /// Concurrent clients of the cold and warm scenarios.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Seconds per timed scenario (default 10; 2 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Server connections of pgbroker's and PgBouncer's pool.
    #[arg(long, default_value_t = 20)]
    pool_size: usize,
    /// Idle clients of the frozen fleet (default 10,000; 1,000 with --quick).
    #[arg(long)]
    fleet: Option<usize>,
    /// Worker threads of pgbroker's runtime (TOKIO_WORKER_THREADS); default one per CPU.
    #[arg(long)]
    broker_threads: Option<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What every measurement needs.
struct Bench {
    args: Args,
    duration: Duration,
    superuser: Arc<tokio_postgres::Client>,
    postmaster: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (cluster, bench) = Bench::set_up(Args::parse()).await?;
    let scenarios = bench.scenarios()?;
    let modes = modes();
    let started = Instant::now();
    let rows = bench.run_all(&cluster, &scenarios, &modes).await?;
    println!(
        "\n{} runs in {:.0}s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    println!();
    report::print(&rows);
    bench.write_reports(&rows)?;
    check(&rows, &scenarios, &modes, bench.fleet_size())
}

/// unpooled and pooled, and pgbouncer when it is on PATH.
fn modes() -> Vec<&'static str> {
    let mut modes = vec!["unpooled", "pooled"];
    match targets::find_on_path("pgbouncer") {
        Some(_) => modes.push("pgbouncer"),
        None => println!("(pgbouncer not on PATH: its column is left out)"),
    }
    modes
}

/// A fleet of idle clients held open, and the bytes the middle grew by to hold them (when
/// its process is known).
struct Frozen {
    held: Vec<tokio_postgres::Client>,
    bytes: Option<f64>,
}

impl Bench {
    /// Starts the cluster (max_connections = [`MAX_CONNECTIONS`]) and seeds it.
    async fn set_up(args: Args) -> anyhow::Result<(Cluster, Bench)> {
        let duration =
            Duration::from_secs_f64(args.duration.unwrap_or(if args.quick { 2.0 } else { 10.0 }));
        let options = ClusterOptions {
            max_connections: MAX_CONNECTIONS,
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start_with_app(options).await?;
        let superuser = Arc::new(cluster.superuser("app").await?);
        let postmaster = cluster
            .postmaster_pid()
            .ok_or_else(|| anyhow::anyhow!("no postmaster.pid"))?;
        seed(&cluster).await?;
        let bench = Bench {
            args,
            duration,
            superuser,
            postmaster,
        };
        Ok((cluster, bench))
    }

    /// Every scenario in every mode, each against a middle of its own.
    async fn run_all(
        &self,
        cluster: &Cluster,
        scenarios: &[&'static str],
        modes: &[&'static str],
    ) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        for &scenario in scenarios {
            for &mode in modes {
                // A fresh middle for every run: no idle pool of another mode holds server
                // connections, and memory is measured from a clean start.
                let (pool, threads) = (self.args.pool_size, self.args.broker_threads);
                let target = targets::start(mode, cluster, pool, threads).await?;
                let row = self.run(scenario, &target).await?;
                drop(target);
                self.drained(targets::role(mode)).await;
                report::print(std::slice::from_ref(&row));
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Writes the rows and what the run was (date, options, machine) as JSON and SVG.
    fn write_reports(&self, rows: &[Row]) -> anyhow::Result<()> {
        let dir = output_dir();
        std::fs::create_dir_all(&dir)?;
        let about = serde_json::json!({
            "date": chrono_free_date(),
            "quick": self.args.quick,
            "clients": self.args.clients,
            "duration_s": self.duration.as_secs_f64(),
            "pool_size": self.args.pool_size,
            "broker_threads": self.args.broker_threads,
            "max_connections": MAX_CONNECTIONS,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        });
        report::write_json(&dir.join("serverless.json"), rows, &about)?;
        report::write_svg(&dir.join("serverless.svg"), rows)?;
        println!(
            "written: {0}/serverless.json, {0}/serverless.svg",
            dir.display()
        );
        Ok(())
    }

    /// The requested scenarios, checked before anything runs.
    fn scenarios(&self) -> anyhow::Result<Vec<&'static str>> {
        let known = ["cold", "burst", "warm", "warm_prepared", "frozen"];
        let pick = |name: &String| known.into_iter().find(|k| k == name);
        (self.args.scenario.iter())
            .map(|name| {
                pick(name).ok_or_else(|| anyhow::anyhow!("unknown scenario {name:?}: {known:?}"))
            })
            .collect()
    }

    fn fleet_size(&self) -> usize {
        (self.args.fleet).unwrap_or(if self.args.quick { 1_000 } else { 10_000 })
    }

    /// Waits (up to 10s) until no backend of `role` is left, so the next run starts with
    /// every connection slot free.
    async fn drained(&self, role: &str) {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1";
        for _ in 0..200 {
            match self.superuser.query_one(sql, &[&role]).await {
                Ok(row) if row.get::<_, i64>(0) == 0 => return,
                Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        println!("({role} still has backends after 10s)");
    }

    /// Runs one scenario against one target: the frozen fleet first when the scenario
    /// holds one, then the measured workload.
    async fn run(&self, name: &'static str, target: &Target) -> anyhow::Result<Row> {
        let frozen = if name == "frozen" {
            Some(self.freeze(target).await)
        } else {
            None
        };
        let mut row = self.measure(name, target).await?;
        if let Some(frozen) = &frozen {
            let held = frozen.held.len();
            row.idle_clients = Some(held);
            row.bytes_per_idle_client = (frozen.bytes)
                .filter(|_| held > 0)
                .map(|bytes| bytes / held as f64);
        }
        // The fleet is closed here. Let the middle and Postgres settle before the next run.
        drop(frozen);
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(row)
    }

    /// Opens the frozen fleet and measures what its idle clients cost the middle.
    async fn freeze(&self, target: &Target) -> Frozen {
        let size = self.fleet_size();
        let before = target.pid().map(probe::rss_bytes);
        let (held, opened) = fleet::freeze(target, size).await;
        // Idle clients give their buffers back after a reaper sweep (1s) of silence.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let after = target.pid().map(probe::rss_bytes);
        let bytes = before.zip(after).map(|(b, a)| a.saturating_sub(b) as f64);
        if !opened.errors.is_empty() {
            println!(
                "frozen/{}: {} of {size} idle clients connected; refused: {:?}",
                target.mode,
                held.len(),
                opened.errors
            );
        }
        Frozen { held, bytes }
    }

    /// Runs the scenario's workload with the peak samplers on, and the CPU the middle and
    /// Postgres spent over it.
    async fn measure(&self, name: &'static str, target: &Target) -> anyhow::Result<Row> {
        let sampler = Sampler::start(Arc::clone(&self.superuser), target.user, target.pid());
        let (mid0, pg0) = (
            target.pid().and_then(probe::cpu_seconds),
            probe::server_cpu_seconds(self.postmaster),
        );
        let started = Instant::now();
        let tally = self.scenario(name, target).await;
        let seconds = started.elapsed().as_secs_f64();
        let (mid1, pg1) = (
            target.pid().and_then(probe::cpu_seconds),
            probe::server_cpu_seconds(self.postmaster),
        );
        let peaks = sampler.finish().await;
        let mut row = Row::new(name, target.mode, &tally, seconds);
        row.peak_server_connections = peaks
            .server_connections
            .load(std::sync::atomic::Ordering::Relaxed);
        let middle = mid0.zip(mid1).map(|(a, b)| b - a);
        row.middle_cpu_seconds = middle;
        row.middle_peak_rss_mb = target
            .pid()
            .map(|_| peaks.rss.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1048576.0);
        let postgres = pg0.zip(pg1).map(|(a, b)| b - a);
        anyhow::ensure!(postgres.is_some(), "the postmaster is gone");
        row.postgres_cpu_seconds = postgres.unwrap_or_default();
        let done = row.invocations;
        let server = row.postgres_cpu_seconds + middle.unwrap_or(0.0);
        row.server_cpu_ms_per_invocation = per_invocation(server, done);
        row.middle_cpu_ms_per_invocation = middle.and_then(|m| per_invocation(m, done));
        Ok(row)
    }

    async fn scenario(&self, name: &str, target: &Target) -> Tally {
        let (clients, duration) = (self.args.clients, self.duration);
        match name {
            "cold" => fleet::cold(target, clients, duration).await,
            "burst" => fleet::burst(target, 5 * MAX_CONNECTIONS as usize).await,
            "warm" => fleet::warm(target, clients, duration, false).await,
            "warm_prepared" => fleet::warm(target, clients, duration, true).await,
            // A few functions keep working while the fleet sleeps.
            _ => fleet::warm(target, 4, duration, false).await,
        }
    }
}

/// CPU milliseconds per invocation; none when nothing completed.
fn per_invocation(seconds: f64, done: u64) -> Option<f64> {
    (done > 0).then(|| seconds * 1000.0 / done as f64)
}

/// A login role per mode (`broker`, `bouncer`; `app` exists) and the table the
/// invocations read: 10,000 rows by key.
async fn seed(cluster: &Cluster) -> anyhow::Result<()> {
    for role in ["broker", "bouncer"] {
        cluster.create_login(role, role, "app").await?;
    }
    let url = format!(
        "host=127.0.0.1 port={} user=app password=app dbname=app",
        cluster.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL); \
             INSERT INTO kv SELECT g, g * 7 FROM generate_series(1, 10000) g; ANALYZE kv; \
             GRANT SELECT ON kv TO broker, bouncer",
        )
        .await?;
    Ok(())
}

/// target/bench (or $CARGO_TARGET_DIR/bench).
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench")
}

/// Today's date (UTC) from the system clock, without a date crate.
fn chrono_free_date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// What CI holds the harness to, nothing about speed: every requested scenario ran in
/// every mode; through pgbroker nothing failed, the frozen fleet was held whole, and the
/// burst finished all its invocations, more than straight connections did.
fn check(rows: &[Row], scenarios: &[&str], modes: &[&str], fleet: usize) -> anyhow::Result<()> {
    let find = |scenario: &str, mode: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.mode == mode)
            .ok_or_else(|| anyhow::anyhow!("{scenario}/{mode} did not run"))
    };
    for scenario in scenarios {
        for mode in modes {
            find(scenario, mode)?;
        }
        let pooled = find(scenario, "pooled")?;
        anyhow::ensure!(
            pooled.errors.is_empty() && pooled.invocations > 0,
            "{scenario}/pooled: {} invocations, errors {:?}",
            pooled.invocations,
            pooled.errors
        );
    }
    if scenarios.contains(&"frozen") {
        let held = find("frozen", "pooled")?.idle_clients.unwrap_or(0);
        anyhow::ensure!(
            held == fleet,
            "frozen/pooled held {held} of {fleet} idle clients"
        );
    }
    if scenarios.contains(&"burst") {
        let (unpooled, pooled) = (find("burst", "unpooled")?, find("burst", "pooled")?);
        let burst = 5 * MAX_CONNECTIONS as u64;
        // When the clients' own PBKDF2 spreads the burst out enough, straight connections
        // stay under max_connections and lose nothing: the pool then wins on the server
        // connections it needed.
        let fewer = pooled.peak_server_connections < unpooled.peak_server_connections;
        anyhow::ensure!(
            pooled.invocations == burst && (pooled.invocations > unpooled.invocations || fewer),
            "burst: pooled finished {} of {burst} on {} server connections, unpooled {} on {} \
             (errors {:?})",
            pooled.invocations,
            pooled.peak_server_connections,
            unpooled.invocations,
            unpooled.peak_server_connections,
            unpooled.errors
        );
        println!(
            "check: on the burst the pool finished all {burst} on {} server connections; \
             straight connections lost {} and peaked at {}",
            pooled.peak_server_connections,
            unpooled.errors.values().sum::<u64>(),
            unpooled.peak_server_connections
        );
    }
    Ok(())
}
