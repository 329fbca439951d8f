//! The server side of one SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), as Postgres does it:
//! <https://www.postgresql.org/docs/current/sasl-authentication.html>.
//!
//! Like Postgres, the user name in client-first-message is ignored (the startup packet names
//! the user) and an authorization identity is refused. Channel binding is not offered yet, so
//! the gs2 header must be `n,,` or `y,,`; a client asking for `p=` is violating the protocol.
//! When SCRAM-SHA-256-PLUS arrives, `y` must be refused whenever PLUS was offered (it signals a
//! downgrade), and `p=` accepted with the TLS server end-point hash.
//!
//! An unknown user gets a mock exchange whose salt is derived from the user name with a
//! per-process random key, so its server-first-message looks like a real one and stays the same
//! from one attempt to the next; it fails at the final step exactly like a wrong password.

mod message;

use std::mem;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};

use self::message::{as_message, ClientFinal, ClientFirst};
use super::secret::{hmac_sha256, SALT_LEN};
use super::{ct_eq, AuthError, ScramSecret, SCRAM_DEFAULT_ITERATIONS};

/// The SASL mechanism name the broker offers in AuthenticationSASL.
pub const SCRAM_MECHANISM: &str = "SCRAM-SHA-256";

/// Longest client-first or client-final message accepted. Real ones are about 100 bytes.
pub const MAX_SCRAM_MESSAGE_LEN: usize = 1024;

/// Random bytes in the server's half of the nonce (Postgres's `SCRAM_RAW_NONCE_LEN`).
const SERVER_NONCE_LEN: usize = 18;

/// The server side of one SCRAM-SHA-256 exchange: `client_first`, then `client_final`.
pub struct ScramExchange {
    state: State,
}

/// Where the exchange stands; every step moves it on, a failed step ends it.
enum State {
    /// Waiting for client-first-message.
    Initial { secret: ScramSecret, doomed: bool },
    /// server-first-message sent; waiting for client-final-message.
    Challenged(Challenge),
    /// Finished, with success or failure; nothing more is accepted.
    Done,
}

/// What client-final-message is checked against.
struct Challenge {
    secret: ScramSecret,
    /// A mock exchange for an unknown user: runs every step, then fails.
    doomed: bool,
    /// `n,,` or `y,,`: what `c=` must encode.
    gs2_header: String,
    /// Client nonce followed by server nonce: what `r=` must repeat.
    nonce: String,
    /// `client-first-message-bare "," server-first-message ","`: the start of AuthMessage.
    auth_prefix: String,
}

impl ScramExchange {
    /// Starts an exchange for `user`; `secret` is `None` for an unknown user, which gets a mock
    /// exchange that fails at the final step like a wrong password.
    pub fn new(user: &str, secret: Option<ScramSecret>) -> ScramExchange {
        let (secret, doomed) = match secret {
            Some(secret) => (secret, false),
            None => (mock_secret(user), true),
        };
        ScramExchange {
            state: State::Initial { secret, doomed },
        }
    }

    /// Takes client-first-message (the data of SASLInitialResponse) and returns
    /// server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::Initial { secret, doomed } = mem::replace(&mut self.state, State::Done) else {
            return Err(AuthError::OutOfOrder {
                step: "client-first",
            });
        };
        let first = ClientFirst::parse(as_message(data)?)?;
        let nonce = format!("{}{}", first.nonce, server_nonce());
        let salt = STANDARD.encode(&secret.salt);
        let server_first = format!("r={nonce},s={salt},i={}", secret.iterations);
        self.state = State::Challenged(Challenge {
            auth_prefix: format!("{},{server_first},", first.bare),
            gs2_header: first.gs2_header.to_owned(),
            nonce,
            secret,
            doomed,
        });
        Ok(server_first.into_bytes())
    }

    /// Takes client-final-message (the data of SASLResponse) and returns server-final-message
    /// (`v=…`), or [`AuthError::BadPassword`] when the proof is wrong or the user unknown.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::Challenged(challenge) = mem::replace(&mut self.state, State::Done) else {
            return Err(AuthError::OutOfOrder {
                step: "client-final",
            });
        };
        let last = ClientFinal::parse(as_message(data)?)?;
        challenge.check(&last)?;
        challenge.verify(&last)
    }
}

/// Redacted: shows the step only.
impl std::fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.state {
            State::Initial { .. } => "Initial",
            State::Challenged(_) => "Challenged",
            State::Done => "Done",
        };
        f.debug_struct("ScramExchange")
            .field("state", &step)
            .finish()
    }
}

impl Challenge {
    /// The channel binding and nonce must repeat what the first round agreed.
    fn check(&self, last: &ClientFinal<'_>) -> Result<(), AuthError> {
        if !STANDARD
            .decode(last.channel_binding)
            .is_ok_and(|cb| cb == self.gs2_header.as_bytes())
        {
            return Err(malformed("channel binding does not match the gs2 header"));
        }
        if last.nonce != self.nonce {
            return Err(malformed("nonce mismatch"));
        }
        Ok(())
    }

    /// Checks the client proof against StoredKey and, if it holds, signs with ServerKey.
    fn verify(&self, last: &ClientFinal<'_>) -> Result<Vec<u8>, AuthError> {
        let auth_message = [self.auth_prefix.as_bytes(), last.without_proof.as_bytes()];
        let signature = hmac_sha256(&self.secret.stored_key, &auth_message);
        let mut client_key = last.proof;
        client_key
            .iter_mut()
            .zip(signature)
            .for_each(|(k, s)| *k ^= s);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        // `&`, not `&&`: the mock pays for the same comparison as a real attempt.
        if !(ct_eq(&stored_key, &self.secret.stored_key) & !self.doomed) {
            return Err(AuthError::BadPassword);
        }
        let server_signature = hmac_sha256(&self.secret.server_key, &auth_message);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// The server's half of the nonce: random bytes, base64 (printable, no commas).
fn server_nonce() -> String {
    let mut raw = [0u8; SERVER_NONCE_LEN];
    rand::rng().fill_bytes(&mut raw);
    STANDARD.encode(raw)
}

/// A plausible secret for an unknown user: salt and keys keyed on the user name, stable for
/// the life of the process, unrelated to any password.
fn mock_secret(user: &str) -> ScramSecret {
    let key = mock_key();
    let salt = hmac_sha256(key, &[b"salt\0", user.as_bytes()]);
    ScramSecret {
        iterations: SCRAM_DEFAULT_ITERATIONS,
        salt: salt.get(..SALT_LEN).unwrap_or(&salt).to_vec(),
        stored_key: hmac_sha256(key, &[b"stored\0", user.as_bytes()]),
        server_key: hmac_sha256(key, &[b"server\0", user.as_bytes()]),
    }
}

/// The per-process random key behind mock secrets: set once, never changed.
fn mock_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    })
}

fn malformed(what: &'static str) -> AuthError {
    AuthError::Malformed { what }
}

#[cfg(test)]
mod tests;
