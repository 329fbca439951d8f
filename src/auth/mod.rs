//! Client-facing authentication: SCRAM-SHA-256 (and SCRAM-SHA-256-PLUS with tls-server-end-point
//! channel binding when the caller has a TLS certificate to bind to), md5 and cleartext password
//! checks against the credentials in the config, as pure logic with no I/O.
//!
//! The session reads and frames the messages; this module gets their bodies as byte slices and
//! returns the bytes to send back. It follows Postgres's own server side:
//! <https://www.postgresql.org/docs/current/sasl-authentication.html> and
//! <https://www.postgresql.org/docs/current/auth-password.html>.
//!
//! Layout:
//! - `secret`: stored credentials ([`Secret`], [`ScramSecret`]) and the PBKDF2 derivation;
//! - `scram`: one server-side SCRAM exchange ([`ScramExchange`]), with a mock for unknown users,
//!   and what a connection offers to bind it to ([`ChannelBinding`]);
//! - `password`: the md5 and cleartext checks;
//! - `cache`: derived SCRAM keys for plaintext passwords ([`KeyCache`]);
//! - `client_key`: ClientKeys recovered from clients' SCRAM proofs ([`ClientKey`],
//!   [`ClientKeys`]), for SCRAM passthrough;
//! - `scram_client`: the client side of SCRAM with a ClientKey ([`ScramKeyClient`]), how the
//!   broker logs in to Postgres with only a SCRAM secret;
//! - `users`: the configured users ([`UserEntry`]);
//! - here: the error type, the message-body parsers and a constant-time compare.
//!
//! Secrets never reach an error message, a `Debug` line or a log: every `Debug` is redacted.

mod cache;
mod client_key;
mod password;
mod scram;
mod scram_client;
mod secret;
mod users;

pub use cache::KeyCache;
pub use client_key::{ClientKey, ClientKeys};
pub use password::{md5_verify, verify_cleartext};
pub use scram::{
    ChannelBinding, ScramExchange, MAX_SCRAM_MESSAGE_LEN, SCRAM_MECHANISM, SCRAM_PLUS_MECHANISM,
};
pub use scram_client::{PassthroughError, ScramKeyClient};
pub use secret::{scram_secret, ScramSecret, Secret, SCRAM_DEFAULT_ITERATIONS};
pub use users::UserEntry;

/// Longest password a client may send in a PasswordMessage, terminating NUL included. Generous
/// because cloud IAM tokens travel as cleartext passwords and run to a couple of kilobytes.
pub const MAX_PASSWORD_MESSAGE_LEN: usize = 4096;

/// What went wrong while authenticating a client. `Display` never includes a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password, or unknown user: deliberately indistinguishable.
    #[error("password authentication failed")]
    BadPassword,
    /// The client sent something that does not parse (or is over a size limit).
    #[error("malformed authentication message: {what}")]
    Malformed {
        /// Which part was malformed.
        what: &'static str,
    },
    /// A valid request for something the broker does not do (e.g. md5 against a SCRAM secret).
    #[error("unsupported authentication request: {what}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
    /// A stored secret in the config does not parse.
    #[error("invalid password secret: {what}")]
    BadSecret {
        /// What is wrong with it.
        what: &'static str,
    },
    /// SCRAM channel binding refused: the client bound to another certificate (a
    /// man-in-the-middle, or a TLS-terminating proxy in front of the broker), or chose a binding
    /// that contradicts the offer (a downgrade to `y`, PLUS where it was not offered). Kept apart
    /// from [`AuthError::BadPassword`] so the log says why; it is decided before the proof and
    /// from the connection alone, so it tells nothing about the user or the password.
    #[error("SCRAM channel binding failed: {what}")]
    ChannelBinding {
        /// What did not match.
        what: &'static str,
    },
    /// A SCRAM step arrived in the wrong order (or after the exchange failed or finished).
    #[error("SCRAM message out of order: {step}")]
    OutOfOrder {
        /// The step that was called.
        step: &'static str,
    },
}

/// Splits a SASLInitialResponse body into the mechanism name and the client-first data: a
/// C string, an `i32` length (-1 = no data), then exactly that many bytes.
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), AuthError> {
    let malformed = |what| AuthError::Malformed { what };
    let (mechanism, rest) = split_cstr(body).ok_or(malformed("mechanism is not a C string"))?;
    let mechanism = std::str::from_utf8(mechanism).map_err(|_| malformed("mechanism not UTF-8"))?;
    let (len, data) = rest
        .split_first_chunk::<4>()
        .ok_or(malformed("missing length"))?;
    match i32::from_be_bytes(*len) {
        -1 if data.is_empty() => Ok((mechanism, data)),
        len if usize::try_from(len).is_ok_and(|len| len == data.len()) => Ok((mechanism, data)),
        _ => Err(malformed("SASL data length does not match the message")),
    }
}

/// The password in a PasswordMessage body: a C string whose only NUL is its last byte.
pub fn parse_password_message(body: &[u8]) -> Result<&[u8], AuthError> {
    if body.len() > MAX_PASSWORD_MESSAGE_LEN {
        return Err(AuthError::Malformed {
            what: "password message too long",
        });
    }
    match split_cstr(body) {
        Some((password, [])) => Ok(password),
        _ => Err(AuthError::Malformed {
            what: "password is not one C string",
        }),
    }
}

/// Splits at the first NUL: the bytes before it and the bytes after it.
fn split_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    let (head, tail) = buf.split_at_checked(nul)?;
    Some((head, tail.get(1..)?))
}

/// Constant-time equality of two byte strings (their lengths are not secret).
///
/// `subtle` keeps the optimizer from turning the comparison into an early exit, which a
/// hand-written fold does not guarantee.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sasl_body(mechanism: &str, len: i32, data: &[u8]) -> Vec<u8> {
        [mechanism.as_bytes(), b"\0", &len.to_be_bytes(), data].concat()
    }

    #[test]
    fn sasl_initial_response_parses() {
        let body = sasl_body(SCRAM_MECHANISM, 5, b"n,,n=");
        assert_eq!(
            parse_sasl_initial_response(&body).unwrap(),
            (SCRAM_MECHANISM, &b"n,,n="[..])
        );
        let body = sasl_body("X", -1, b"");
        assert_eq!(parse_sasl_initial_response(&body).unwrap(), ("X", &b""[..]));
    }

    #[test]
    fn sasl_initial_response_rejects_garbage() {
        let bad: [&[u8]; 6] = [
            b"",
            b"SCRAM-SHA-256",
            b"SCRAM-SHA-256\0\0\0",
            &sasl_body("M", 6, b"n,,n="),
            &sasl_body("M", -2, b""),
            &sasl_body("M", -1, b"x"),
        ];
        for body in bad {
            let err = parse_sasl_initial_response(body).unwrap_err();
            assert!(matches!(err, AuthError::Malformed { .. }), "{body:?}");
        }
        let short = sasl_body("M", 4, b"n,,n=");
        assert!(parse_sasl_initial_response(&short).is_err());
        assert!(parse_sasl_initial_response(&[0xff, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn password_message_parses() {
        assert_eq!(parse_password_message(b"secret\0").unwrap(), b"secret");
        assert_eq!(parse_password_message(b"\0").unwrap(), b"");
        for bad in [&b""[..], b"secret", b"sec\0ret\0", b"secret\0\0"] {
            let err = parse_password_message(bad).unwrap_err();
            assert!(matches!(err, AuthError::Malformed { .. }), "{bad:?}");
        }
        let long = [b"x".repeat(MAX_PASSWORD_MESSAGE_LEN), vec![0]].concat();
        assert!(parse_password_message(&long).is_err());
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn errors_are_send_sync_and_typed() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<AuthError>();
        assert_send_sync::<KeyCache>();
        assert_send_sync::<ScramExchange>();
        assert_eq!(
            AuthError::BadPassword.to_string(),
            "password authentication failed"
        );
    }
}
