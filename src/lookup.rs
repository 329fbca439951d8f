//! Users not listed in the config, looked up in Postgres (`[auth]`, PgBouncer's auth_query):
//! the broker logs in as its own auth user on a session of its own (no client's startup
//! parameter ever reaches it), pins `search_path` to `pg_catalog`, runs the query with the
//! user name bound as a parameter, and caches the answer (found: `cache_ttl`; not found or
//! refused: `negative_ttl`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::auth::{AuthError, ClientKeys, Secret, UserEntry};
use crate::backend::{LoginError, LoginTarget, ServerConn, ServerError};
use crate::config::{AuthMethod, AuthQuery, Config};
use crate::tls::Connector;

/// Most users remembered at once; past it the cache starts afresh (a client cannot grow
/// the broker's memory by trying names).
const MAX_CACHED: usize = 10_000;

/// Why a lookup could not be made (the client is refused as an unknown user either way).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The auth user's login failed.
    #[error("auth_query login failed: {0}")]
    Login(#[from] LoginError),
    /// The query failed.
    #[error("auth_query failed: {0}")]
    Query(#[from] ServerError),
}

/// What the lookup found for a user.
#[derive(Debug, Clone)]
pub enum Found {
    /// A user that may log in.
    User(UserEntry),
    /// No such user, or no usable password (none, or expired): refused.
    Refused(&'static str),
}

/// The auth_query service of one broker.
#[derive(Debug)]
pub struct Lookup {
    settings: AuthQuery,
    target: LoginTarget,
    /// One session of its own, kept between lookups; taken while a lookup runs.
    session: tokio::sync::Mutex<Option<ServerConn>>,
    cache: Mutex<HashMap<String, (Instant, Found)>>,
}

impl Lookup {
    /// The lookup `config` asks for, if any; an error when `[auth] password` does not parse.
    pub fn new(
        config: &Config,
        tls: &Connector,
        client_keys: &Arc<ClientKeys>,
    ) -> Result<Option<Lookup>, AuthError> {
        let Some(settings) = config.auth.clone() else {
            return Ok(None);
        };
        let target = LoginTarget {
            host: config.backend.host.clone(),
            port: config.backend.port,
            connect_timeout: config.backend.connect_timeout,
            database: settings.database.clone(),
            user: settings.user.clone(),
            secret: Secret::parse(&settings.password)?,
            application_name: "pgbroker auth_query",
            tls: tls.clone(),
            client_keys: Arc::clone(client_keys),
        };
        Ok(Some(Lookup {
            settings,
            target,
            session: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// What Postgres says of `user`, from the cache while it is fresh.
    pub async fn find(&self, user: &str) -> Result<Found, LookupError> {
        if let Some(found) = self.cached(user) {
            return Ok(found);
        }
        let found = self.query(user).await?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(user.to_owned(), (Instant::now(), found.clone()));
        Ok(found)
    }

    fn cached(&self, user: &str) -> Option<Found> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, found) = cache.get(user)?;
        let ttl = match found {
            Found::User(_) => self.settings.cache_ttl,
            Found::Refused(_) => self.settings.negative_ttl,
        };
        (at.elapsed() < ttl).then(|| found.clone())
    }

    /// Runs the query on the broker's own session (logged in again if it broke).
    async fn query(&self, user: &str) -> Result<Found, LookupError> {
        let mut session = self.session.lock().await;
        let mut conn = match session.take() {
            Some(conn) => conn,
            None => self.login().await?,
        };
        let row = conn
            .query_row_with(&self.settings.query, &[user], "auth_query")
            .await?;
        *session = Some(conn);
        Ok(found(row))
    }

    /// A session of the auth user whose `search_path` no object of a user's can shadow.
    async fn login(&self) -> Result<ServerConn, LookupError> {
        let mut conn = ServerConn::connect(&self.target).await?;
        conn.run(
            "SET search_path = pg_catalog, pg_temp",
            "auth_query search_path",
        )
        .await?;
        Ok(conn)
    }
}

/// The user a row describes: (name, secret); a SCRAM verifier or an md5 hash as Postgres
/// stores them.
fn found(row: Vec<Option<String>>) -> Found {
    let mut columns = row.into_iter();
    let (Some(Some(name)), Some(secret)) = (columns.next(), columns.next()) else {
        return Found::Refused("not found");
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Found::Refused("no password, or it expired");
    };
    let Ok(secret) = Secret::parse(&secret) else {
        return Found::Refused("a secret the broker cannot read");
    };
    let method = match secret {
        Secret::Md5(_) => AuthMethod::Md5,
        Secret::Plain(_) | Secret::Scram(_) => AuthMethod::ScramSha256,
    };
    Found::User(UserEntry {
        secret,
        method,
        account: name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_users_or_refusals() {
        let md5 = format!("md5{}", "0".repeat(32));
        let row = vec![Some("fn".to_owned()), Some(md5)];
        let Found::User(entry) = found(row) else {
            panic!("a user")
        };
        assert_eq!(
            (entry.method, entry.account.as_str()),
            (AuthMethod::Md5, "fn")
        );
        assert!(matches!(found(vec![]), Found::Refused("not found")));
        let expired = vec![Some("fn".to_owned()), None];
        assert!(matches!(found(expired), Found::Refused(_)));
    }
}
