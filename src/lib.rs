//! pgbroker: a PostgreSQL connection broker for serverless functions.
//!
//! # Layout
//!
//! Each module imports only from those above it in this list:
//!
//! - [`protocol`]: bytes only. Framing by header, startup packets, writers for the
//!   messages the broker originates, and the SQL scan that decides pinning.
//! - [`error`]: one error enum per boundary; the one place that picks a SQLSTATE.
//! - [`config`]: the config.toml schema, defaults and validation.
//! - [`metrics`]: metric names, help and buckets; the handles everything below records
//!   through (each broker owns its recorder).
//! - [`auth`]: client-facing SCRAM-SHA-256 / md5 / cleartext.
//! - [`pool`]: server connections (connect, login, state) and the deadpool pools by
//!   (database, user); the replies each connection owes and who reads them, and the
//!   translation of clients' named prepared statements (per-server LRU, prepare on demand).
//! - [`limits`]: the counting service: account and function caps, client counts.
//! - [`cancel`]: broker-issued cancel keys mapped to the server serving a client now.
//! - [`reaper`]: the sweep that ends idle clients and closes idle or aged server connections.
//! - [`session`]: one client: startup, auth, the greeting, the forwarding loop, release.
//! - [`admin`]: the HTTP endpoint (/metrics, /healthz, /readyz, /status), the backend
//!   check behind readiness, and the metric upkeep.
//! - [`server`]: the [`Broker`]: accept loop, task tracker, bounded drain on shutdown.
//! - [`throttle`]: rate limits for warnings a storm would repeat.
//! - [`sandbox`]: a throwaway Postgres cluster for `demo`, the tests and the benches.
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
pub mod cancel;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod reaper;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod throttle;

pub use config::Config;
pub use error::Error;
pub use server::Broker;
