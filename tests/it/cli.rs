//! The pgbroker binary: `check`, `scram-secret`, a run that SIGTERM stops with exit 0, and
//! its JSON logs.

use std::cell::RefCell;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::common::{cluster, connect_url, eventually, scalar};

const BIN: &str = env!("CARGO_BIN_EXE_pgbroker");

fn repo_file(name: &str) -> String {
    format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_shipped_configs_and_rejects_unknown_keys() {
    for file in ["config.toml", "examples/sidecar.toml"] {
        let out = Command::new(BIN)
            .args(["check", "--config", &repo_file(file)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("borrow_timeout"), "{stdout}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "{file}: no warning"
        );
        assert!(
            stdout.contains("<redacted>") && !stdout.contains("password = \"app\""),
            "{stdout}"
        );
    }
    let dir = std::env::temp_dir().join(format!("pgbroker-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[pool]\nsize = 4\nsise = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sise") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[test]
fn scram_secret_reads_stdin() {
    let mut child = Command::new(BIN)
        .args(["scram-secret", "--iterations", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap();
    let parsed = pgbroker::auth::ScramSecret::parse(secret.trim()).unwrap();
    assert_eq!(parsed.iterations, 1000);
    let again = pgbroker::auth::ScramSecret::derive("hunter2", &parsed.salt, 1000);
    assert_eq!(again.stored_key, parsed.stored_key);
}

/// The binary running on a config of its own, with JSON logs on a piped stderr.
struct Running {
    child: tokio::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Running {
    /// Runs the binary on `[listen]` (a free port, metrics on a free port too) followed by
    /// `rest` of a config; `RUST_LOG` as given.
    fn start(name: &str, rest: &str, log: &str) -> Running {
        let port = pgbroker::sandbox::free_port().unwrap();
        let dir = std::env::temp_dir().join(format!("pgbroker-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        let listen =
            format!("[listen]\naddr = \"127.0.0.1:{port}\"\nmetrics_addr = \"127.0.0.1:0\"\n");
        std::fs::write(&config, listen + rest).unwrap();
        let child = tokio::process::Command::new(BIN)
            .args(["--log-format", "json", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", log)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running { child, port, dir }
    }

    /// A client through it once it listens.
    async fn connect(&self, url: &str) -> tokio_postgres::Client {
        let url = format!("host=127.0.0.1 port={} {url}", self.port);
        let client = RefCell::new(None);
        let listening = eventually(Duration::from_secs(30), || async {
            let attempt = connect_url(&url).await.ok();
            let connected = attempt.is_some();
            *client.borrow_mut() = attempt;
            connected
        })
        .await;
        assert!(listening, "the broker listens on port {}", self.port);
        client.into_inner().expect("connected")
    }

    fn sigterm(&self) {
        let pid = self.child.id().unwrap().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let cluster = cluster(20).await;
    let rest = format!(
        "[backend]\nport = {}\n[[users]]\nname = \"app\"\npassword = \"app\"\n",
        cluster.port()
    );
    let mut broker = Running::start("sigterm", &rest, "info");
    let client = broker.connect("user=app password=app dbname=app").await;
    assert_eq!(scalar(&client, "SELECT 1").await, "1");
    broker.sigterm();
    let status = tokio::time::timeout(Duration::from_secs(20), broker.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed()
            || err
                .as_db_error()
                .is_some_and(|e| e.code().code() == "57P01"),
        "{err}"
    );
}

#[tokio::test]
async fn json_logs_name_each_session_and_never_a_password() {
    const SECRET: &str = "Zq8-never-in-a-log";
    let cluster = cluster(20).await;
    cluster
        .create_login("logtest", SECRET, "app")
        .await
        .unwrap();
    let rest = format!(
        "[backend]\nport = {}\nhealth_database = \"app\"\n\
         [[users]]\nname = \"logtest\"\npassword = \"{SECRET}\"\naccount = \"acme\"\n\
         [accounts.acme.functions.orders]\nmax_clients = 1\n",
        cluster.port()
    );
    let mut broker = Running::start("logs", &rest, "trace");
    let url = |password: &str| {
        format!("user=logtest password={password} dbname=app application_name=orders")
    };
    let client = broker.connect(&url(SECRET)).await;
    let port = broker.port;
    let direct = |password: &str| format!("host=127.0.0.1 port={port} {}", url(password));
    scalar(&client, "SELECT 1").await;
    scalar(&client, "SELECT 2").await;
    assert!(
        connect_url(&direct(SECRET)).await.is_err(),
        "orders allows one client"
    );
    drop(client);
    assert!(connect_url(&direct("wrong")).await.is_err());
    let mut pipe = BufReader::new(broker.child.stderr.take().unwrap());
    // A SIGTERM before the session saw the client go would end it as a shutdown instead.
    let mut stderr = read_until(&mut pipe, |l| session_ended(l, 2)).await;
    broker.sigterm();
    pipe.read_to_string(&mut stderr).await.unwrap();
    broker.child.wait().await.unwrap();
    assert!(!stderr.contains(SECRET), "a password reached the logs");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ended = lines
        .iter()
        .find(|l| session_ended(l, 2))
        .map(|l| &l["fields"])
        .unwrap_or_else(|| panic!("no session line: {stderr}"));
    assert_eq!(
        (&ended["account"], &ended["function"]),
        (&"acme".into(), &"orders".into())
    );
    assert!(ended["duration_ms"].is_u64());
    assert!(ended["outcome"] == "terminate" || ended["outcome"] == "disconnect");
    let cap_warning = lines.iter().any(|l| {
        l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("cap reached")
    });
    assert!(cap_warning, "no warning for the client cap: {stderr}");
}

/// Whether a JSON log line is the end of a session that ran `transactions` transactions.
fn session_ended(line: &serde_json::Value, transactions: u64) -> bool {
    let fields = &line["fields"];
    fields["message"] == "session ended" && fields["transactions"] == transactions
}

/// Reads JSON log lines until one satisfies `wanted` (within 10s); returns the text read.
async fn read_until(
    pipe: &mut BufReader<tokio::process::ChildStderr>,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> String {
    let mut text = String::new();
    let read = async {
        loop {
            let start = text.len();
            assert!(pipe.read_line(&mut text).await.unwrap() > 0, "log ended");
            let line = serde_json::from_str(&text[start..]).unwrap_or_default();
            if wanted(&line) {
                return;
            }
        }
    };
    let found = tokio::time::timeout(Duration::from_secs(10), read).await;
    assert!(found.is_ok(), "no such log line: {text}");
    text
}

/// `check` prints the effective config with no secret in it, whether written in the file
/// or read from a password_file (the `[auth]` user's too).
#[test]
fn check_prints_no_secret_of_users_or_the_auth_user() {
    let dir = std::env::temp_dir().join(format!("pgbroker-cli-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.secret"), "file-secret-1\n").unwrap();
    let config = dir.join("config.toml");
    let text = "[auth]\nuser = \"pgbroker_auth\"\npassword = \"auth-secret-2\"\n\n\
                [[users]]\nname = \"app\"\npassword_file = \"app.secret\"\n";
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("password_file = \"app.secret\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("file-secret-1") && !stdout.contains("auth-secret-2"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("<redacted>").count(), 2, "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `pgbroker check` (with `args`) on a config of `text`, in a directory of its own.
async fn check_text(name: &str, text: &str, args: &[&str]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("pgbroker-check-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// Warnings name the key and its line, go to stderr, and leave the exit status 0; an error
/// beside them still exits 1.
#[tokio::test]
async fn check_warns_of_what_cannot_be_meant_and_exits_zero() {
    let text = "[[users]]\nname = \"app\"\npassword = \"app\"\naccount = \"shpo\"\n\n\
                [accounts.shop]\nmax_concurrency = 5\n\n\
                [accounts.shop.functions.orders]\nmax_concurrency = 8\n";
    let out = check_text("warn", text, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("[accounts.shop]"));
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].starts_with("pgbroker: warning: ")
            && warnings[0].contains("config.toml line 4: `users[0].account` is \"shpo\""),
        "{stderr}"
    );
    assert!(
        warnings[1].contains(
            "line 10: `accounts.shop.functions.orders.max_concurrency` is 8, above its account's cap of 5"
        ),
        "{stderr}"
    );
    let out = check_text("nologin", "[pool]\nsize = 4\n", &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no [[users]] and no [auth]"), "{stderr}");
    let out = check_text("error", &format!("{text}[pool]\nsize = 0\n"), &[]).await;
    assert_eq!(out.status.code(), Some(1));
}

/// `check --online` logs in as the backend check does and compares `pool.size` with the
/// connections Postgres lets the role open, found by opening them.
#[tokio::test]
async fn check_online_compares_the_pool_with_what_postgres_allows() {
    let cluster = cluster(12).await;
    let url = format!(
        "host=127.0.0.1 port={} user=app password=app dbname=app",
        cluster.port()
    );
    let mut open = Vec::new();
    while let Ok(client) = connect_url(&url).await {
        open.push(client);
        assert!(open.len() < 100, "Postgres kept accepting");
    }
    let allowed = open.len();
    drop(open);
    let config = |size: usize| {
        format!(
            "[backend]\nport = {}\n[pool]\nsize = {size}\n\
             [[users]]\nname = \"app\"\npassword = \"app\"\n",
            cluster.port()
        )
    };
    let out = check_text("online-fits", &config(allowed), &["--online"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), stderr.as_ref()),
        (Some(0), ""),
        "{allowed} fit"
    );
    let out = check_text("online-over", &config(allowed + 1), &["--online"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let expected = format!(
        "line 4: `pool.size` is {}, but Postgres allows {allowed} connections",
        allowed + 1
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // Without --online nothing asks the server.
    let out = check_text("offline", &config(allowed + 1), &[]).await;
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let nobody = pgbroker::sandbox::free_port().unwrap();
    let unreachable = config(4).replace(&cluster.port().to_string(), &nobody.to_string());
    let out = check_text("online-down", &unreachable, &["--online"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--online: the backend check failed"),
        "{stderr}"
    );
}
