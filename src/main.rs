//! The pgbroker command line: run the broker, check a config, run a demo, make a SCRAM secret.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use pgbroker::config::Checked;
use pgbroker::sandbox::{self, Cluster, ClusterOptions};
use pgbroker::{Broker, Config};

#[derive(Parser, Debug)]
#[command(
    name = "pgbroker",
    version,
    about = "PostgreSQL connection broker for serverless functions",
    after_help = "With no command, runs the broker with the --config file until SIGTERM or \
                  Ctrl-C (a second Ctrl-C ends the grace period for transactions in flight)."
)]
struct Cli {
    /// Path of the configuration file.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Log format (RUST_LOG sets the level, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config and print the effective config (passwords redacted); exit 1 on
    /// an error, 0 otherwise, with a warning on stderr for what looks like a mistake.
    Check {
        /// Path of the configuration file.
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Also run the backend check once (as /readyz does) and compare pool.size with the
        /// server's max_connections; exit 1 when the check fails.
        #[arg(long)]
        online: bool,
    },
    /// Run a throwaway Postgres (needs initdb and pg_ctl) with pgbroker in front of it on
    /// the config's listen address (127.0.0.1:6432 by default) until Ctrl-C; the config
    /// file is read if it exists, else the defaults are used.
    Demo {
        /// Path of the configuration file.
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Read a password on stdin and print its SCRAM-SHA-256 secret.
    ScramSecret {
        /// PBKDF2 iterations.
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = match cli.command {
        None => runtime().and_then(|rt| rt.block_on(run(&cli.config))),
        Some(Command::Check { config, online }) => check(&config, online),
        Some(Command::Demo { config }) => runtime().and_then(|rt| rt.block_on(demo(&config))),
        Some(Command::ScramSecret { iterations }) => scram_secret(iterations),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgbroker: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    serve(config).await
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let broker = Broker::bind(config).await?;
    let metrics = broker
        .metrics_addr()
        .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"));
    tracing::info!(addr = %broker.local_addr()?, %metrics, "pgbroker listening");
    run_broker(broker).await;
    Ok(())
}

/// Runs until the first signal; a second one ends the grace period at once.
async fn run_broker(broker: Broker) {
    let abort = broker.abort_token();
    let second = tokio::spawn(async move {
        signal().await;
        signal().await;
        tracing::warn!("second signal: ending the remaining sessions now");
        abort.cancel();
    });
    broker
        .run_until(async {
            // The spawned task hears the first signal too; wait for it here as well.
            signal().await;
        })
        .await;
    second.abort();
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn check(path: &Path, online: bool) -> anyhow::Result<()> {
    let mut checked = Config::check(path)?;
    if online {
        runtime()?.block_on(check_online(&mut checked))?;
    }
    for warning in &checked.warnings {
        eprintln!("pgbroker: warning: {warning}");
    }
    let mut config = checked.config;
    for user in &mut config.users {
        user.password = "<redacted>".into();
    }
    if let Some(auth) = &mut config.auth {
        auth.password = "<redacted>".into();
    }
    print!("{}", config.to_toml());
    Ok(())
}

/// Runs the backend check once and compares the pool with what Postgres allows.
async fn check_online(checked: &mut Checked) -> anyhow::Result<()> {
    let probe = pgbroker::server::backend_probe(&checked.config)?;
    let counts = probe
        .check()
        .await
        .map_err(anyhow::Error::msg)
        .context("--online: the backend check failed")?;
    match counts {
        Some(c) => checked.against_server(c.max_connections, c.reserved),
        None => eprintln!(
            "pgbroker: --online: reached the backend, but could not ask its max_connections ({})",
            probe.describe()
        ),
    }
    Ok(())
}

fn scram_secret(iterations: u32) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password on stdin");
    println!("{}", pgbroker::auth::scram_secret(password, iterations));
    Ok(())
}

/// A throwaway cluster with role and database `app` (password `app`), pgbroker in front of
/// it with config.toml's settings (or the defaults when there is none), until Ctrl-C.
async fn demo(path: &Path) -> anyhow::Result<()> {
    let mut config = if path.exists() {
        Config::load(path)?
    } else {
        Config::default()
    };
    // Fail before initdb when an address is taken (another demo running).
    for addr in [&config.listen.addr, &config.listen.metrics_addr] {
        if !addr.is_empty() {
            drop(
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr}"))?,
            );
        }
    }
    let result = demo_cluster(&mut config).await;
    sandbox::remove_template();
    result
}

async fn demo_cluster(config: &mut Config) -> anyhow::Result<()> {
    let cluster = Cluster::start_with_app(ClusterOptions::default())
        .await
        .context("starting a throwaway Postgres")?;
    cluster.configure(config);
    let broker = Broker::bind(config.clone()).await?;
    let addr = broker.local_addr()?;
    println!(
        "Postgres (throwaway) on {}:{}, data in {}",
        cluster.host(),
        cluster.port(),
        cluster.data_dir().display()
    );
    println!("pgbroker listening on {addr}");
    println!(
        "connect:  psql \"postgres://app:app@{}:{}/app\"",
        addr.ip(),
        addr.port()
    );
    if let Some(metrics) = broker.metrics_addr() {
        println!("metrics:  http://{metrics}/metrics  (also /healthz, /readyz, /status)");
    }
    println!("Ctrl-C stops pgbroker and removes the cluster.");
    run_broker(broker).await;
    drop(cluster);
    println!("pgbroker stopped; the throwaway cluster is removed.");
    Ok(())
}
