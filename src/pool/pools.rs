//! All pools of one broker, created on first use per (database, user).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{LoginGate, Pool, PoolOptions, ServerReaps};
use crate::auth::{ClientKeys, Secret};
use crate::backend::LoginTarget;
use crate::config::PoolSettings;
use crate::metrics::Metrics;
use crate::tls::Connector;

/// Where new pools log in.
#[derive(Debug, Clone)]
pub struct BackendAddr {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Bound on connect + login.
    pub connect_timeout: Duration,
    /// TLS towards it.
    pub tls: Connector,
    /// ClientKeys recovered from clients' SCRAM logins, for the users whose config holds
    /// only a SCRAM secret (SCRAM passthrough); the sessions fill it, the logins read it.
    pub client_keys: Arc<ClientKeys>,
}

/// All pools, created on first use per (database, user).
#[derive(Debug)]
pub struct Pools {
    backend: BackendAddr,
    options: PoolOptions,
    gate: Arc<LoginGate>,
    metrics: Arc<Metrics>,
    pools: Mutex<HashMap<(String, String), Pool>>,
}

impl Pools {
    /// No pools yet.
    pub fn new(
        backend: BackendAddr,
        options: PoolOptions,
        gate: LoginGate,
        metrics: Arc<Metrics>,
    ) -> Pools {
        Pools {
            backend,
            options,
            gate: Arc::new(gate),
            metrics,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool of (database, user), created on first use with the user's secret.
    pub fn get(&self, database: &str, user: &str, secret: &Secret) -> Pool {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (database.to_owned(), user.to_owned());
        pools
            .entry(key)
            .or_insert_with(|| {
                let target = LoginTarget {
                    host: self.backend.host.clone(),
                    port: self.backend.port,
                    connect_timeout: self.backend.connect_timeout,
                    database: database.to_owned(),
                    user: user.to_owned(),
                    secret: secret.clone(),
                    client_keys: Arc::clone(&self.backend.client_keys),
                    application_name: "",
                    tls: self.backend.tls.clone(),
                };
                let (gate, metrics) = (Arc::clone(&self.gate), Arc::clone(&self.metrics));
                Pool::new(target, &self.options, gate, metrics)
            })
            .clone()
    }

    /// Drops the pool of (database, user) if it holds no connection (its first login
    /// failed), so invented database names do not pile up.
    pub fn forget_unused(&self, database: &str, user: &str) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (database.to_owned(), user.to_owned());
        if pools.get(&key).is_some_and(|p| p.status().size == 0) {
            pools.remove(&key);
        }
    }

    /// Where a client's SCRAM login leaves the ClientKey its proof revealed, for the
    /// pools of that user to log in with.
    pub fn client_keys(&self) -> &ClientKeys {
        &self.backend.client_keys
    }

    /// The login gate (logins in flight, their peak).
    pub fn gate(&self) -> &LoginGate {
        &self.gate
    }

    /// Every pool, for shutdown and gauges.
    pub fn all(&self) -> Vec<Pool> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// [`Pool::reap`] over every pool; returns how many connections were closed.
    pub fn reap(&self, settings: &PoolSettings) -> ServerReaps {
        let mut reaps = ServerReaps::default();
        for pool in self.all() {
            reaps += pool.reap(settings);
        }
        reaps
    }

    /// Sets the server connection gauges of every pool and the logins in flight.
    pub fn publish(&self) {
        for pool in self.all() {
            pool.publish();
        }
        self.metrics.logins_in_flight(self.gate.in_flight());
    }

    /// [`Pool::top_up`] over every pool.
    pub async fn top_up(&self, settings: &PoolSettings) {
        for pool in self.all() {
            pool.top_up(settings).await;
        }
    }

    /// Closes every pool.
    pub fn close(&self) {
        for pool in self.all() {
            pool.close();
        }
    }
}
