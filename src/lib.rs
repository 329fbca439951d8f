//! pgbroker: a PostgreSQL connection broker for serverless functions.
//!
//! # Layout
//!
//! This list is the one authority on the modules and their order. It runs from the bottom
//! layer up: each module imports only from the modules listed before it (a test,
//! `layers_run_one_way`, reads every `crate::` path in src/ and holds the code to it).
//!
//! - [`protocol`]: bytes only. Framing by header, startup packets, writers for the
//!   messages the broker originates, the SQL scan that decides pinning, the protocol's own
//!   error, and the names of the SQLSTATEs the broker reads from Postgres.
//! - [`config`]: the config.toml schema, defaults and validation.
//! - [`tls`]: rustls towards clients (the acceptor, its certificate reloadable) and towards
//!   Postgres (the connector, as libpq's sslmode), and the socket that is plain or TLS.
//! - [`sandbox`]: a throwaway Postgres cluster for `demo`, the tests and the benches.
//! - [`throttle`]: rate limits for warnings a storm would repeat.
//! - [`metrics`]: metric names, help and buckets; the handles everything above records
//!   through (each broker owns its recorder).
//! - [`auth`]: client-facing SCRAM-SHA-256 / md5 / cleartext, and the configured users;
//!   SCRAM passthrough's ClientKeys (recovered from clients' proofs) and the SCRAM math
//!   that logs in to Postgres with one.
//! - [`cancel`]: where a cancel goes and how it is sent; broker-issued cancel keys mapped
//!   to the server serving a client now.
//! - [`backend`]: one server connection: connect and login, the protocol position, the
//!   replies it owes and who reads them, the translation of clients' named prepared
//!   statements on it (per-server LRU, prepare on demand), and its cleanup.
//! - [`lookup`]: users not in the config, looked up in Postgres (`[auth]`, auth_query) on
//!   a session of the broker's own, with a TTL cache.
//! - [`pool`]: the deadpool pools by (database, user), their tiny Manager, and the login
//!   gate that bounds logins to the backend.
//! - [`limits`]: the counting service: account and function caps, client counts.
//! - [`reaper`]: the sweep that ends idle clients and closes idle or aged server connections.
//! - [`error`]: the session's error and, in [`error::client`], the one place that picks
//!   the SQLSTATE and the words a client sees, for the errors of every layer before it.
//! - [`session`]: one client: startup, auth, the greeting, the forwarding loop, release.
//! - [`admin`]: the HTTP endpoint (/metrics, /healthz, /readyz, /status), the backend
//!   check behind readiness, and the metric upkeep.
//! - [`server`]: the [`Broker`]: accept loop, task tracker, bounded drain on shutdown.
//!
//! Data flow of one client: accept → startup → authenticate → greet (pool's parameters,
//! broker-issued cancel key) → for each transaction: borrow a server connection, replay
//! the client's settings if they differ, forward both ways (named statements translated
//! and prepared where missing), give it back at
//! ReadyForQuery 'I' → at the end, settle (cancel, rollback, reset) or close the server
//! connection it held.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod config;
pub mod error;
pub mod limits;
pub mod lookup;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod reaper;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod throttle;
pub mod tls;

#[cfg(test)]
mod layers;

pub use config::Config;
pub use error::Error;
pub use server::Broker;
