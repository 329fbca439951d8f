//! Finding the PostgreSQL programs, the account that runs them, the template cluster, the
//! private directories and the process helpers behind [`Cluster`].

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::{env, fs, io, process};

use super::{io_err, Cluster, Result, SandboxError};

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

/// The PostgreSQL programs, and the (uid, gid) they run as when not the current user's.
#[derive(Debug, Clone)]
pub(super) struct Pg {
    bin_dir: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Pg {
    pub(super) fn discover() -> Result<Pg> {
        let (bin_dir, owner) = (find_bin_dir()?, unprivileged_owner()?);
        Ok(Pg { bin_dir, owner })
    }

    /// `program` (a path, or a name looked up on PATH) run by PostgreSQL's account in `cwd`.
    pub(super) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        // English messages: start() looks for "Address already in use" in the log.
        cmd.current_dir(cwd).env("LC_ALL", "C").env_remove("PGDATA");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// `pg_ctl -D root/data -w -t 60 <args>`.
    pub(super) fn pg_ctl<S: AsRef<OsStr>>(&self, root: &Path, args: &[S]) -> Result<Output> {
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
pub(super) fn run(cmd: &mut Command) -> Result<Output> {
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
pub(super) fn version_key(name: &str) -> Vec<u32> {
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
pub(super) fn account(passwd: &str, name: &str) -> Option<(u32, u32)> {
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
pub(super) fn template(pg: &Pg) -> Result<PathBuf> {
    let mut cached = TEMPLATE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(data) = cached.as_ref() {
        return Ok(data.clone());
    }
    sweep_stale(pg);
    let data = build_template(pg)?;
    *cached = Some(data.clone());
    Ok(data)
}

/// Removes this process's template (the next cluster builds it again). For programs that
/// are done with clusters, like `demo` at exit; tests leave it for the next run to sweep.
pub fn remove_template() {
    let mut cached = TEMPLATE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(root) = cached.take().as_deref().and_then(Path::parent) {
        let _ = fs::remove_dir_all(root);
    }
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

/// Writes `path`, owned by the account that runs PostgreSQL.
pub(super) fn write_owned(pg: &Pg, path: &Path, text: &str) -> Result<()> {
    let written = fs::write(path, text).and_then(|()| pg.chown(path));
    written.map_err(io_err(path))
}

/// Like [`write_owned`], with mode 0600 from its creation on: PostgreSQL refuses a private
/// key that others may read.
pub(super) fn write_private(pg: &Pg, path: &Path, text: &str) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(0o600);
    let written = options.open(path).and_then(|mut file| {
        // A file that existed keeps its mode on open: set it in any case.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())
    });
    written.and_then(|()| pg.chown(path)).map_err(io_err(path))
}

/// A new, empty, private directory for one cluster.
pub(super) fn cluster_root(pg: &Pg) -> Result<PathBuf> {
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
pub fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind((Cluster::HOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Runs blocking work off the async threads; a panic there resumes here.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(source) => Err(SandboxError::Task { source }),
    }
}
