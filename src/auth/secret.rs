//! Stored credentials: the three forms a user's `password` may take in the config, and the
//! SCRAM-SHA-256 key derivation that turns a password into a verifier.
//!
//! The formats are Postgres's own (`pg_authid.rolpassword`):
//! <https://www.postgresql.org/docs/current/catalog-pg-authid.html>, and the derivation is
//! RFC 5802 §3 with SHA-256 (RFC 7677).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::AuthError;

/// The prefix of a SCRAM-SHA-256 secret in Postgres's storage format.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Length of the random salt `scram_secret` generates (Postgres's `SCRAM_DEFAULT_SALT_LEN`).
pub(super) const SALT_LEN: usize = 16;

/// Postgres's default iteration count (`scram_iterations`), used for derived and mock secrets.
pub const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;

/// A user's stored credential, parsed from the config's `password` string.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plaintext password.
    Plain(String),
    /// `"md5"` + 32 lowercase hex digits of md5(password + username), as Postgres stores it.
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramSecret),
}

impl Secret {
    /// Parses `"SCRAM-SHA-256$iter:salt$stored:server"`, `"md5<32 hex>"`, or else a plaintext
    /// password, classifying the way Postgres's `get_password_type` does; unlike Postgres, a
    /// broken SCRAM secret is an error rather than a plaintext password, and so is an empty one.
    pub fn parse(s: &str) -> Result<Secret, AuthError> {
        if s.is_empty() {
            return Err(AuthError::BadSecret {
                what: "empty password",
            });
        }
        if s.starts_with(SCRAM_PREFIX) {
            return ScramSecret::parse(s).map(Secret::Scram);
        }
        if is_md5_secret(s) {
            return Ok(Secret::Md5(s.to_owned()));
        }
        Ok(Secret::Plain(s.to_owned()))
    }
}

/// Redacted: a `Secret` in a log line shows its kind only.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(..)"),
            Secret::Scram(s) => f.debug_tuple("Secret::Scram").field(s).finish(),
        }
    }
}

/// `"md5"` followed by exactly 32 lowercase hex digits (Postgres's `isMD5` test).
fn is_md5_secret(s: &str) -> bool {
    s.strip_prefix("md5").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A SCRAM-SHA-256 verifier: what a server stores instead of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: Vec<u8>,
    /// SHA-256(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parses Postgres's `"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"` (base64).
    pub fn parse(s: &str) -> Result<ScramSecret, AuthError> {
        let bad = |what| AuthError::BadSecret { what };
        let rest = s
            .strip_prefix(SCRAM_PREFIX)
            .ok_or(bad("no SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest.split_once('$').ok_or(bad("missing '$' before keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or(bad("missing salt"))?;
        let (stored, server) = keys.split_once(':').ok_or(bad("missing server key"))?;
        let iterations: u32 = iterations.parse().map_err(|_| bad("bad iteration count"))?;
        if iterations == 0 {
            return Err(bad("zero iterations"));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| bad("salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("empty salt"));
        }
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored).ok_or(bad("stored key is not 32 bytes of base64"))?,
            server_key: decode_key(server).ok_or(bad("server key is not 32 bytes of base64"))?,
        })
    }

    /// PBKDF2-HMAC-SHA-256 derivation of the verifier (CPU-heavy: callers run it in
    /// `spawn_blocking`).
    ///
    /// The password is used as given, without SASLprep: identical to Postgres for ASCII
    /// passwords and for Unicode ones already in normalized form.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        derive_bytes(password.as_bytes(), salt, iterations)
    }
}

/// Postgres's storage format, `"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"`.
impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key),
        )
    }
}

/// Redacted: shows the parameters, not the keys.
impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// A base64 string that decodes to exactly 32 bytes.
fn decode_key(s: &str) -> Option<[u8; 32]> {
    STANDARD.decode(s).ok()?.try_into().ok()
}

/// [`ScramSecret::derive`] over raw bytes: Postgres passwords are byte strings.
pub(super) fn derive_bytes(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
    // RFC 5802's Hi() is PBKDF2-HMAC-SHA-256 with one 32-byte output block.
    let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations);
    let client_key = hmac_sha256(&salted, &[b"Client Key"]);
    ScramSecret {
        iterations,
        salt: salt.to_vec(),
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac_sha256(&salted, &[b"Server Key"]),
    }
}

/// HMAC-SHA-256 of the concatenated `parts`.
///
/// The key is brought to one SHA-256 block first, as RFC 2104 §2 does (hashed when longer,
/// zero-padded when shorter), so the fixed-size, infallible `KeyInit::new` applies.
pub(super) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    type HmacSha256 = hmac::Hmac<Sha256>;
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let hashed: [u8; 32] = Sha256::digest(key).into();
        block.iter_mut().zip(hashed).for_each(|(b, k)| *b = k);
    } else {
        block.iter_mut().zip(key).for_each(|(b, k)| *b = *k);
    }
    let mut mac = HmacSha256::new(&block);
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().into()
}

/// For `pgbroker scram-secret`: the Postgres-format SCRAM-SHA-256 secret of `password`, with a
/// random 16-byte salt and the given iteration count, at least 1 (Postgres's default is 4096).
pub fn scram_secret(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    ScramSecret::derive(password, &salt, iterations.max(1)).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use postgres_protocol::password::scram_sha_256;

    #[test]
    fn derive_matches_postgres_protocol() {
        for password in ["app", "", "pässwörd", &"long".repeat(40)] {
            let theirs = ScramSecret::parse(&scram_sha_256(password.as_bytes())).unwrap();
            let ours = ScramSecret::derive(password, &theirs.salt, theirs.iterations);
            assert_eq!(ours, theirs, "password of {} bytes", password.len());
        }
    }

    #[test]
    fn scram_secret_round_trips() {
        let s = scram_secret("app", 4096);
        let parsed = ScramSecret::parse(&s).unwrap();
        assert_eq!(parsed.iterations, 4096);
        assert_eq!(parsed.salt.len(), SALT_LEN);
        assert_eq!(parsed.to_string(), s);
        assert_eq!(ScramSecret::derive("app", &parsed.salt, 4096), parsed);
        assert_ne!(scram_secret("app", 4096), s, "salt is random");
    }

    #[test]
    fn parse_classifies_like_postgres() {
        let md5 = "md5a3556571e93b0d20722ba62be61e8c2d";
        assert_eq!(Secret::parse(md5).unwrap(), Secret::Md5(md5.into()));
        assert!(matches!(
            Secret::parse(&scram_secret("x", 10)),
            Ok(Secret::Scram(_))
        ));
        for plain in [
            "app",
            "md5",
            "md5rocks",
            &md5.to_uppercase(),
            &md5[..34],
            "SCRAM",
        ] {
            assert_eq!(Secret::parse(plain).unwrap(), Secret::Plain(plain.into()));
        }
        assert!(matches!(
            Secret::parse(""),
            Err(AuthError::BadSecret { .. })
        ));
    }

    #[test]
    fn parse_rejects_broken_scram_secrets() {
        let good = scram_secret("x", 4096);
        let (head, keys) = good.rsplit_once('$').unwrap();
        let (stored, _) = keys.split_once(':').unwrap();
        for bad in [
            "SCRAM-SHA-256$".to_owned(),
            "SCRAM-SHA-256$4096:c2FsdA==".to_owned(),
            good.replace("$4096:", "$0:"),
            good.replace("$4096:", "$-1:"),
            good.replace("$4096:", "$4096:!!"),
            format!("{head}${stored}"),
            format!("{head}${stored}:AAAA"),
            format!("{head}${stored}:{stored}x"),
        ] {
            assert!(
                matches!(Secret::parse(&bad), Err(AuthError::BadSecret { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_and_errors_hide_secrets() {
        let secret = Secret::parse("hunter2").unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
        let scram = ScramSecret::parse(&scram_secret("x", 4096)).unwrap();
        let key = STANDARD.encode(scram.stored_key);
        assert!(!format!("{:?}", Secret::Scram(scram)).contains(&key));
    }
}
