//! Integration tests: real Postgres clusters from `pgbroker::sandbox`, real clients
//! (tokio-postgres, psql, pgbench), the broker in-process on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::err_expect)]

mod auth;
mod auth_query;
mod caps;
mod certs;
mod cli;
mod common;
mod differential;
mod drivers;
mod endings;
mod extended;
mod observe;
mod passthrough;
mod pooling;
mod prepared;
mod protocol;
mod raw;
mod reaping;
mod state;
mod storm;
mod tls;
mod tls_edges;
mod tools;
