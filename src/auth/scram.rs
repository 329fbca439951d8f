//! The server side of one SCRAM-SHA-256 or SCRAM-SHA-256-PLUS exchange (RFC 5802, RFC 7677),
//! as Postgres does it: <https://www.postgresql.org/docs/current/sasl-authentication.html>.
//!
//! Like Postgres, the user name in client-first-message is ignored (the startup packet names
//! the user) and an authorization identity is refused.
//!
//! Channel binding (RFC 5802 §6) follows Postgres's rules. The caller says per connection what
//! it can bind to ([`ChannelBinding`]): on TLS, the tls-server-end-point hash of the broker's
//! certificate (RFC 5929, see `tls::tls_server_end_point`), and then SCRAM-SHA-256-PLUS is
//! offered first. With PLUS the gs2 header must be `p=tls-server-end-point,,` and `c=` must
//! carry that header followed by the hash; with plain SCRAM-SHA-256 the header is `n,,` or
//! `y,,`, but `y` ("I could bind, but the server cannot") is refused whenever PLUS was offered,
//! because it means something between client and broker removed PLUS from the list (a
//! downgrade). `p=` with the plain mechanism, PLUS when it was not offered, and any other
//! channel binding type are refused too.
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

use self::message::{as_message, ClientFinal, ClientFirst, Gs2Flag};
use super::secret::{hmac_sha256, SALT_LEN};
use super::{ct_eq, AuthError, ClientKey, ScramSecret, SCRAM_DEFAULT_ITERATIONS};

/// The SASL mechanism without channel binding, offered on every connection.
pub const SCRAM_MECHANISM: &str = "SCRAM-SHA-256";

/// The SASL mechanism with channel binding, offered when a [`ChannelBinding`] is available.
pub const SCRAM_PLUS_MECHANISM: &str = "SCRAM-SHA-256-PLUS";

/// The one channel binding type offered, as by Postgres (RFC 5929 §4).
const CB_NAME: &str = "tls-server-end-point";

/// Longest client-first or client-final message accepted. Real ones are about 100 bytes.
pub const MAX_SCRAM_MESSAGE_LEN: usize = 1024;

/// Random bytes in the server's half of the nonce (Postgres's `SCRAM_RAW_NONCE_LEN`).
const SERVER_NONCE_LEN: usize = 18;

/// What this connection can bind a SCRAM exchange to, decided by the caller per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Nothing to bind to (plain TCP, or a certificate without a tls-server-end-point hash):
    /// only SCRAM-SHA-256 is offered.
    None,
    /// The tls-server-end-point hash of the broker's certificate on this TLS connection
    /// (`tls::tls_server_end_point`): SCRAM-SHA-256-PLUS is offered too.
    EndPoint(Vec<u8>),
}

impl ChannelBinding {
    /// The mechanisms to list in AuthenticationSASL, in order of preference: PLUS first when
    /// there is something to bind to, since a client takes the first one it supports.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        match self {
            ChannelBinding::None => &[SCRAM_MECHANISM],
            ChannelBinding::EndPoint(_) => &[SCRAM_PLUS_MECHANISM, SCRAM_MECHANISM],
        }
    }
}

/// The server side of one SCRAM exchange: `client_first`, then `client_final`.
pub struct ScramExchange {
    state: State,
}

/// Where the exchange stands; every step moves it on, a failed step ends it.
enum State {
    /// Waiting for client-first-message.
    Initial {
        secret: ScramSecret,
        doomed: bool,
        binding: ChannelBinding,
    },
    /// server-first-message sent; waiting for client-final-message.
    Challenged(Challenge),
    /// Finished with success: the proof revealed the client's ClientKey (SCRAM passthrough).
    Verified(ClientKey),
    /// Finished, with failure (or not yet started again); nothing more is accepted.
    Done,
}

/// What client-final-message is checked against.
struct Challenge {
    secret: ScramSecret,
    /// A mock exchange for an unknown user: runs every step, then fails.
    doomed: bool,
    /// What `c=` must decode to: the gs2 header, then (with PLUS) the binding data.
    cbind_input: Vec<u8>,
    /// PLUS was negotiated: a `c=` mismatch is a failed binding, not a malformed message.
    bound: bool,
    /// Client nonce followed by server nonce: what `r=` must repeat.
    nonce: String,
    /// `client-first-message-bare "," server-first-message ","`: the start of AuthMessage.
    auth_prefix: String,
}

impl ScramExchange {
    /// Starts an exchange for `user`; `secret` is `None` for an unknown user, which gets a mock
    /// exchange that fails at the final step like a wrong password. `binding` must be the one
    /// whose [`ChannelBinding::mechanisms`] were offered to this client.
    pub fn new(user: &str, secret: Option<ScramSecret>, binding: ChannelBinding) -> ScramExchange {
        let (secret, doomed) = match secret {
            Some(secret) => (secret, false),
            None => (mock_secret(user), true),
        };
        ScramExchange {
            state: State::Initial {
                secret,
                doomed,
                binding,
            },
        }
    }

    /// Takes the mechanism the client chose and client-first-message (both from
    /// SASLInitialResponse) and returns server-first-message.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::Initial {
            secret,
            doomed,
            binding,
        } = mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder {
                step: "client-first",
            });
        };
        let mechanism = Mechanism::choose(mechanism, binding)?;
        let first = ClientFirst::parse(as_message(data)?)?;
        let binding_data = mechanism.negotiate(first.flag)?;
        let nonce = format!("{}{}", first.nonce, server_nonce());
        let salt = STANDARD.encode(&secret.salt);
        let server_first = format!("r={nonce},s={salt},i={}", secret.iterations);
        self.state = State::Challenged(Challenge {
            auth_prefix: format!("{},{server_first},", first.bare),
            cbind_input: [
                first.gs2_header.as_bytes(),
                binding_data.as_deref().unwrap_or(&[]),
            ]
            .concat(),
            bound: binding_data.is_some(),
            nonce,
            secret,
            doomed,
        });
        Ok(server_first.into_bytes())
    }

    /// Takes client-final-message (the data of SASLResponse) and returns server-final-message
    /// (`v=…`), or [`AuthError::BadPassword`] when the proof is wrong or the user unknown, or
    /// [`AuthError::ChannelBinding`] when PLUS was negotiated and the client saw another
    /// certificate.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::Challenged(challenge) = mem::replace(&mut self.state, State::Done) else {
            return Err(AuthError::OutOfOrder {
                step: "client-final",
            });
        };
        let last = ClientFinal::parse(as_message(data)?)?;
        challenge.check(&last)?;
        let (server_final, client_key) = challenge.verify(&last)?;
        self.state = State::Verified(client_key);
        Ok(server_final)
    }

    /// The ClientKey the client's proof revealed, once [`ScramExchange::client_final`]
    /// succeeded: what the broker logs in to Postgres with when it holds only the user's
    /// SCRAM secret. `None` before that, and after a failure.
    pub fn client_key(&self) -> Option<&ClientKey> {
        match &self.state {
            State::Verified(key) => Some(key),
            _ => None,
        }
    }
}

/// Redacted: shows the step only.
impl std::fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.state {
            State::Initial { .. } => "Initial",
            State::Challenged(_) => "Challenged",
            State::Verified(_) => "Verified",
            State::Done => "Done",
        };
        f.debug_struct("ScramExchange")
            .field("state", &step)
            .finish()
    }
}

impl Challenge {
    /// The channel binding and nonce must repeat what the first round agreed. Checked before
    /// the proof, as Postgres does: the binding depends on the connection only, so its failure
    /// says nothing about the user or the password.
    fn check(&self, last: &ClientFinal<'_>) -> Result<(), AuthError> {
        let cbind_input = STANDARD
            .decode(last.channel_binding)
            .map_err(|_| malformed("channel binding is not base64"))?;
        // Constant time although the binding data is public: cheap, and no oracle to reason about.
        if !ct_eq(&cbind_input, &self.cbind_input) {
            return Err(if self.bound {
                AuthError::ChannelBinding {
                    what: "the client bound to another certificate",
                }
            } else {
                malformed("channel binding does not match the gs2 header")
            });
        }
        if last.nonce != self.nonce {
            return Err(malformed("nonce mismatch"));
        }
        Ok(())
    }

    /// Checks the client proof against StoredKey and, if it holds, signs with ServerKey;
    /// returns server-final-message and the ClientKey the proof revealed.
    fn verify(&self, last: &ClientFinal<'_>) -> Result<(Vec<u8>, ClientKey), AuthError> {
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
        let server_final = format!("v={}", STANDARD.encode(server_signature)).into_bytes();
        Ok((server_final, ClientKey::new(client_key)))
    }
}

/// The mechanism the client chose, checked against what was offered.
enum Mechanism {
    /// SCRAM-SHA-256; `plus_offered` says whether SCRAM-SHA-256-PLUS was listed before it.
    Plain { plus_offered: bool },
    /// SCRAM-SHA-256-PLUS, bound to this tls-server-end-point hash.
    Plus(Vec<u8>),
}

impl Mechanism {
    /// The client's choice, which must be one [`ChannelBinding::mechanisms`] offered.
    fn choose(name: &str, binding: ChannelBinding) -> Result<Mechanism, AuthError> {
        match (name, binding) {
            (SCRAM_MECHANISM, binding) => Ok(Mechanism::Plain {
                plus_offered: binding != ChannelBinding::None,
            }),
            (SCRAM_PLUS_MECHANISM, ChannelBinding::EndPoint(data)) => Ok(Mechanism::Plus(data)),
            (SCRAM_PLUS_MECHANISM, ChannelBinding::None) => Err(AuthError::ChannelBinding {
                what: "SCRAM-SHA-256-PLUS chosen but not offered",
            }),
            _ => Err(AuthError::Unsupported {
                what: "SASL mechanism",
            }),
        }
    }

    /// Checks the gs2 header's flag against the mechanism (Postgres's rules); returns the
    /// binding data `c=` must carry after the header, `None` without channel binding.
    fn negotiate(self, flag: Gs2Flag<'_>) -> Result<Option<Vec<u8>>, AuthError> {
        match (self, flag) {
            (Mechanism::Plain { .. }, Gs2Flag::Binds(_)) => Err(malformed(
                "channel binding requested (p=) with SCRAM-SHA-256",
            )),
            // The client could bind but believes the broker cannot, though PLUS was listed:
            // someone in between edited the list.
            (Mechanism::Plain { plus_offered: true }, Gs2Flag::ServerLacks) => {
                Err(AuthError::ChannelBinding {
                    what: "client saw no channel binding offered (downgrade)",
                })
            }
            (Mechanism::Plain { .. }, _) => Ok(None),
            (Mechanism::Plus(data), Gs2Flag::Binds(CB_NAME)) => Ok(Some(data)),
            (Mechanism::Plus(_), Gs2Flag::Binds(_)) => Err(AuthError::Unsupported {
                what: "channel binding type other than tls-server-end-point",
            }),
            (Mechanism::Plus(_), _) => Err(malformed("SCRAM-SHA-256-PLUS without p= header")),
        }
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
