//! Throwaway PostgreSQL clusters for `pgbroker demo`, the integration tests and the benchmarks.
//!
//! `initdb` runs once per process into a template; each [`Cluster`] copies it into a fresh
//! temporary directory, takes a free port on 127.0.0.1 and starts with `pg_ctl`; Drop stops the
//! server (`-m immediate`) and removes the directory. PostgreSQL refuses to run as root, so a
//! root process runs it as the `postgres` account (else `nobody`). Directories of processes that
//! died without cleaning up are swept when the next process builds its template. See
//! <https://www.postgresql.org/docs/current/app-initdb.html> and `app-pg-ctl.html` beside it.

use std::ffi::{OsStr, OsString};
use std::os::unix::{fs::lchown, fs::PermissionsExt, process::CommandExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use std::{env, fs, io, process};

use tokio_postgres::{Client, Error as PgError, NoTls};

type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// How many ports `start` tries when the one it picked was taken meanwhile.
const PORT_ATTEMPTS: u32 = 5;
/// Bound on a client's connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Logins tried, 100 ms apart, while the server reloads pg_hba.conf.
const HBA_RELOAD_ATTEMPTS: u32 = 50;
/// Fast and deterministic; 1 MB WAL segments keep the template (and each copy) small.
const INITDB_ARGS: &str = "-U postgres --auth-host=scram-sha-256 --auth-local=trust \
    --no-sync -E UTF8 --locale=C --wal-segsize=1";
/// Settings shared by every cluster, appended to the template's postgresql.conf.
const TEMPLATE_CONF: &str = "\n# pgbroker sandbox: fast, small, throwaway\n\
    listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\n\
    full_page_writes = off\nshared_buffers = 16MB\npassword_encryption = 'scram-sha-256'\n\
    include_if_exists = 'sandbox.conf'\n";
/// Client authentication: SCRAM over TCP, trust on the private unix socket.
const HBA: &str = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
/// Names of the directories made under the temp dir: prefix, then the pid of the process.
const DIR_PREFIXES: [&str; 2] = ["pgbroker-sandbox-", "pgbroker-template-"];

/// The template data directory of this process, made on first use.
static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);
/// Numbers the cluster directories of this process.
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

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

/// The PostgreSQL programs, and the (uid, gid) they run as when not the current user's.
#[derive(Debug, Clone)]
struct Pg {
    bin_dir: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Pg {
    fn discover() -> Result<Pg> {
        let (bin_dir, owner) = (find_bin_dir()?, unprivileged_owner()?);
        Ok(Pg { bin_dir, owner })
    }

    /// `program` (a path, or a name looked up on PATH) run by PostgreSQL's account in `cwd`.
    fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        // English messages: start() looks for "Address already in use" in the log.
        cmd.current_dir(cwd).env("LC_ALL", "C").env_remove("PGDATA");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// `pg_ctl -D root/data -w -t 60 <args>`.
    fn pg_ctl<S: AsRef<OsStr>>(&self, root: &Path, args: &[S]) -> Result<Output> {
        let mut cmd = self.command(&self.bin_dir.join("pg_ctl"), root);
        cmd.arg("-D")
            .arg(root.join("data"))
            .args(["-w", "-t", "60"]);
        run(cmd.args(args))
    }

    /// Gives `path` to the account that runs PostgreSQL.
    fn chown(&self, path: &Path) -> io::Result<()> {
        self.owner
            .map_or(Ok(()), |(u, g)| lchown(path, Some(u), Some(g)))
    }
}

/// Runs a program to completion; a failure status becomes [`SandboxError::Command`].
fn run(cmd: &mut Command) -> Result<Output> {
    let program = PathBuf::from(cmd.get_program());
    let output = cmd.output().map_err(io_err(&program))?;
    if output.status.success() {
        return Ok(output);
    }
    let (status, stderr) = (output.status, String::from_utf8_lossy(&output.stderr));
    let stderr = stderr.into_owned();
    Err(SandboxError::Command {
        program,
        status,
        stderr,
    })
}

/// The directory holding both `initdb` and `pg_ctl`: PATH first, then
/// `/usr/lib/postgresql/*/bin`, highest version first.
pub fn find_bin_dir() -> Result<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut searched: Vec<PathBuf> = env::split_paths(&path).collect();
    let versions = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten();
    let mut versions: Vec<_> = versions
        .map(|e| (version_key(&e.file_name().to_string_lossy()), e.path()))
        .collect();
    versions.sort_by(|a, b| b.cmp(a));
    searched.extend(versions.into_iter().map(|(_, dir)| dir.join("bin")));
    let has = |dir: &&PathBuf| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let found = searched.iter().find(has).cloned();
    found.ok_or(SandboxError::NoBinaries { searched })
}

/// "9.6" -> [9, 6], so that 15 sorts above 9.6.
fn version_key(name: &str) -> Vec<u32> {
    name.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// `None` unless running as root; then the `postgres` account, else `nobody`.
fn unprivileged_owner() -> Result<Option<(u32, u32)>> {
    let status = fs::read_to_string("/proc/self/status").map_err(io_err("/proc/self/status"))?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"));
    if uids.and_then(|uids| uids.split_whitespace().nth(1)) != Some("0") {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("/etc/passwd"))?;
    let owner = ["postgres", "nobody"].map(|name| account(&passwd, name));
    let owner = owner.into_iter().flatten().next();
    owner.map(Some).ok_or(SandboxError::NoAccount)
}

/// Looks up the (uid, gid) of `name` in the text of /etc/passwd.
fn account(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        Some((uid, fields.next()?.parse().ok()?))
    })
}

/// The template data directory, built by initdb on the first call of the process.
fn template(pg: &Pg) -> Result<PathBuf> {
    let mut cached = TEMPLATE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(data) = cached.as_ref() {
        return Ok(data.clone());
    }
    sweep_stale(pg);
    let data = build_template(pg)?;
    *cached = Some(data.clone());
    Ok(data)
}

fn build_template(pg: &Pg) -> Result<PathBuf> {
    let root = env::temp_dir().join(format!("{}{}", DIR_PREFIXES[1], process::id()));
    let _ = fs::remove_dir_all(&root); // an earlier failed attempt of this process
    private_dir(pg, &root).map_err(io_err(&root))?;
    let (pwfile, data) = (root.join("pwfile"), root.join("data"));
    write_owned(pg, &pwfile, &format!("{}\n", Cluster::SUPERUSER_PASSWORD))?;
    let mut pwfile_arg = OsString::from("--pwfile=");
    pwfile_arg.push(&pwfile);
    let mut initdb = pg.command(&pg.bin_dir.join("initdb"), &root);
    initdb.arg("-D").arg(&data).arg(pwfile_arg);
    run(initdb.args(INITDB_ARGS.split_whitespace()))?;
    let conf = data.join("postgresql.conf");
    let old = fs::read_to_string(&conf).map_err(io_err(&conf))?;
    fs::write(&conf, old + TEMPLATE_CONF).map_err(io_err(&conf))?;
    let hba = data.join("pg_hba.conf");
    fs::write(&hba, HBA).map_err(io_err(&hba))?;
    Ok(data)
}

/// Stops the servers and removes the directories of processes that died without cleaning up.
fn sweep_stale(pg: &Pg) {
    for entry in fs::read_dir(env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = DIR_PREFIXES
            .iter()
            .find_map(|p| name.strip_prefix(p)?.split('-').next());
        let pid = pid.and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_none_or(alive) {
            continue;
        }
        if entry.path().join("data/postmaster.pid").exists() {
            let _ = pg.pg_ctl(&entry.path(), &["-m", "immediate", "stop"]);
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// Whether process `pid` runs (a zombie, killed but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status"));
    status.is_ok_and(|status| !status.contains("State:\tZ"))
}

/// Creates `path` with mode 0700, owned by the account that runs PostgreSQL.
fn private_dir(pg: &Pg, path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    pg.chown(path)
}

fn write_owned(pg: &Pg, path: &Path, text: &str) -> Result<()> {
    let written = fs::write(path, text).and_then(|()| pg.chown(path));
    written.map_err(io_err(path))
}

/// A new, empty, private directory for one cluster.
fn cluster_root(pg: &Pg) -> Result<PathBuf> {
    loop {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}{}-{n}", DIR_PREFIXES[0], process::id());
        let root = env::temp_dir().join(name);
        match private_dir(pg, &root) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            result => return result.map(|()| root.clone()).map_err(io_err(&root)),
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind((Cluster::HOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL (or postgresql.conf) string literal.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Runs blocking work off the async threads; a panic there resumes here.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(source) => Err(SandboxError::Task { source }),
    }
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

    /// The host the server listens on: "127.0.0.1".
    pub fn host(&self) -> &str {
        Self::HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (inside the temporary directory that Drop removes).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A superuser client over TCP (SCRAM); the connection task is spawned on the current runtime.
    pub async fn superuser(&self, database: &str) -> Result<Client> {
        let password = Self::SUPERUSER_PASSWORD;
        Ok(self.connect(Self::SUPERUSER, password, database).await?)
    }

    async fn connect(&self, user: &str, pass: &str, db: &str) -> Result<Client, PgError> {
        let mut config = tokio_postgres::Config::new();
        config.host(Self::HOST).port(self.port).user(user);
        config.password(pass).dbname(db);
        let connecting = config.connect_timeout(CONNECT_TIMEOUT).connect(NoTls);
        let (client, connection) = connecting.await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "sandbox client connection ended");
            }
        });
        Ok(client)
    }

    /// `CREATE ROLE user LOGIN PASSWORD password` (ALTER if it exists) and
    /// `CREATE DATABASE database OWNER user` unless the database exists.
    pub async fn create_login(&self, user: &str, password: &str, database: &str) -> Result<()> {
        self.ensure_login("scram-sha-256", user, password, database)
            .await
    }

    /// Like [`Cluster::create_login`], but the password is stored md5-hashed and pg_hba.conf
    /// lets this user log in with md5; returns once such a login succeeds.
    pub async fn create_md5_login(&self, user: &str, password: &str, database: &str) -> Result<()> {
        self.ensure_login("md5", user, password, database).await?;
        self.allow_md5(user)?;
        let client = self.superuser("postgres").await?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        // The postmaster reloads pg_hba.conf asynchronously: retry until it has.
        let mut attempt = 1;
        loop {
            match self.connect(user, password, database).await {
                Err(_) if attempt < HBA_RELOAD_ATTEMPTS => attempt += 1,
                result => return result.map(drop).map_err(SandboxError::from),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ensure_login(&self, encryption: &str, user: &str, pw: &str, db: &str) -> Result<()> {
        let client = self.superuser("postgres").await?;
        let set = format!("SET password_encryption = {}", quote_literal(encryption));
        client.batch_execute(&set).await?;
        let sql = "SELECT 1 FROM pg_roles WHERE rolname = $1";
        let exists = client.query_opt(sql, &[&user]).await?.is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        let (role, secret) = (quote_ident(user), quote_literal(pw));
        let sql = format!("{verb} ROLE {role} LOGIN PASSWORD {secret}");
        client.batch_execute(&sql).await?;
        let sql = "SELECT 1 FROM pg_database WHERE datname = $1";
        if client.query_opt(sql, &[&db]).await?.is_none() {
            let sql = format!("CREATE DATABASE {} OWNER {role}", quote_ident(db));
            client.batch_execute(&sql).await?;
        }
        Ok(())
    }

    /// Puts an md5 rule for `user` in front of the SCRAM rule of pg_hba.conf.
    fn allow_md5(&self, user: &str) -> Result<()> {
        let _guard = self.hba.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.data_dir.join("pg_hba.conf");
        let hba = fs::read_to_string(&path).map_err(io_err(&path))?;
        let rule = format!("host all {} 127.0.0.1/32 md5\n", quote_ident(user));
        if hba.contains(&rule) {
            return Ok(());
        }
        fs::write(&path, rule + &hba).map_err(io_err(&path))
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn started() -> Cluster {
        Cluster::start(ClusterOptions::default())
            .await
            .expect("cluster starts")
    }

    async fn answers(port: u16) -> bool {
        tokio::net::TcpStream::connect((Cluster::HOST, port))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn two_clusters_get_their_own_port_and_answer_the_superuser() {
        let (a, b) = tokio::join!(started(), started());
        assert_ne!(a.port(), b.port());
        for cluster in [&a, &b] {
            let client = cluster.superuser("postgres").await.expect("connect");
            let row = client.query_one("SELECT 1", &[]).await.expect("query");
            assert_eq!(row.get::<_, i32>(0), 1);
        }
    }

    #[tokio::test]
    async fn logins_connect_with_their_password() {
        let cluster = started().await;
        let login = cluster.create_login("app", "pw'1", "app");
        login.await.expect("create");
        cluster
            .create_login("app", "pw'1", "app")
            .await
            .expect("again");
        let client = cluster.connect("app", "pw'1", "app").await.expect("login");
        let sql = "SELECT current_user::text";
        let row = client.query_one(sql, &[]).await.expect("query");
        assert_eq!(row.get::<_, String>(0), "app");
        assert!(cluster.connect("app", "wrong", "app").await.is_err());
        let login = cluster.create_md5_login("legacy", "pw", "legacy");
        login.await.expect("md5 login");
        let sql = "SELECT rolpassword FROM pg_authid WHERE rolname = 'legacy'";
        let client = cluster.superuser("postgres").await.expect("connect");
        let secret: String = client.query_one(sql, &[]).await.expect("query").get(0);
        assert!(secret.starts_with("md5"), "{secret}");
    }

    #[tokio::test]
    async fn stop_then_restart() {
        let mut cluster = started().await;
        cluster.stop().expect("stop");
        assert!(cluster.superuser("postgres").await.is_err());
        cluster.restart().expect("restart");
        cluster
            .superuser("postgres")
            .await
            .expect("connect after restart");
    }

    #[tokio::test]
    async fn drop_removes_the_directory_and_frees_the_port() {
        let cluster = started().await;
        let (root, port) = (cluster.root.clone(), cluster.port());
        assert!(root.exists() && answers(port).await);
        drop(cluster);
        assert!(!root.exists());
        assert!(!answers(port).await);
    }

    #[tokio::test]
    async fn a_panicking_test_still_cleans_up() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let cluster = started().await;
            let _ = tx.send((cluster.root.clone(), cluster.port()));
            panic!("deliberate panic with a running cluster");
        });
        assert!(task.await.is_err());
        let (root, port) = rx.await.expect("cluster started");
        assert!(!root.exists());
        assert!(!answers(port).await);
    }

    #[tokio::test]
    async fn a_taken_port_is_retried_and_options_apply() {
        let busy = std::net::TcpListener::bind((Cluster::HOST, 0)).expect("bind");
        let mut ports = [busy.local_addr().expect("addr").port()].into_iter();
        let taken = ports.clone().next();
        let extra_conf = vec!["work_mem = '2MB'".into()];
        let opts = ClusterOptions {
            max_connections: 7,
            extra_conf,
        };
        let next = move || ports.next().map_or_else(free_port, Ok);
        let start = blocking(move || Cluster::start_blocking(&opts, next));
        let cluster = start.await.expect("start on a second port");
        assert_ne!(Some(cluster.port()), taken);
        let client = cluster.superuser("postgres").await.expect("connect");
        let sql = "SELECT current_setting('max_connections')";
        let row = client.query_one(sql, &[]).await.expect("query");
        assert_eq!(row.get::<_, String>(0), "7");
    }

    #[test]
    fn finds_binaries_reads_accounts_orders_versions() {
        assert!(find_bin_dir().expect("installed").join("pg_ctl").is_file());
        let passwd = "root:x:0:0::/root:/bin/sh\npostgres:x:101:104::/:/bin/sh\n";
        assert_eq!(account(passwd, "postgres"), Some((101, 104)));
        assert_eq!(account(passwd, "nobody"), None);
        let mut versions = ["9.6", "15", "12"].map(version_key);
        versions.sort_by(|a, b| b.cmp(a));
        assert_eq!(versions, [vec![15], vec![12], vec![9, 6]]);
    }
}
