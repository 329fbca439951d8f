//! Metric names (the only place they are spelled), their help text, and histogram buckets
//! chosen for the values each holds.

/// Client connections by account, function and state (active / waiting / idle).
pub const CLIENT_CONNECTIONS: &str = "pgbroker_client_connections";
/// Server connections by database, user and state (active / idle).
pub const SERVER_CONNECTIONS: &str = "pgbroker_server_connections";
/// Transactions ended (ReadyForQuery 'I') by account and function.
pub const TRANSACTIONS: &str = "pgbroker_transactions_total";
/// Queries (simple Query and extended Execute messages) by account and function.
pub const QUERIES: &str = "pgbroker_queries_total";
/// Wait for caps and a server connection, by account and function.
pub const BORROW_WAIT: &str = "pgbroker_borrow_wait_seconds";
/// Time a transaction held its server connection, by account and function.
pub const TRANSACTION_SECONDS: &str = "pgbroker_transaction_seconds";
/// Refusals by account, function and cap (function / account / pool / clients).
pub const CAP_REJECTIONS: &str = "pgbroker_cap_rejections_total";
/// Connections the reaper ended, by reason.
pub const REAPED: &str = "pgbroker_reaped_total";
/// Sessions pinned to their server connection, by account, function and reason.
pub const PINNED: &str = "pgbroker_pinned_sessions_total";
/// Named prepared statements, by database, user and event (prepared / reused / evicted).
pub const STATEMENTS: &str = "pgbroker_prepared_statements_total";
/// Server logins completed, by database and user.
pub const SERVER_CONNECTS: &str = "pgbroker_server_connects_total";
/// Server login time (connect + authentication), by database and user.
pub const SERVER_CONNECT_SECONDS: &str = "pgbroker_server_connect_seconds";
/// Server logins in flight, all pools together.
pub const LOGINS_IN_FLIGHT: &str = "pgbroker_server_logins_in_flight";
/// pool.size of each (database, user) pool: the ceiling of its server connections.
pub const POOL_SIZE: &str = "pgbroker_pool_size";
/// Client backends connected to Postgres (everyone's, not only the broker's), from the
/// latest backend check.
pub const BACKEND_CONNECTIONS: &str = "pgbroker_backend_connections";
/// 1 while the broker is ready (what /readyz answers), else 0.
pub const BACKEND_READY: &str = "pgbroker_backend_ready";
/// Postgres' max_connections, from the latest backend check.
pub const BACKEND_MAX_CONNECTIONS: &str = "pgbroker_backend_max_connections";
/// TLS handshakes, by side (client, server) and outcome (ok, error).
pub const TLS_HANDSHAKES: &str = "pgbroker_tls_handshakes_total";
/// Errors clients were sent (the broker's own and the server's), by SQLSTATE.
pub const ERRORS: &str = "pgbroker_errors_total";

/// Distinct SQLSTATE label values kept; later codes are counted as "other" (a client can
/// raise any code it likes from PL/pgSQL).
pub const MAX_SQLSTATES: usize = 256;

/// Label value shared by whatever is past a bound.
pub const OTHER: &str = "other";

pub(super) const HELP: &[(&str, &str)] = &[
    (CLIENT_CONNECTIONS, "Client connections open, by state: active (holding a server connection), waiting (for a cap or a server connection), idle."),
    (SERVER_CONNECTIONS, "Server connections open, by state: active (lent to a client) or idle (in the pool)."),
    (TRANSACTIONS, "Transactions that ended (ReadyForQuery 'I'), implicit ones included."),
    (QUERIES, "Queries sent: simple Query messages and extended-protocol Executes."),
    (BORROW_WAIT, "Wait of a transaction for its function and account caps and a server connection."),
    (TRANSACTION_SECONDS, "Time a transaction held its server connection, to its ReadyForQuery 'I'."),
    (CAP_REJECTIONS, "Transactions or connections refused: cap = function (its concurrency cap or its full queue), account, pool (no server connection within borrow_timeout), clients (client caps at connect)."),
    (REAPED, "Connections ended by the reaper: client_idle, idle_in_transaction (clients), server_idle, server_lifetime (server connections)."),
    (PINNED, "Sessions pinned to one server connection for the rest of their life, by what pinned them."),
    (STATEMENTS, "Named prepared statements in transaction pooling: prepared (a Parse sent to a server: the client's, or on demand before a Bind or Describe on a server that lacked it), reused (a client's Parse answered by the broker: the server had the statement), evicted (closed to keep a server within pool.prepared_statements_per_server)."),
    (SERVER_CONNECTS, "Server connections logged in to Postgres."),
    (SERVER_CONNECT_SECONDS, "Time to connect and log in to Postgres."),
    (LOGINS_IN_FLIGHT, "Server logins in flight, all pools together (bounded by backend.max_concurrent_logins)."),
    (POOL_SIZE, "Most server connections a pool may open (pool.size)."),
    (BACKEND_CONNECTIONS, "Client backends connected to Postgres, the broker's and everyone else's (pg_stat_activity, at the latest backend check)."),
    (BACKEND_MAX_CONNECTIONS, "Postgres' max_connections (at the latest backend check)."),
    (BACKEND_READY, "1 while a backend check passed within two backend.health_intervals and the broker is not shutting down (what /readyz answers), else 0."),
    (TLS_HANDSHAKES, "TLS handshakes, by side (client: a client's SSLRequest; server: the broker's with Postgres) and outcome (ok, error)."),
    (ERRORS, "ErrorResponses sent to clients, the broker's own and those forwarded from Postgres, by SQLSTATE."),
];

/// Borrow waits: from 100µs (a free slot) to the longest borrow_timeout.
pub(super) const BORROW_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Transactions: from a sub-millisecond `SELECT 1` to minutes.
pub(super) const TRANSACTION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Logins: a local trust login takes a millisecond, a remote SCRAM one hundreds.
pub(super) const CONNECT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
