//! SCRAM passthrough's key: the ClientKey a client's SCRAM proof reveals (RFC 5802 §3:
//! ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), checked by H(ClientKey) =
//! StoredKey), kept per user so the pools can log in to Postgres as that user without its
//! password, as PgBouncer does.
//!
//! A key is only ever used against the verifier it hashes to, so a key recovered under a
//! secret that has since changed is never sent.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::{ct_eq, ScramSecret};

/// A user's SCRAM ClientKey: as good as the password for logging in to any server that
/// holds the same verifier. Never printed: `Debug` is redacted.
#[derive(Clone)]
pub struct ClientKey([u8; 32]);

impl ClientKey {
    /// Wraps the bytes a verified proof revealed (or, in tests, a derivation made).
    pub(super) fn new(bytes: [u8; 32]) -> ClientKey {
        ClientKey(bytes)
    }

    /// The raw key, for the SCRAM math.
    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ClientKey of `password` under `secret`'s salt and iterations (PBKDF2: slow).
    #[cfg(test)]
    pub(super) fn derive(password: &str, secret: &ScramSecret) -> ClientKey {
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(
            password.as_bytes(),
            &secret.salt,
            secret.iterations,
        );
        ClientKey(super::secret::hmac_sha256(&salted, &[b"Client Key"]))
    }

    /// True when this key belongs to `secret`: its SHA-256 is the secret's StoredKey.
    pub fn fits(&self, secret: &ScramSecret) -> bool {
        let stored: [u8; 32] = Sha256::digest(self.0).into();
        ct_eq(&stored, &secret.stored_key)
    }
}

/// Redacted.
impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(..)")
    }
}

/// The ClientKeys recovered since the broker started, by user name; shared (in an `Arc`)
/// by the sessions that recover them and the pools that log in with them.
#[derive(Default)]
pub struct ClientKeys {
    keys: Mutex<HashMap<String, ClientKey>>,
}

impl ClientKeys {
    /// Keeps `key` as `user`'s, replacing an older one (the secret may have changed).
    pub fn remember(&self, user: &str, key: ClientKey) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.insert(user.to_owned(), key);
    }

    /// `user`'s key if one is known and it fits `secret`.
    pub fn get(&self, user: &str, secret: &ScramSecret) -> Option<ClientKey> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.get(user).filter(|key| key.fits(secret)).cloned()
    }
}

/// Redacted: shows how many users have a key.
impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users = self.keys.lock().map_or(0, |keys| keys.len());
        f.debug_struct("ClientKeys").field("users", &users).finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn derive_key(password: &str, secret: &ScramSecret) -> ClientKey {
        ClientKey::derive(password, secret)
    }

    #[test]
    fn keys_are_kept_per_user_and_only_used_where_they_fit() {
        let secret = ScramSecret::derive("app", b"salt-one", 16);
        let other = ScramSecret::derive("app", b"salt-two", 16);
        let key = derive_key("app", &secret);
        assert!(key.fits(&secret));
        assert!(!key.fits(&other));

        let keys = ClientKeys::default();
        assert!(keys.get("app", &secret).is_none());
        keys.remember("app", key);
        assert!(keys.get("app", &secret).is_some());
        assert!(keys.get("app", &other).is_none(), "a changed secret");
        assert!(keys.get("bob", &secret).is_none());
        keys.remember("app", derive_key("app", &other));
        assert!(keys.get("app", &other).is_some());
        assert!(keys.get("app", &secret).is_none(), "replaced");
    }

    #[test]
    fn debug_is_redacted() {
        let secret = ScramSecret::derive("app", b"salt", 16);
        let key = derive_key("app", &secret);
        let keys = ClientKeys::default();
        keys.remember("app", key.clone());
        assert_eq!(format!("{key:?}"), "ClientKey(..)");
        assert_eq!(format!("{keys:?}"), "ClientKeys { users: 1 }");
    }
}
