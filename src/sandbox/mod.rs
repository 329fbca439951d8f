//! Throwaway PostgreSQL clusters for `pgbroker demo`, the integration tests and the benchmarks.
//!
//! `initdb` runs once per process into a template; each [`Cluster`] copies it into a fresh
//! temporary directory, takes a free port on 127.0.0.1 and starts with `pg_ctl`; Drop stops the
//! server (`-m immediate`) and removes the directory. PostgreSQL refuses to run as root, so a
//! root process runs it as the `postgres` account (else `nobody`). Directories of processes that
//! died without cleaning up are swept when the next process builds its template. See
//! <https://www.postgresql.org/docs/current/app-initdb.html> and `app-pg-ctl.html` beside it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;
use std::{fs, io};

use tokio_postgres::{Client, Error as PgError, NoTls};

pub use setup::free_port;
use setup::{blocking, cluster_root, run, template, write_owned, Pg};
pub use setup::{find_bin_dir, remove_template};

mod access;
mod setup;
#[cfg(test)]
mod tests;
mod tls;

type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// How many ports `start` tries when the one it picked was taken meanwhile.
const PORT_ATTEMPTS: u32 = 5;
/// Bound on a client's connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the server log that an error carries.
const LOG_TAIL_LINES: usize = 20;

/// Errors of starting, stopping or talking to a sandbox cluster.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No directory holds both `initdb` and `pg_ctl`.
    #[error("initdb and pg_ctl not found (searched {searched:?})")]
    NoBinaries {
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// A PostgreSQL program exited with a failure.
    #[error("{} failed ({status}): {stderr}", program.display())]
    Command {
        /// The program that failed.
        program: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error (and the server log, when a start failed).
        stderr: String,
    },
    /// Running as root, and neither a `postgres` nor a `nobody` account exists to run PostgreSQL.
    #[error("running as root and no postgres or nobody account to run PostgreSQL as")]
    NoAccount,
    /// A file system or socket operation failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file, directory, program or address concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A client connection or query failed.
    #[error("PostgreSQL client error")]
    Postgres {
        /// The underlying error.
        #[from]
        source: PgError,
    },
    /// The server did not take up a change of its configuration.
    #[error("the server did not apply {what}: {log}")]
    NotApplied {
        /// The change: a reload, TLS.
        what: &'static str,
        /// The end of the server log, which says why.
        log: String,
    },
    /// The blocking task running the programs was cancelled.
    #[error("sandbox task cancelled")]
    Task {
        /// The underlying error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Tags an I/O error with the path it concerns.
fn io_err(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.as_ref().to_path_buf();
    move |source| SandboxError::Io { path, source }
}

/// Name, password and database of the login that [`Cluster::start_with_app`] creates.
pub const APP: &str = "app";

/// How to configure a new cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// Extra postgresql.conf lines, applied after the sandbox's own.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        let (max_connections, extra_conf) = (100, Vec::new());
        ClusterOptions {
            max_connections,
            extra_conf,
        }
    }
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL (or postgresql.conf) string literal.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A running throwaway PostgreSQL server in a temporary directory, stopped and removed on Drop.
#[derive(Debug)]
pub struct Cluster {
    pg: Pg,
    root: PathBuf,
    data_dir: PathBuf,
    port: u16,
    /// Serialises edits of pg_hba.conf.
    hba: Mutex<()>,
}

impl Cluster {
    /// The superuser's name.
    pub const SUPERUSER: &'static str = "postgres";
    /// The superuser's password.
    pub const SUPERUSER_PASSWORD: &'static str = "postgres";
    /// The address the server listens on.
    const HOST: &'static str = "127.0.0.1";

    /// Creates and starts a cluster on a free port.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        blocking(move || Self::start_blocking(&opts, free_port)).await
    }

    /// Copies the template and starts it, taking ports from `next_port` until one is free.
    fn start_blocking(
        opts: &ClusterOptions,
        mut next_port: impl FnMut() -> io::Result<u16>,
    ) -> Result<Cluster> {
        let pg = Pg::discover()?;
        let (template, root) = (template(&pg)?, cluster_root(&pg)?);
        let (data_dir, hba, port) = (root.join("data"), Mutex::new(()), 0);
        // Built before the copy, so that Drop removes the directory on any failure.
        let mut cluster = Cluster {
            pg,
            root,
            data_dir,
            port,
            hba,
        };
        // cp runs as PostgreSQL's account, so the copy is its own, with the template's modes.
        let mut copy = cluster.pg.command(Path::new("cp"), &cluster.root);
        run(copy.arg("-a").arg(&template).arg(&cluster.data_dir))?;
        let mut attempt = 1;
        loop {
            cluster.port = next_port().map_err(io_err(Self::HOST))?;
            cluster.write_conf(opts)?;
            match cluster.launch() {
                Err(_) if attempt < PORT_ATTEMPTS && cluster.port_taken() => attempt += 1,
                result => return result.map(|()| cluster),
            }
        }
    }

    fn port_taken(&self) -> bool {
        self.log().contains("Address already in use")
    }

    /// Writes the per-cluster settings, which postgresql.conf includes.
    fn write_conf(&self, opts: &ClusterOptions) -> Result<()> {
        let socket_dir = quote_literal(&self.root.to_string_lossy());
        let mut conf = format!(
            "port = {}\nunix_socket_directories = {socket_dir}\n",
            self.port
        );
        conf += &format!("max_connections = {}\n", opts.max_connections);
        // Written by enable_tls; before extra_conf, so that a test's own lines win.
        conf += &format!("include_if_exists = {}\n", quote_literal(tls::CONF_FILE));
        opts.extra_conf
            .iter()
            .for_each(|line| conf += &format!("{line}\n"));
        write_owned(&self.pg, &self.data_dir.join("sandbox.conf"), &conf)
    }

    /// `pg_ctl start`; a failure carries the server log.
    fn launch(&self) -> Result<()> {
        let log = self.root.join("log");
        let _ = fs::remove_file(&log);
        let args = [OsStr::new("-l"), log.as_os_str(), OsStr::new("start")];
        let mut result = self.pg.pg_ctl(&self.root, &args).map(drop);
        if let Err(SandboxError::Command { stderr, .. }) = &mut result {
            *stderr += &format!("\n--- server log ---\n{}", self.log());
        }
        result
    }

    fn log(&self) -> String {
        fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    /// The last lines of the server log, for an error.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// The host the server listens on: "127.0.0.1".
    pub fn host(&self) -> &str {
        Self::HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `program` run by the account that runs PostgreSQL (never root), in this cluster's
    /// temporary directory: for companions such as PgBouncer in the benchmarks.
    pub fn companion(&self, program: &Path) -> std::process::Command {
        self.pg.command(program, &self.root)
    }

    /// Writes `name` into this cluster's temporary directory, owned by PostgreSQL's
    /// account; returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.root.join(name);
        write_owned(&self.pg, &path, text)?;
        Ok(path)
    }

    /// The postmaster's process id (from postmaster.pid), for CPU accounting.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pidfile = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pidfile.lines().next()?.trim().parse().ok()
    }

    /// The data directory (inside the temporary directory that Drop removes).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A superuser client over the private unix socket (trust), so that it works whatever
    /// pg_hba.conf asks of TCP clients (TLS, md5); the connection task is spawned on the
    /// current runtime.
    pub async fn superuser(&self, database: &str) -> Result<Client> {
        let mut config = tokio_postgres::Config::new();
        config.host_path(&self.root).port(self.port);
        config.user(Self::SUPERUSER).dbname(database);
        Ok(spawn_client(config).await?)
    }

    /// A client over TCP, without TLS.
    async fn connect(&self, user: &str, pass: &str, db: &str) -> Result<Client, PgError> {
        let mut config = tokio_postgres::Config::new();
        config.host(Self::HOST).port(self.port).user(user);
        config.password(pass).dbname(db);
        spawn_client(config).await
    }

    /// A cluster with the login role and database `app` (password `app`) that `demo`, the
    /// tests and the benches use.
    pub async fn start_with_app(opts: ClusterOptions) -> Result<Cluster> {
        let cluster = Cluster::start(opts).await?;
        cluster.create_login(APP, APP, APP).await?;
        Ok(cluster)
    }

    /// Points `config`'s backend at this cluster and makes sure user `app` (password `app`)
    /// is configured.
    pub fn configure(&self, config: &mut crate::Config) {
        config.backend.host = self.host().to_owned();
        config.backend.port = self.port();
        if !config.users.iter().any(|u| u.name == APP) {
            config.users.push(crate::config::User {
                name: APP.into(),
                password: APP.into(),
                password_file: None,
                account: None,
                auth_method: None,
            });
        }
    }

    /// Stops the server now (`pg_ctl stop -m fast`); Drop still removes the directory.
    pub fn stop(&mut self) -> Result<()> {
        let stopped = self.pg.pg_ctl(&self.root, &["-m", "fast", "stop"]);
        stopped.map(drop)
    }

    /// Starts the server again, on the same port, after [`Cluster::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.launch()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let dir = self.root.display();
        if self.data_dir.join("postmaster.pid").exists() {
            let stopped = self.pg.pg_ctl(&self.root, &["-m", "immediate", "stop"]);
            if let Err(error) = stopped {
                tracing::warn!(%error, %dir, "could not stop sandbox cluster");
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.root) {
            tracing::warn!(%error, %dir, "could not remove sandbox cluster");
        }
    }
}

/// Connects without TLS, and spawns the connection task on the current runtime.
async fn spawn_client(mut config: tokio_postgres::Config) -> Result<Client, PgError> {
    let connecting = config.connect_timeout(CONNECT_TIMEOUT).connect(NoTls);
    let (client, connection) = connecting.await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "sandbox client connection ended");
        }
    });
    Ok(client)
}
