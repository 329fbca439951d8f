//! The test harness: a throwaway cluster with a login `app`/`app` on database `app`, and a
//! broker in front of it.

use std::net::SocketAddr;
use std::time::Duration;

use pgbroker::config::{Config, PoolMode};
use pgbroker::sandbox::{Cluster, ClusterOptions};
use pgbroker::Broker;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

pub const USER: &str = "app";
pub const PASSWORD: &str = "app";

/// A cluster and a broker in front of it, stopped on drop.
pub struct Harness {
    pub cluster: Cluster,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub broker: Option<JoinHandle<()>>,
    pub pools: std::sync::Arc<pgbroker::pool::Pools>,
    /// The HTTP endpoint (/metrics, /readyz, …).
    pub metrics: Option<SocketAddr>,
}

/// A broker config pointed at `cluster`, listening on a free port, user app/app.
pub fn config_for(cluster: &Cluster) -> Config {
    let mut config = Config::default();
    config.listen.addr = "127.0.0.1:0".into();
    config.listen.metrics_addr = "127.0.0.1:0".into();
    // One backend check at start; the readiness tests set their own interval.
    config.backend.health_interval = Duration::from_secs(3600);
    config.pool.size = 4;
    config.pool.borrow_timeout = Duration::from_secs(5);
    cluster.configure(&mut config);
    config
}

pub async fn cluster(max_connections: u32) -> Cluster {
    let options = ClusterOptions {
        max_connections,
        ..ClusterOptions::default()
    };
    Cluster::start_with_app(options)
        .await
        .expect("start a throwaway Postgres with login app")
}

impl Harness {
    /// A fresh cluster and a broker with `tweak` applied to its config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Harness {
        Self::start_with(100, tweak).await
    }

    pub async fn start_with(max_connections: u32, tweak: impl FnOnce(&mut Config)) -> Harness {
        let cluster = cluster(max_connections).await;
        let mut config = config_for(&cluster);
        tweak(&mut config);
        Self::with_config(cluster, config).await
    }

    pub async fn with_config(cluster: Cluster, config: Config) -> Harness {
        let broker = Broker::bind(config).await.expect("bind broker");
        let addr = broker.local_addr().unwrap();
        let shutdown = broker.shutdown_token();
        let pools = broker.pools();
        let metrics = broker.metrics_addr();
        let handle = tokio::spawn(broker.run_until(std::future::pending()));
        Harness {
            cluster,
            addr,
            shutdown,
            broker: Some(handle),
            pools,
            metrics,
        }
    }

    /// Connection string to the broker.
    pub fn url(&self, user: &str, password: &str, app: &str) -> String {
        format!(
            "host={} port={} user={user} password={password} dbname=app application_name={app} connect_timeout=10",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// A tokio-postgres client through the broker as app/app.
    pub async fn connect(&self) -> Client {
        self.connect_as(USER, PASSWORD, "test")
            .await
            .expect("connect through the broker")
    }

    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
        app: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        connect_url(&self.url(user, password, app)).await
    }

    /// A superuser client straight to Postgres (not through the broker).
    pub async fn direct(&self) -> Client {
        self.cluster
            .superuser("app")
            .await
            .expect("direct superuser connection")
    }

    /// Server connections the broker holds, as Postgres counts them.
    pub async fn server_connections(&self, direct: &Client) -> i64 {
        let row = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' AND application_name <> 'pgbroker health check'",
                &[],
            )
            .await
            .unwrap();
        row.get(0)
    }

    /// Starts a graceful shutdown and waits for the broker to finish.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.broker.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("broker stops")
                .unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn connect_url(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// First column of the first row of a simple query, as text.
pub async fn scalar(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .expect("a row")
}

/// The SQLSTATE of a failed call.
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.code().code().to_owned())
        .unwrap_or_else(|| format!("no db error: {error}"))
}

/// Session mode, for tests that need it.
pub fn session_mode(config: &mut Config) {
    config.pool.mode = PoolMode::Session;
}

/// Whether a backend of `app` is running `sql` now, as Postgres shows it (a query waiting on
/// a lock counts as running).
pub async fn running(direct: &Client, sql: &str) -> bool {
    let row = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'active' AND query = $1",
            &[&sql],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) > 0
}

/// Waits until a backend of `app` runs `sql`: a cancel or a kill meant for that query
/// must not arrive while it is still on its way to Postgres.
pub async fn until_running(direct: &Client, sql: &str) {
    let started = eventually(Duration::from_secs(10), || running(direct, sql)).await;
    assert!(started, "{sql} never ran");
}

/// Polls `check` every 100ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to `within` for `client`'s server connection to be replaced: a new backend pid
/// serves it, and the one that served it first is gone from `pg_stat_activity` (`direct`).
pub async fn server_replaced(client: &Client, direct: &Client, within: Duration) -> bool {
    let first = scalar(client, "SELECT pg_backend_pid()").await;
    eventually(within, || async {
        let pid = scalar(client, "SELECT pg_backend_pid()").await;
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}");
        pid != first && scalar(direct, &sql).await == "0"
    })
    .await
}
