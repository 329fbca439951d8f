//! `GET /status`: a JSON snapshot of the broker for people (and scripts) rather than
//! Prometheus: per pool, per account and per function, the backend check, uptime, version.

use serde::Serialize;

use super::{Admin, Probe};
use crate::config::ListenTlsMode;
use crate::limits::AccountStats;

/// One pool's numbers.
#[derive(Debug, Serialize)]
struct PoolStatus {
    database: String,
    user: String,
    /// pool.size: the most server connections it may open.
    size: usize,
    /// Server connections open.
    open: usize,
    /// Lent to clients.
    in_use: usize,
    /// Idle in the pool.
    idle: usize,
    /// Transactions waiting for a server connection.
    waiting: usize,
}

#[derive(Debug, Serialize)]
struct Backend {
    ready: bool,
    /// Why not ready, when not.
    reason: Option<String>,
    check: String,
    logins_in_flight: usize,
}

/// TLS towards clients: the mode, and when the certificate in use expires.
#[derive(Debug, Serialize)]
struct Tls {
    mode: ListenTlsMode,
    certificate_not_after: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    version: &'static str,
    uptime_seconds: u64,
    tls: Tls,
    backend: Backend,
    pools: Vec<PoolStatus>,
    accounts: Vec<AccountStats>,
}

/// The snapshot as JSON.
pub(super) fn render(admin: &Admin) -> String {
    let mut pools: Vec<PoolStatus> = admin
        .pools
        .all()
        .iter()
        .map(|pool| {
            let status = pool.status();
            let target = pool.target();
            PoolStatus {
                database: target.database.clone(),
                user: target.user.clone(),
                size: status.max_size,
                open: status.size,
                in_use: status.size.saturating_sub(status.available),
                idle: status.available,
                waiting: status.waiting,
            }
        })
        .collect();
    pools.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
    let ready = admin.ready();
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: admin.started.elapsed().as_secs(),
        tls: Tls {
            mode: admin.tls.mode(),
            certificate_not_after: admin.tls.offer().and_then(|offer| offer.not_after),
        },
        backend: Backend {
            ready: ready.is_ok(),
            reason: ready.err(),
            check: Probe::describe(admin.health.probe()),
            logins_in_flight: admin.pools.gate().in_flight(),
        },
        pools,
        accounts: admin.limits.snapshot(),
    };
    serde_json::to_string_pretty(&status).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
