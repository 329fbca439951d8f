//! `[listen]` and `[backend]`: the broker's two network edges.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;
use super::{BackendTls, ListenTls};

/// `[listen]`: where clients connect, and what is bounded per client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Socket address for the Postgres protocol (ip:port).
    pub addr: String,
    /// Client connections open at once, all accounts together.
    pub max_client_connections: usize,
    /// A client must finish startup and authentication within this.
    #[serde(with = "units::duration")]
    pub startup_timeout: Duration,
    /// Largest client message in bytes; larger ones get 08P01 before being buffered.
    #[serde(with = "units::size")]
    pub max_message_size: usize,
    /// On SIGTERM: grace period for transactions in flight.
    #[serde(with = "units::duration")]
    pub shutdown_timeout: Duration,
    /// Socket address of the HTTP endpoint (/metrics, /healthz, /readyz, /status); empty
    /// turns it off.
    pub metrics_addr: String,
    /// TLS offered to clients.
    pub tls: ListenTls,
}

/// `[backend]`: the Postgres server behind the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backend {
    /// Host name or IP address of the Postgres server.
    pub host: String,
    /// TCP port of the Postgres server.
    pub port: u16,
    /// Longest wait to open a connection to the Postgres server.
    #[serde(with = "units::duration")]
    pub connect_timeout: Duration,
    /// Server logins in flight to this backend, all pools together.
    pub max_concurrent_logins: usize,
    /// First wait before retrying when Postgres refuses a login; doubles, with jitter.
    #[serde(with = "units::duration")]
    pub login_backoff: Duration,
    /// Longest wait between login retries.
    #[serde(with = "units::duration")]
    pub login_backoff_max: Duration,
    /// How often /readyz's backend check (a login and `SELECT 1`) runs.
    #[serde(with = "units::duration")]
    pub health_interval: Duration,
    /// The configured user the check logs in as; `None`: the first user whose password
    /// can log in to Postgres (plaintext or md5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_user: Option<String>,
    /// The database the check logs in to; `None`: the user's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_database: Option<String>,
    /// TLS towards Postgres.
    pub tls: BackendTls,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            addr: "127.0.0.1:6432".to_owned(),
            max_client_connections: 10_000,
            startup_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            shutdown_timeout: Duration::from_secs(30),
            metrics_addr: "127.0.0.1:9930".to_owned(),
            tls: ListenTls::default(),
        }
    }
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            connect_timeout: Duration::from_secs(5),
            max_concurrent_logins: 8,
            login_backoff: Duration::from_millis(100),
            login_backoff_max: Duration::from_secs(5),
            health_interval: Duration::from_secs(2),
            health_user: None,
            health_database: None,
            tls: BackendTls::default(),
        }
    }
}
