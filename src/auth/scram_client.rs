//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) with a ClientKey instead of a
//! password: how the broker logs in to Postgres for a user it holds only a SCRAM secret of
//! (SCRAM passthrough). Pure logic; the backend login does the I/O.
//!
//! The ClientKey fits only the verifier it came from, so the server's salt and iteration
//! count must be the configured secret's; the server proves itself with the secret's
//! ServerKey. No channel binding towards the server (`n,,`).
//! <https://www.postgresql.org/docs/current/sasl-authentication.html>

use std::mem;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;

use super::secret::hmac_sha256;
use super::{ct_eq, ClientKey, ScramSecret, MAX_SCRAM_MESSAGE_LEN};

/// The gs2 header sent: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";

/// Random bytes in the client's nonce (as Postgres's `SCRAM_RAW_NONCE_LEN`).
const CLIENT_NONCE_LEN: usize = 18;

/// What went wrong logging in to a server with a ClientKey. `Display` never includes a key.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    /// The server's verifier is not the configured secret (another salt or iteration
    /// count, a refused proof, a signature made with another ServerKey).
    #[error("the server's SCRAM verifier is not the configured secret: {what}")]
    Mismatch {
        /// What differed.
        what: &'static str,
    },
    /// The server sent something that does not parse (or is over a size limit).
    #[error("malformed SCRAM message from the server: {what}")]
    Malformed {
        /// Which part was malformed.
        what: &'static str,
    },
    /// A step was called in the wrong order (or after the exchange failed or finished).
    #[error("SCRAM client step out of order: {step}")]
    OutOfOrder {
        /// The step that was called.
        step: &'static str,
    },
}

/// One SCRAM login with a ClientKey: `client_first`, `server_first`, `server_final`.
pub struct ScramKeyClient {
    state: State,
}

/// Where the login stands; a failed step ends it.
enum State {
    /// client-first-message not sent yet.
    Initial { key: ClientKey, secret: ScramSecret },
    /// client-first-message sent; waiting for server-first-message.
    Started {
        key: ClientKey,
        secret: ScramSecret,
        nonce: String,
    },
    /// client-final-message sent; waiting for the server's signature.
    Proved { server_signature: [u8; 32] },
    /// Finished, with success or failure.
    Done,
}

impl ScramKeyClient {
    /// A login with `key`, which must fit `secret` (see [`ClientKey::fits`]).
    pub fn new(key: ClientKey, secret: ScramSecret) -> ScramKeyClient {
        ScramKeyClient {
            state: State::Initial { key, secret },
        }
    }

    /// client-first-message (`n,,n=,r=<nonce>`), for SASLInitialResponse. The user name is
    /// left empty, as libpq does: Postgres takes it from the startup packet.
    pub fn client_first(&mut self) -> Result<Vec<u8>, PassthroughError> {
        let State::Initial { key, secret } = mem::replace(&mut self.state, State::Done) else {
            return Err(PassthroughError::OutOfOrder {
                step: "client-first",
            });
        };
        let mut raw = [0u8; CLIENT_NONCE_LEN];
        rand::rng().fill_bytes(&mut raw);
        let nonce = STANDARD.encode(raw);
        let message = format!("{GS2_HEADER}{}", bare(&nonce));
        self.state = State::Started { key, secret, nonce };
        Ok(message.into_bytes())
    }

    /// Takes server-first-message (from AuthenticationSASLContinue) and returns
    /// client-final-message with the proof, for SASLResponse.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, PassthroughError> {
        let State::Started { key, secret, nonce } = mem::replace(&mut self.state, State::Done)
        else {
            return Err(PassthroughError::OutOfOrder {
                step: "server-first",
            });
        };
        let server_first = as_message(data)?;
        let first = ServerFirst::parse(server_first, &nonce)?;
        if first.salt != secret.salt {
            return Err(mismatch("the server's salt differs"));
        }
        if first.iterations != secret.iterations {
            return Err(mismatch("the server's iteration count differs"));
        }
        let without_proof = format!("c={},r={}", STANDARD.encode(GS2_HEADER), first.nonce);
        let first_bare = bare(&nonce);
        let auth_message = [
            first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let mut proof = hmac_sha256(&secret.stored_key, &auth_message);
        proof.iter_mut().zip(key.bytes()).for_each(|(p, k)| *p ^= k);
        self.state = State::Proved {
            server_signature: hmac_sha256(&secret.server_key, &auth_message),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks server-final-message (from AuthenticationSASLFinal): `v=` must be the
    /// signature the configured ServerKey makes.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), PassthroughError> {
        let State::Proved { server_signature } = mem::replace(&mut self.state, State::Done) else {
            return Err(PassthroughError::OutOfOrder {
                step: "server-final",
            });
        };
        let message = as_message(data)?;
        if message.starts_with("e=") {
            return Err(mismatch("the server refused the proof"));
        }
        let verifier = message
            .split(',')
            .next()
            .and_then(|v| v.strip_prefix("v="))
            .ok_or(malformed("missing verifier (v=)"))?;
        let signature = STANDARD
            .decode(verifier)
            .map_err(|_| malformed("verifier is not base64"))?;
        if !ct_eq(&signature, &server_signature) {
            return Err(mismatch("the server's signature differs"));
        }
        Ok(())
    }
}

/// Redacted: shows the step only.
impl std::fmt::Debug for ScramKeyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.state {
            State::Initial { .. } => "Initial",
            State::Started { .. } => "Started",
            State::Proved { .. } => "Proved",
            State::Done => "Done",
        };
        f.debug_struct("ScramKeyClient")
            .field("state", &step)
            .finish()
    }
}

/// client-first-message-bare.
fn bare(nonce: &str) -> String {
    format!("n=,r={nonce}")
}

/// The parts of server-first-message the client needs.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

impl<'a> ServerFirst<'a> {
    /// `r=<nonce>,s=<salt>,i=<iterations>[,<extension>]*`, the nonce starting with ours and
    /// adding the server's part.
    fn parse(msg: &'a str, ours: &str) -> Result<ServerFirst<'a>, PassthroughError> {
        if msg.starts_with("m=") {
            return Err(malformed("mandatory SCRAM extension"));
        }
        let mut parts = msg.split(',');
        let mut attribute = |name| {
            parts
                .next()
                .and_then(|part: &'a str| part.strip_prefix(name))
        };
        let nonce = attribute("r=").ok_or(malformed("missing nonce (r=)"))?;
        let salt = attribute("s=").ok_or(malformed("missing salt (s=)"))?;
        let iterations = attribute("i=").ok_or(malformed("missing iterations (i=)"))?;
        let theirs = nonce
            .strip_prefix(ours)
            .ok_or(malformed("nonce does not start with the client's"))?;
        if theirs.is_empty() || !theirs.bytes().all(|b| matches!(b, 0x21..=0x7e)) {
            return Err(malformed("server nonce is empty or not printable"));
        }
        Ok(ServerFirst {
            nonce,
            salt: STANDARD
                .decode(salt)
                .map_err(|_| malformed("salt is not base64"))?,
            iterations: iterations
                .parse()
                .map_err(|_| malformed("iteration count is not a number"))?,
        })
    }
}

/// A server message as text, within [`MAX_SCRAM_MESSAGE_LEN`].
fn as_message(data: &[u8]) -> Result<&str, PassthroughError> {
    if data.len() > MAX_SCRAM_MESSAGE_LEN {
        return Err(malformed("SCRAM message too long"));
    }
    std::str::from_utf8(data).map_err(|_| malformed("SCRAM message is not UTF-8"))
}

fn malformed(what: &'static str) -> PassthroughError {
    PassthroughError::Malformed { what }
}

fn mismatch(what: &'static str) -> PassthroughError {
    PassthroughError::Mismatch { what }
}

#[cfg(test)]
mod tests;
