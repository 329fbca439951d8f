//! Drivers from other ecosystems through the broker, each preparing statements by name:
//! psycopg 3 (prepare_threshold=0), asyncpg, node-postgres (named queries), postgres.js and
//! pgjdbc (prepareThreshold=1). `tests/drivers/setup.sh` installs them into target/drivers
//! from their registries (`.ci/run` runs it first; here it runs once if needed). Six clients
//! share two server connections with a one-second borrow timeout, in sessions longer than
//! that: a driver whose statements pinned its session would starve the others into 53300.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::certs::TestCerts;
use crate::common::{scalar, Harness};

const CLIENTS: usize = 6;
const ROUNDS: usize = 25;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn drivers_dir() -> PathBuf {
    std::env::var_os("PGBROKER_DRIVERS")
        .map_or_else(|| root().join("target/drivers"), PathBuf::from)
}

/// Runs tests/drivers/setup.sh once per test process.
pub fn setup() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *done {
        return;
    }
    let out = Command::new("bash")
        .arg(root().join("tests/drivers/setup.sh"))
        .env("PGBROKER_DRIVERS", drivers_dir())
        .output()
        .expect("run tests/drivers/setup.sh");
    assert!(
        out.status.success(),
        "tests/drivers/setup.sh failed (it installs the drivers from PyPI, npm and Debian):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}

/// Runs one driver's workload through a fresh broker and checks what the clients and the
/// server saw.
async fn workload(program: &str, args: &[&str]) {
    workload_over(program, args, None).await;
}

/// [`workload`], over TLS (verify-full against the test CA) when `certs` are given.
async fn workload_over(program: &str, args: &[&str], certs: Option<&TestCerts>) {
    tokio::task::spawn_blocking(setup).await.unwrap();
    let (h, dsn) = broker_for(program, certs).await;
    let admin = h.connect().await;
    admin
        .batch_execute("CREATE TABLE driver_log (driver text, n int)")
        .await
        .unwrap();
    let text = run_driver(&h, program, args, dsn).await;
    assert!(
        text.contains(&format!("ok {}", CLIENTS * ROUNDS)),
        "{program} {args:?}:\n{text}"
    );
    let logged = scalar(&admin, "SELECT count(*) FROM driver_log").await;
    assert_eq!(
        logged,
        (CLIENTS * ROUNDS).to_string(),
        "every transaction committed once"
    );
    let direct = h.direct().await;
    assert!(h.server_connections(&direct).await <= 2);
    let s = crate::prepared::unpinned(&h).await;
    assert!(
        s.sum(
            "pgbroker_prepared_statements_total",
            &[("event", "prepared")]
        ) >= 1.0
    );
}

/// A broker for a driver's workload (two server connections, a one-second borrow timeout,
/// TLS offered with `certs`), and the DSN the driver gets.
async fn broker_for(program: &str, certs: Option<&TestCerts>) -> (Harness, String) {
    let h = Harness::start(|c| {
        c.pool.size = 2;
        c.pool.borrow_timeout = Duration::from_secs(1);
        if let Some(certs) = certs {
            // Allow: the test's own tokio-postgres client stays plaintext.
            c.listen.tls.mode = pgbroker::config::ListenTlsMode::Allow;
            c.listen.tls.cert = certs.server_cert.path.display().to_string();
            c.listen.tls.key = certs.server_key.path.display().to_string();
        }
    })
    .await;
    let mut dsn = h.url("app", "app", program);
    if let Some(certs) = certs {
        let (ip, ca) = (h.addr.ip(), certs.ca.path.display());
        dsn += &format!(" host=localhost hostaddr={ip} sslmode=verify-full sslrootcert={ca}");
    }
    (h, dsn)
}

/// Runs the driver's program against the broker; what it printed, once it succeeded.
async fn run_driver(h: &Harness, program: &str, args: &[&str], dsn: String) -> String {
    let dir = drivers_dir();
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(&dir)
        .env("PGB_HOST", h.addr.ip().to_string())
        .env("PGB_PORT", h.addr.port().to_string())
        .env("PGB_DSN", dsn)
        .env("CLIENTS", CLIENTS.to_string())
        .env("ROUNDS", ROUNDS.to_string())
        .env("PYTHONPATH", dir.join("python"))
        .env("NODE_PATH", dir.join("node/node_modules"));
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || command.output().expect("run the driver")),
    )
    .await
    .expect("the workload finishes")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}:\n{text}");
    text
}

/// Copies a script next to the installed packages, where Node.js resolves its imports.
fn beside_drivers(script: &str) -> String {
    let to = drivers_dir().join("node").join(script);
    std::fs::copy(root().join("tests/drivers").join(script), &to).expect("copy the script");
    to.display().to_string()
}

fn script(name: &str) -> String {
    root()
        .join("tests/drivers")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test]
async fn psycopg3_prepared_from_the_first_execution() {
    workload("python3", &[&script("psycopg_workload.py")]).await;
}

/// The same workload with libpq over TLS (verify-full, SCRAM-SHA-256-PLUS): every result
/// and every commit crosses the broker's TLS sessions both ways.
#[tokio::test]
async fn psycopg3_over_tls_with_channel_binding() {
    let certs = TestCerts::new();
    workload_over("python3", &[&script("psycopg_workload.py")], Some(&certs)).await;
}

#[tokio::test]
async fn asyncpg_prepares_every_query() {
    workload("python3", &[&script("asyncpg_workload.py")]).await;
}

#[tokio::test]
async fn node_postgres_named_queries() {
    tokio::task::spawn_blocking(setup).await.unwrap();
    workload("node", &[&beside_drivers("pg_workload.js")]).await;
}

#[tokio::test]
async fn postgres_js_prepared_statements() {
    tokio::task::spawn_blocking(setup).await.unwrap();
    workload("node", &[&beside_drivers("postgresjs_workload.mjs")]).await;
}

#[tokio::test]
async fn pgjdbc_prepare_threshold_one() {
    workload(
        "java",
        &[
            "-cp",
            "/usr/share/java/postgresql.jar",
            &script("Workload.java"),
        ],
    )
    .await;
}
