//! `[auth]`: users not listed under `[[users]]` are looked up in Postgres itself (PgBouncer's
//! auth_query), so a fleet's logins need not be copied into the config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

/// The default lookup: schema-qualified, and an expired password (`VALID UNTIL` past) reads
/// as no password, so it is refused (PgBouncer's CVE-2025-2291). `pg_shadow` lists only
/// roles that may log in.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, CASE WHEN valuntil < pg_catalog.now() \
     THEN NULL ELSE passwd END FROM pg_catalog.pg_shadow WHERE usename = $1";

/// `[auth]`: the broker's own login that runs the lookup, and the lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthQuery {
    /// The role the broker logs in as to run `query` (it must be able to read pg_shadow,
    /// or whatever `query` reads).
    pub user: String,
    /// Its password (plaintext or md5 hash: the broker logs in with it).
    pub password: String,
    /// A file whose first line is the password (instead of `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// The database it logs in to.
    pub database: String,
    /// Returns (name, secret) of the user named by $1; no row or a NULL secret: refused.
    pub query: String,
    /// How long a found user's secret is kept before it is looked up again.
    #[serde(with = "units::duration")]
    pub cache_ttl: Duration,
    /// How long a user not found (or refused) is remembered, so a storm of bad logins does
    /// not become a storm of queries.
    #[serde(with = "units::duration")]
    pub negative_ttl: Duration,
}

impl Default for AuthQuery {
    fn default() -> Self {
        AuthQuery {
            user: String::new(),
            password: String::new(),
            password_file: None,
            database: "postgres".to_owned(),
            query: DEFAULT_AUTH_QUERY.to_owned(),
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        }
    }
}
