//! Forwarding overhead: the same workloads straight to Postgres and through pgbroker, back to
//! back in one process, reported as a ratio (these machines are shared and noisy, so only the
//! ratio against a baseline from the same run means anything).
//!
//! `cargo bench --bench forwarding [-- SECONDS]`. The serverless fleet harness
//! (benches/serverless.rs) comes with the benchmark issue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::config::Config;
use pgbroker::sandbox::{Cluster, ClusterOptions};
use pgbroker::Broker;
use tokio_postgres::NoTls;

const CLIENTS: usize = 10;

/// How the clients of one run behave.
#[derive(Clone, Copy)]
struct Workload {
    /// Connect for every transaction (the cold path) instead of once.
    cold: bool,
    /// Give each client its own application_name (every function is different), so the
    /// broker replays it whenever a client lands on a server another one used last.
    distinct_apps: bool,
}

/// Runs `CLIENTS` tasks for `secs`; returns transactions per second.
async fn run(url: Arc<String>, secs: f64, load: Workload) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let url = match load.distinct_apps {
            true => Arc::new(format!("{url} application_name=fn{i}")),
            false => Arc::clone(&url),
        };
        let cold = load.cold;
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut client = None;
            while Instant::now() < deadline {
                if client.is_none() || cold {
                    let (c, conn) = tokio_postgres::connect(&url, NoTls).await?;
                    tokio::spawn(conn);
                    client = Some(c);
                }
                if let Some(c) = &client {
                    c.simple_query("SELECT 1").await?;
                }
                done += 1;
            }
            Ok::<u64, tokio_postgres::Error>(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / secs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let cluster = Cluster::start_with_app(ClusterOptions::default()).await?;
    let mut config = Config::default();
    config.listen.addr = "127.0.0.1:0".into();
    // Metrics are recorded as in production; the endpoint takes a free port.
    config.listen.metrics_addr = "127.0.0.1:0".into();
    config.pool.size = 8;
    cluster.configure(&mut config);
    let broker = Broker::bind(config).await?;
    let addr = broker.local_addr()?;
    let stop = broker.shutdown_token();
    let served = tokio::spawn(broker.run_until(std::future::pending()));
    let url = |port: u16| {
        Arc::new(format!(
            "host=127.0.0.1 port={port} user=app password=app dbname=app"
        ))
    };
    println!("{CLIENTS} clients, {secs}s per run, SELECT 1 (simple protocol)");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "workload", "direct tx/s", "pgbroker", "ratio"
    );
    let workloads = [
        (
            "warm connection",
            Workload {
                cold: false,
                distinct_apps: false,
            },
        ),
        (
            "warm, one app name each",
            Workload {
                cold: false,
                distinct_apps: true,
            },
        ),
        (
            "connection per transaction",
            Workload {
                cold: true,
                distinct_apps: false,
            },
        ),
    ];
    for (name, load) in workloads {
        let direct = run(url(cluster.port()), secs, load).await?;
        let pooled = run(url(addr.port()), secs, load).await?;
        println!(
            "{name:<28} {direct:>12.0} {pooled:>12.0} {:>8.2}",
            pooled / direct
        );
    }
    stop.cancel();
    served.await?;
    Ok(())
}
