//! Where the fleet connects in each mode: straight to Postgres, through pgbroker (the
//! release binary as a child process, so its CPU and memory are its own), or through
//! PgBouncer when one is on PATH (transaction pooling, the same pool size).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgbroker::sandbox::Cluster;

/// One way to reach the database.
pub struct Target {
    /// "unpooled", "pooled" or "pgbouncer".
    pub mode: &'static str,
    /// The login role of this mode's connections, so each mode's server connections can
    /// be told apart in pg_stat_activity (the password is the same as the name).
    pub user: &'static str,
    /// host and port for a connection string.
    pub port: u16,
    /// The process between the fleet and Postgres, if any.
    pub child: Option<Child>,
    /// Its config file, removed with it.
    config: Option<std::path::PathBuf>,
}

impl Target {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A connection string for an invocation of function `app`.
    pub fn url(&self, app: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={user} dbname=app application_name={app} connect_timeout=30",
            self.port,
            user = self.user,
        )
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(path) = &self.config {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The login role of a mode.
pub fn role(mode: &str) -> &'static str {
    match mode {
        "pooled" => "broker",
        "pgbouncer" => "bouncer",
        _ => "app",
    }
}

/// A fresh target of `mode` ("unpooled", "pooled", "pgbouncer").
pub async fn start(
    mode: &str,
    cluster: &Cluster,
    pool_size: usize,
    broker_threads: Option<usize>,
) -> anyhow::Result<Target> {
    match mode {
        "pooled" => pooled(cluster, pool_size, Duration::from_secs(10), broker_threads).await,
        "pgbouncer" => pgbouncer(cluster, pool_size).await,
        _ => Ok(Target {
            mode: "unpooled",
            user: role("unpooled"),
            port: cluster.port(),
            child: None,
            config: None,
        }),
    }
}

/// pgbroker in transaction mode with `pool_size` server connections, caps out of the way
/// (the harness measures the pool, not the per-function limits; the concurrency caps bound
/// nothing by default).
async fn pooled(
    cluster: &Cluster,
    pool_size: usize,
    borrow_timeout: Duration,
    threads: Option<usize>,
) -> anyhow::Result<Target> {
    let port = pgbroker::sandbox::free_port()?;
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:{port}\"\nmetrics_addr = \"127.0.0.1:0\"\n\
         max_client_connections = 19000\n\
         [backend]\nport = {pg}\nmax_concurrent_logins = {pool_size}\n\
         [pool]\nsize = {pool_size}\nborrow_timeout = \"{ms}ms\"\n\
         [limits]\ndefault_function_clients = 100000\ndefault_function_waiting = 0\n\
         [[users]]\nname = \"broker\"\npassword = \"broker\"\n",
        pg = cluster.port(),
        ms = borrow_timeout.as_millis(),
    );
    let path = std::env::temp_dir().join(format!("pgbroker-bench-{}.toml", std::process::id()));
    std::fs::write(&path, config)?;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgbroker"));
    command
        .args(["--config", path.to_str().unwrap_or_default()])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    if let Some(threads) = threads {
        // tokio's runtime reads it; unset, it starts one worker per CPU.
        command.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
    let child = command.spawn().context("starting pgbroker")?;
    let target = Target {
        mode: "pooled",
        user: role("pooled"),
        port,
        child: Some(child),
        config: Some(path),
    };
    wait_listening(port).await?;
    Ok(target)
}

/// PgBouncer in transaction mode with the same pool size. Its auth_file holds the role's
/// SCRAM verifier from pg_authid, as a production setup would: a login costs it no key
/// derivation, and it logs in to Postgres with the client's proof.
async fn pgbouncer(cluster: &Cluster, pool_size: usize) -> anyhow::Result<Target> {
    let bin = find_on_path("pgbouncer").context("pgbouncer is not installed")?;
    let port = pgbroker::sandbox::free_port()?;
    let superuser = cluster.superuser("postgres").await?;
    let sql = "SELECT rolpassword FROM pg_authid WHERE rolname = 'bouncer'";
    let verifier: String = superuser.query_one(sql, &[]).await?.get(0);
    let users = cluster.write_file("userlist.txt", &format!("\"bouncer\" \"{verifier}\"\n"))?;
    let ini = format!(
        "[databases]\napp = host=127.0.0.1 port={pg} dbname=app\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = scram-sha-256\nauth_file = {users}\npool_mode = transaction\n\
         default_pool_size = {pool_size}\nmax_client_conn = 19000\n\
         ignore_startup_parameters = extra_float_digits\nlog_connections = 0\n\
         log_disconnections = 0\n",
        pg = cluster.port(),
        users = users.display(),
    );
    let ini = cluster.write_file("pgbouncer.ini", &ini)?;
    let child = cluster
        .companion(&bin)
        .arg(ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting pgbouncer")?;
    let target = Target {
        mode: "pgbouncer",
        user: role("pgbouncer"),
        port,
        child: Some(child),
        config: None,
    };
    wait_listening(port).await?;
    Ok(target)
}

/// `name` on PATH, or in /usr/sbin (where Debian puts pgbouncer) when PATH lacks it.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

async fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on port {port} after 20s")
}
