//! Who may log in to a sandbox cluster, and how: roles and the rules of pg_hba.conf. See
//! <https://www.postgresql.org/docs/current/auth-pg-hba-conf.html>.

use std::fs;
use std::sync::PoisonError;
use std::time::Duration;

use super::{io_err, quote_ident, quote_literal, Cluster, Result, SandboxError};

/// Logins tried, 100 ms apart, while the server reloads pg_hba.conf.
const HBA_RELOAD_ATTEMPTS: u32 = 50;

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
}
