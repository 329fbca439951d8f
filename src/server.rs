//! The Broker: binds the listener, accepts clients (bounded by
//! listen.max_client_connections), runs one task per session under a TaskTracker, and
//! shuts down with a bounded drain: stop accepting, end idle sessions with 57P01, let
//! transactions in flight finish within listen.shutdown_timeout, then end the rest and
//! close the pools.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin, Health, Probe};
use crate::auth::{KeyCache, Secret, UserEntry};
use crate::cancel::CancelRegistry;
use crate::config::{AuthMethod, Config};
use crate::error::client::BROKER_SQLSTATES;
use crate::error::{Error, SessionError};
use crate::limits::Limits;
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use crate::pool::{BackendAddr, LoginGate, PoolOptions, Pools};
use crate::reaper::{self, Clients};
use crate::session::{self, Shared};
use crate::tls::{Acceptor, Connector};

/// A bound, ready-to-run broker.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    listener: TcpListener,
    /// The HTTP endpoint's listener, unless listen.metrics_addr is empty.
    admin: Option<TcpListener>,
    health: Arc<Health>,
    tracker: TaskTracker,
}

impl Broker {
    /// Validates the configuration and binds listen.addr.
    pub async fn bind(config: Config) -> Result<Broker, Error> {
        config.validate()?;
        let users = users(&config)?;
        let listener = bind(&config.listen.addr).await?;
        let admin = match config.listen.metrics_addr.as_str() {
            "" => None,
            addr => Some(bind(addr).await?),
        };
        let metrics = Arc::new(Metrics::new(BROKER_SQLSTATES));
        let backend = backend(&config)?;
        let health = Arc::new(Health::new(
            Probe::from_config(&config, &users, &backend),
            config.backend.health_interval,
            Arc::clone(&metrics),
        ));
        let tls = Arc::new(Acceptor::new(&config.listen.tls)?);
        let lookup =
            Lookup::new(&config, &backend.tls, &backend.client_keys).map_err(|source| {
                Error::User {
                    name: "[auth]".to_owned(),
                    source,
                }
            })?;
        let options = PoolOptions {
            size: config.pool.size,
            borrow_timeout: config.pool.borrow_timeout,
        };
        let default_method = most_common_method(&users);
        let gate = LoginGate::new(
            config.backend.max_concurrent_logins,
            config.backend.login_backoff,
            config.backend.login_backoff_max,
        );
        let config = Arc::new(config);
        let shared = Shared {
            limits: Arc::new(Limits::new(Arc::clone(&config), Arc::clone(&metrics))),
            pools: Arc::new(Pools::new(backend, options, gate, Arc::clone(&metrics))),
            metrics,
            warnings: Default::default(),
            config,
            users,
            tls,
            lookup,
            default_method,
            keys: KeyCache::new(),
            clients: Arc::new(Clients::default()),
            cancels: Arc::new(CancelRegistry::default()),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
        };
        Ok(Broker {
            shared: Arc::new(shared),
            listener,
            admin,
            health,
            tracker: TaskTracker::new(),
        })
    }

    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the HTTP endpoint (/metrics, /healthz, /readyz, /status), if on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A token that starts a graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// The server connection pools (for gauges and tests: logins in flight, pool status).
    pub fn pools(&self) -> Arc<Pools> {
        Arc::clone(&self.shared.pools)
    }

    /// A token that ends the grace period at once when cancelled (a second Ctrl-C).
    pub fn abort_token(&self) -> CancellationToken {
        self.shared.abort.clone()
    }

    /// Serves until `signal` completes (or the shutdown token is cancelled), then drains.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) {
        let shutdown = self.shared.shutdown.clone();
        let stop = CancellationToken::new();
        let background = self.background(&stop);
        tokio::select! {
            () = self.accept_loop() => {}
            () = signal => {}
            () = shutdown.cancelled() => {}
        }
        self.drain().await;
        stop.cancel();
        background.close();
        background.wait().await;
    }

    /// Starts the reaper, the metric upkeep, the backend check and the HTTP endpoint;
    /// they run until `stop` is cancelled.
    fn background(&mut self, stop: &CancellationToken) -> TaskTracker {
        let shared = &self.shared;
        let config = &shared.config;
        let tasks = TaskTracker::new();
        tasks.spawn(reaper::run(
            Arc::clone(&shared.clients),
            Arc::clone(&shared.pools),
            Arc::clone(&shared.metrics),
            config.reaper.clone(),
            config.pool.clone(),
            stop.clone(),
        ));
        tasks.spawn(admin::upkeep(Arc::clone(&shared.metrics), stop.clone()));
        tasks.spawn(reload_on_hangup(Arc::clone(shared), stop.clone()));
        // The backend check serves /readyz and /status only: no endpoint, no check.
        if let Some(listener) = self.admin.take() {
            let (health, stop_health) = (Arc::clone(&self.health), stop.clone());
            tasks.spawn(async move { health.run(stop_health).await });
            let admin = Admin {
                metrics: Arc::clone(&shared.metrics),
                limits: Arc::clone(&shared.limits),
                pools: Arc::clone(&shared.pools),
                health: Arc::clone(&self.health),
                tls: Arc::clone(&shared.tls),
                started: Instant::now(),
                shutdown: shared.shutdown.clone(),
                rendering: tokio::sync::Semaphore::new(1),
            };
            tasks.spawn(admin::serve(listener, Arc::new(admin), stop.clone()));
        }
        tasks
    }

    async fn accept_loop(&self) {
        let slots = Arc::new(Semaphore::new(
            self.shared.config.listen.max_client_connections,
        ));
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // A container that vanished without a FIN is noticed even with no TTL.
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive());
            let shared = Arc::clone(&self.shared);
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => self.tracker.spawn(async move {
                    session::serve(stream, shared).await;
                    drop(permit);
                }),
                Err(_) => self.tracker.spawn(refuse(stream, shared)),
            };
        }
    }

    async fn drain(self) {
        self.shared.shutdown.cancel();
        drop(self.listener);
        self.tracker.close();
        let grace = self.shared.config.listen.shutdown_timeout;
        // A second signal (or the abort token) ends the grace period early: the sessions
        // watch that token themselves, so the wait below ends with them.
        tracing::info!(
            sessions = self.tracker.len(),
            ?grace,
            "shutting down: waiting for transactions in flight"
        );
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = self.tracker.len(),
                "grace period over; ending the remaining sessions"
            );
            self.shared.abort.cancel();
            self.tracker.wait().await;
        }
        self.shared.pools.close();
    }
}

/// TCP keepalive on client sockets: probe after a minute of silence, every 15s, give up
/// after 4 unanswered probes (about two minutes).
fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(15))
        .with_retries(4)
}

/// Binds a listener, naming the address when it cannot.
async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_owned(),
            source,
        })
}

/// Tells a client over listen.max_client_connections why it is turned away.
async fn refuse(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = BytesMut::new();
    let max = shared.config.listen.max_client_connections;
    if let Some(m) = (SessionError::TooManyClients { max }).client_message() {
        shared.metrics.error(m.code());
        m.write(&mut buf);
    }
    let _ = stream.write_all(&buf).await;
}

/// Re-reads what changes without a restart when the process gets SIGHUP (the TLS
/// certificate and key), where SIGHUP would otherwise end it. Sessions are untouched: a
/// handshake uses the certificate loaded when it began.
async fn reload_on_hangup(shared: Arc<Shared>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            () = stop.cancelled() => return,
        }
        match shared.tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key re-read"),
            Err(error) => {
                tracing::warn!(%error, "SIGHUP: TLS certificate not reloaded; the one in use stays")
            }
        }
    }
}

/// The backend check `/readyz` runs for `config` (`pgbroker check --online` runs it once).
pub fn backend_probe(config: &Config) -> Result<Probe, Error> {
    Ok(Probe::from_config(
        config,
        &users(config)?,
        &backend(config)?,
    ))
}

/// Where the pools log in, and how.
fn backend(config: &Config) -> Result<BackendAddr, Error> {
    Ok(BackendAddr {
        host: config.backend.host.clone(),
        port: config.backend.port,
        connect_timeout: config.backend.connect_timeout,
        tls: Connector::new(&config.backend.tls)?,
        client_keys: Arc::default(),
    })
}

fn users(config: &Config) -> Result<HashMap<String, UserEntry>, Error> {
    config
        .users
        .iter()
        .map(|user| {
            let secret = Secret::parse(&user.password).map_err(|source| Error::User {
                name: user.name.clone(),
                source,
            })?;
            let entry = UserEntry {
                secret,
                method: user.auth_method(),
                account: user.account().to_owned(),
            };
            Ok((user.name.clone(), entry))
        })
        .collect()
}

/// The authentication method most configured users have (SCRAM when there are none).
fn most_common_method(users: &HashMap<String, UserEntry>) -> AuthMethod {
    let count = |m: AuthMethod| users.values().filter(|u| u.method == m).count();
    [
        AuthMethod::ScramSha256,
        AuthMethod::Md5,
        AuthMethod::Password,
    ]
    .into_iter()
    .max_by_key(|&m| (count(m), m == AuthMethod::ScramSha256))
    .unwrap_or(AuthMethod::ScramSha256)
}
