//! Real command-line clients through the broker: psql and pgbench.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::Harness;

/// Finds a PostgreSQL client program on PATH or beside the server binaries.
pub fn program(name: &str) -> std::path::PathBuf {
    let dir = pgbroker::sandbox::find_bin_dir().expect("PostgreSQL binaries");
    let beside = dir.join(name);
    if beside.exists() {
        beside
    } else {
        name.into()
    }
}

/// Runs a program with the broker's connection settings in its environment.
pub async fn run(h: &Harness, name: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut command = Command::new(program(name));
    command
        .args(args)
        .env("PGHOST", h.addr.ip().to_string())
        .env("PGPORT", h.addr.port().to_string())
        .env("PGUSER", "app")
        .env("PGPASSWORD", "app")
        .env("PGDATABASE", "app")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("spawn client program");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn psql_queries_and_copy() {
    let h = Harness::start(|_| {}).await;
    let (ok, out) = run(
        &h,
        "psql",
        &["-At", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 40 + 2"],
        "",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "42");
    let script = "CREATE TABLE p (id int, name text);\nCOPY p FROM STDIN;\n1\tone\n2\ttwo\n\\.\nSELECT string_agg(name, ',' ORDER BY id) FROM p;\n";
    let (ok, out) = run(
        &h,
        "psql",
        &["-At", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        script,
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("one,two"), "{out}");
    // Notices pass through.
    let (ok, out) = run(
        &h,
        "psql",
        &[
            "-At",
            "-c",
            "DO $$BEGIN RAISE NOTICE 'hello from plpgsql'; END$$",
        ],
        "",
    )
    .await;
    assert!(ok && out.contains("NOTICE:  hello from plpgsql"), "{out}");
}

pub fn failures(out: &str) -> Option<u64> {
    let line = out
        .lines()
        .find(|l| l.starts_with("number of failed transactions:"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

pub fn processed(out: &str) -> Option<u64> {
    let line = out
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed:"))?;
    line.split_whitespace()
        .nth(5)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn pgbench_select_only_extended_and_reconnecting() {
    let h = Harness::start(|c| c.pool.size = 4).await;
    let (ok, out) = run(&h, "pgbench", &["-i", "-s", "1", "-q"], "").await;
    assert!(ok, "pgbench -i through the broker: {out}");
    for mode in [
        &["-S"][..],
        &["-S", "-M", "extended"],
        &["-S", "-C"],
        &["-M", "extended"],
    ] {
        let mut args = vec!["-n", "-c", "10", "-j", "2", "-t", "50"];
        args.extend_from_slice(mode);
        let (ok, out) = run(&h, "pgbench", &args, "").await;
        assert!(ok, "pgbench {mode:?}: {out}");
        assert_eq!(failures(&out), Some(0), "pgbench {mode:?}: {out}");
        assert_eq!(processed(&out), Some(500), "pgbench {mode:?}: {out}");
    }
    let direct = h.direct().await;
    assert!(h.server_connections(&direct).await <= 4);
}
