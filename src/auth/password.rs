//! The password-message methods: md5 challenge-response and cleartext, checked against any kind
//! of stored secret: <https://www.postgresql.org/docs/current/auth-password.html>.
//!
//! Every comparison of a secret-derived value is constant-time.

use md5::{Digest, Md5};

use super::secret::derive_bytes;
use super::{ct_eq, AuthError, Secret};

/// Checks the response to AuthenticationMD5Password: `"md5" + md5_hex(inner + salt)` where
/// `inner` is the stored md5 secret's hex, or md5_hex(password + user) for a plaintext one.
/// A SCRAM secret cannot answer an md5 challenge: [`AuthError::Unsupported`].
pub fn md5_verify(
    secret: &Secret,
    user: &str,
    salt: [u8; 4],
    response: &[u8],
) -> Result<(), AuthError> {
    let inner = match secret {
        Secret::Plain(password) => md5_hex(&[password.as_bytes(), user.as_bytes()]),
        Secret::Md5(stored) => stored.get(3..).unwrap_or_default().to_owned(),
        Secret::Scram(_) => {
            return Err(AuthError::Unsupported {
                what: "md5 authentication against a SCRAM secret",
            })
        }
    };
    let expected = format!("md5{}", md5_hex(&[inner.as_bytes(), &salt]));
    matches(&expected, response)
}

/// Checks a cleartext password against any kind of secret. For a SCRAM secret this runs
/// PBKDF2 (CPU-heavy: callers use `spawn_blocking`). An empty password never matches, as in
/// Postgres.
pub fn verify_cleartext(secret: &Secret, user: &str, password: &[u8]) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::BadPassword);
    }
    match secret {
        Secret::Plain(stored) => matches(stored, password),
        Secret::Md5(stored) => {
            let hashed = format!("md5{}", md5_hex(&[password, user.as_bytes()]));
            matches(stored, hashed.as_bytes())
        }
        Secret::Scram(stored) => {
            let derived = derive_bytes(password, &stored.salt, stored.iterations);
            let same = ct_eq(&derived.stored_key, &stored.stored_key)
                & ct_eq(&derived.server_key, &stored.server_key);
            same.then_some(()).ok_or(AuthError::BadPassword)
        }
    }
}

/// `Ok` when `given` equals `expected`, compared in constant time.
fn matches(expected: &str, given: &[u8]) -> Result<(), AuthError> {
    if ct_eq(expected.as_bytes(), given) {
        Ok(())
    } else {
        Err(AuthError::BadPassword)
    }
}

/// Lowercase hex of the MD5 of the concatenated `parts`.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut md5 = Md5::new();
    parts.iter().for_each(|part| md5.update(part));
    md5.finalize()
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap_or('0'))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::{scram_secret, ScramSecret};
    use postgres_protocol::authentication::md5_hash;

    const SALT: [u8; 4] = [0x2a, 0x3d, 0x8f, 0xe0];

    fn md5_secret(user: &str, password: &str) -> Secret {
        Secret::parse(&format!(
            "md5{}",
            md5_hex(&[password.as_bytes(), user.as_bytes()])
        ))
        .unwrap()
    }

    #[test]
    fn md5_hex_matches_known_value() {
        // Postgres: SELECT 'md5' || md5('password' || 'md5_user');
        let known = "md57cd2b9a92689eab2e58caf2da80afa15";
        assert_eq!(
            md5_secret("md5_user", "password"),
            Secret::Md5(known.into())
        );
    }

    #[test]
    fn md5_with_plain_and_md5_secrets() {
        for secret in [Secret::Plain("app".into()), md5_secret("app", "app")] {
            let response = md5_hash(b"app", b"app", SALT);
            md5_verify(&secret, "app", SALT, response.as_bytes()).unwrap();
            let wrong = [
                md5_hash(b"app", b"apP", SALT),
                md5_hash(b"other", b"app", SALT),
                md5_hash(b"app", b"app", [0, 0, 0, 0]),
                String::new(),
                response.to_uppercase(),
                format!("{response}0"),
            ];
            for response in wrong {
                let result = md5_verify(&secret, "app", SALT, response.as_bytes());
                assert!(matches!(result, Err(AuthError::BadPassword)), "{response}");
            }
        }
    }

    #[test]
    fn md5_against_scram_is_unsupported() {
        let secret = Secret::parse(&scram_secret("app", 16)).unwrap();
        let response = md5_hash(b"app", b"app", SALT);
        let result = md5_verify(&secret, "app", SALT, response.as_bytes());
        assert!(matches!(result, Err(AuthError::Unsupported { .. })));
    }

    #[test]
    fn cleartext_against_every_kind_of_secret() {
        let secrets = [
            Secret::Plain("app".into()),
            md5_secret("app", "app"),
            Secret::parse(&scram_secret("app", 64)).unwrap(),
            Secret::parse(&postgres_protocol::password::scram_sha_256(b"app")).unwrap(),
        ];
        for secret in &secrets {
            verify_cleartext(secret, "app", b"app").unwrap();
            for wrong in [&b"apP"[..], b"app ", b"ap", b"", b"\xff"] {
                let result = verify_cleartext(secret, "app", wrong);
                assert!(matches!(result, Err(AuthError::BadPassword)), "{secret:?}");
            }
        }
        let result = verify_cleartext(&secrets[1], "other", b"app");
        assert!(
            matches!(result, Err(AuthError::BadPassword)),
            "md5 is salted by user"
        );
    }

    #[test]
    fn cleartext_scram_checks_both_keys() {
        let Secret::Scram(mut secret) = Secret::parse(&scram_secret("app", 16)).unwrap() else {
            panic!("not a SCRAM secret");
        };
        secret.server_key[0] ^= 1;
        let result = verify_cleartext(&Secret::Scram(secret), "app", b"app");
        assert!(matches!(result, Err(AuthError::BadPassword)));
        let derived = ScramSecret::derive("app", b"salt", 16);
        verify_cleartext(&Secret::Scram(derived), "app", b"app").unwrap();
    }
}
