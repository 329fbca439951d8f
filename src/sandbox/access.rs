//! Who may log in to a sandbox cluster, and how: roles, the rules of pg_hba.conf, and the
//! reload that makes the server apply them. See
//! <https://www.postgresql.org/docs/current/auth-pg-hba-conf.html>.

use std::fs;
use std::sync::PoisonError;
use std::time::Duration;

use super::{io_err, quote_ident, quote_literal, Cluster, Result, SandboxError};

/// Logins tried, 100 ms apart, while the server reloads pg_hba.conf.
const HBA_RELOAD_ATTEMPTS: u32 = 50;
/// Polls, 100 ms apart, for the server to finish a reload.
const RELOAD_POLLS: u32 = 100;
/// The rule that turns TCP clients without TLS away, as a managed Postgres does.
const REJECT_PLAINTEXT: &str = "hostnossl all all 127.0.0.1/32 reject\n";

impl Cluster {
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

    /// Puts an md5 rule for `user` in front of the SCRAM rule of pg_hba.conf (a `hostssl`
    /// one once [`Cluster::require_tls`] has run, so that it lets no plaintext client in).
    fn allow_md5(&self, user: &str) -> Result<()> {
        let _guard = self.hba.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.data_dir.join("pg_hba.conf");
        let hba = fs::read_to_string(&path).map_err(io_err(&path))?;
        let kind = if hba.contains(REJECT_PLAINTEXT) {
            "hostssl"
        } else {
            "host"
        };
        let rule = format!("{kind} all {} 127.0.0.1/32 md5\n", quote_ident(user));
        if hba.contains(&rule) {
            return Ok(());
        }
        fs::write(&path, rule + &hba).map_err(io_err(&path))
    }

    /// Makes TCP clients use TLS, as a managed Postgres does (RDS's `rds.force_ssl`): every
    /// `host` rule of pg_hba.conf becomes `hostssl` and a last rule rejects the rest; the unix
    /// socket stays open to [`Cluster::superuser`]. Returns once the server has reloaded.
    /// Call [`Cluster::enable_tls`] first, or no TCP client gets in at all.
    pub async fn require_tls(&self) -> Result<()> {
        self.rewrite_hba(tls_only)?;
        self.reload().await
    }

    fn rewrite_hba(&self, edit: fn(&str) -> String) -> Result<()> {
        let _guard = self.hba.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.data_dir.join("pg_hba.conf");
        let hba = fs::read_to_string(&path).map_err(io_err(&path))?;
        fs::write(&path, edit(&hba)).map_err(io_err(&path))
    }

    /// Makes the server reread its configuration files (`pg_reload_conf()`) and returns once
    /// it has applied them, pg_hba.conf and the TLS files included.
    pub async fn reload(&self) -> Result<()> {
        let before = self.conf_load_time().await?;
        let client = self.superuser("postgres").await?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        // The postmaster finishes a reload (pg_hba.conf and the TLS context included) before
        // it forks the next backend, which inherits its load time: so a new session that
        // sees a new time proves the reload applied. An old session could see it sooner.
        for _ in 0..RELOAD_POLLS {
            if self.conf_load_time().await? != before {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.log_tail();
        Err(SandboxError::NotApplied {
            what: "a configuration reload",
            log,
        })
    }

    /// `pg_conf_load_time()` as a new session sees it.
    async fn conf_load_time(&self) -> Result<String> {
        let client = self.superuser("postgres").await?;
        let sql = "SELECT pg_conf_load_time()::text";
        Ok(client.query_one(sql, &[]).await?.get(0))
    }
}

/// `hba` with every `host` rule made `hostssl`, and a last rule rejecting TCP without TLS.
pub(super) fn tls_only(hba: &str) -> String {
    if hba.contains(REJECT_PLAINTEXT) {
        return hba.to_owned();
    }
    let mut rules: String = hba
        .lines()
        .map(|line| match line.strip_prefix("host ") {
            Some(rest) => format!("hostssl {rest}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    rules += REJECT_PLAINTEXT;
    rules
}
