//! The pgbroker command line: run the broker, check a config, run a demo, make a SCRAM secret.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use pgbroker::sandbox::{Cluster, ClusterOptions};
use pgbroker::{Broker, Config};

#[derive(Parser, Debug)]
#[command(
    name = "pgbroker",
    version,
    about = "PostgreSQL connection broker for serverless functions"
)]
struct Cli {
    /// Path of the configuration file.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    /// Log format (RUST_LOG sets the level, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config and print the effective config.
    Check,
    /// Run a throwaway local Postgres with pgbroker in front of it.
    Demo,
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
        Some(Command::Check) => check(&cli.config),
        Some(Command::Demo) => runtime().and_then(|rt| rt.block_on(demo(&cli.config))),
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
        .with_writer(std::io::stderr);
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
    tracing::info!(addr = %broker.local_addr()?, "pgbroker listening");
    broker.run_until(signal()).await;
    Ok(())
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

fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    config.validate()?;
    print!("{}", config.to_toml());
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
    let cluster = Cluster::start_with_app(ClusterOptions::default())
        .await
        .context("starting a throwaway Postgres")?;
    cluster.configure(&mut config);
    let broker = Broker::bind(config).await?;
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
    println!("Ctrl-C stops pgbroker and removes the cluster.");
    broker.run_until(signal()).await;
    drop(cluster);
    Ok(())
}
