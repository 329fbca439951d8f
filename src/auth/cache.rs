//! Derived SCRAM keys for users whose config holds a plaintext password, so PBKDF2 runs once
//! per (user, password) for the life of the process rather than once per login.
//!
//! Each plaintext password gets its own random 16-byte salt and Postgres's default 4096
//! iterations; a shared salt would set configured users apart from unknown ones, whose mock
//! salts differ per user. The derivation goes through postgres-protocol's
//! `password::scram_sha_256`, which applies SASLprep to the password the way clients do.
//! <https://www.postgresql.org/docs/current/sasl-authentication.html>

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rand::Rng;
use tokio::sync::OnceCell;

use super::secret::{derive_bytes, hmac_sha256, SALT_LEN};
use super::{ct_eq, ScramSecret, Secret, SCRAM_DEFAULT_ITERATIONS};

/// Per-process cache of derived SCRAM keys for plaintext passwords. `Send + Sync`; share it
/// in an `Arc`.
pub struct KeyCache {
    /// Random key for fingerprinting passwords, so the map never holds one.
    key: [u8; 32],
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One user's derived secret, valid while the password's fingerprint matches.
struct Slot {
    fingerprint: [u8; 32],
    secret: OnceCell<ScramSecret>,
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> KeyCache {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        KeyCache {
            key,
            slots: Mutex::default(),
        }
    }

    /// The SCRAM secret to verify `user` against: a SCRAM secret as it is, a plaintext password
    /// derived once per (user, password) on the blocking pool, and `None` for an md5 secret,
    /// which cannot do SCRAM.
    ///
    /// Cancel-safe: if the future is dropped mid-derivation, the next call derives again.
    pub async fn scram_secret_for(&self, user: &str, secret: &Secret) -> Option<ScramSecret> {
        match secret {
            Secret::Scram(secret) => Some(secret.clone()),
            Secret::Md5(_) => None,
            Secret::Plain(password) => self.derived(user, password).await,
        }
    }

    /// The cached derivation of `password`, computed by the first caller to ask for it while
    /// later callers wait. `None` only if the blocking task itself failed.
    async fn derived(&self, user: &str, password: &str) -> Option<ScramSecret> {
        let slot = self.slot(user, password);
        let password = password.to_owned();
        let derive =
            || async move { tokio::task::spawn_blocking(move || derive_plain(&password)).await };
        slot.secret.get_or_try_init(derive).await.ok().cloned()
    }

    /// The user's slot for this password, replacing one made for an older password.
    fn slot(&self, user: &str, password: &str) -> Arc<Slot> {
        let fingerprint = hmac_sha256(&self.key, &[user.as_bytes(), b"\0", password.as_bytes()]);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get(user) {
            Some(slot) if ct_eq(&slot.fingerprint, &fingerprint) => Arc::clone(slot),
            _ => {
                let slot = Arc::new(Slot {
                    fingerprint,
                    secret: OnceCell::new(),
                });
                slots.insert(user.to_owned(), Arc::clone(&slot));
                slot
            }
        }
    }
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache::new()
    }
}

/// Redacted: shows how many users are cached.
impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users = self.slots.lock().map_or(0, |slots| slots.len());
        f.debug_struct("KeyCache").field("users", &users).finish()
    }
}

/// PBKDF2 of a plaintext password with a fresh random salt, after SASLprep.
fn derive_plain(password: &str) -> ScramSecret {
    let stored = postgres_protocol::password::scram_sha_256(password.as_bytes());
    ScramSecret::parse(&stored).unwrap_or_else(|_| {
        // Unreachable in practice: postgres-protocol always emits a valid secret.
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        derive_bytes(password.as_bytes(), &salt, SCRAM_DEFAULT_ITERATIONS)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::{scram_secret, ScramExchange};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn plain(password: &str) -> Secret {
        Secret::Plain(password.into())
    }

    #[tokio::test]
    async fn derives_once_per_user_and_password() {
        let cache = KeyCache::new();
        let first = cache.scram_secret_for("app", &plain("app")).await.unwrap();
        assert_eq!((first.iterations, first.salt.len()), (4096, SALT_LEN));
        let second = cache.scram_secret_for("app", &plain("app")).await.unwrap();
        assert_eq!(second, first, "second call reuses the derivation");

        let other = cache.scram_secret_for("bob", &plain("app")).await.unwrap();
        assert_ne!(other.salt, first.salt, "each user gets a salt of its own");
        let changed = cache.scram_secret_for("app", &plain("new")).await.unwrap();
        assert_ne!(changed.salt, first.salt, "a new password is derived again");
        assert_eq!(format!("{cache:?}"), "KeyCache { users: 2 }");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_derivation() {
        let cache = Arc::new(KeyCache::new());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.scram_secret_for("app", &plain("app")).await })
            })
            .collect();
        let mut salts = Vec::new();
        for task in tasks {
            salts.push(task.await.unwrap().unwrap().salt);
        }
        salts.dedup();
        assert_eq!(salts.len(), 1);
    }

    #[tokio::test]
    async fn scram_as_is_and_md5_none() {
        let cache = KeyCache::default();
        let scram = Secret::parse(&scram_secret("app", 16)).unwrap();
        let Secret::Scram(expected) = &scram else {
            panic!("not a SCRAM secret")
        };
        assert_eq!(
            cache.scram_secret_for("app", &scram).await.as_ref(),
            Some(expected)
        );
        let md5 = Secret::parse("md5a3556571e93b0d20722ba62be61e8c2d").unwrap();
        assert_eq!(cache.scram_secret_for("app", &md5).await, None);
    }

    #[tokio::test]
    async fn derived_secret_logs_in_with_saslprep() {
        let cache = KeyCache::new();
        // A soft hyphen is mapped to nothing by SASLprep, on the client and here alike.
        for password in ["app", "a\u{ad}pp"] {
            let secret = cache.scram_secret_for("app", &plain(password)).await;
            let mut server = ScramExchange::new("app", secret, crate::auth::ChannelBinding::None);
            let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
            client
                .update(
                    &server
                        .client_first(crate::auth::SCRAM_MECHANISM, client.message())
                        .unwrap(),
                )
                .unwrap();
            let server_final = server.client_final(client.message()).unwrap();
            client.finish(&server_final).unwrap();
        }
    }
}
