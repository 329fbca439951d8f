//! The SASL part of a server login: SCRAM-SHA-256 with the configured plaintext password
//! (postgres-protocol's client), or with the ClientKey a client's own SCRAM login recovered
//! when the config holds only the user's SCRAM secret (SCRAM passthrough, as PgBouncer does).
//! Neither binds to the TLS channel towards the server (`n,,`).
//!
//! <https://www.postgresql.org/docs/current/sasl-authentication.html>

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{AuthenticationSaslBody, Message};
use postgres_protocol::message::frontend;

use super::{refused, LoginTarget};
use crate::auth::{PassthroughError, ScramKeyClient, Secret, SCRAM_MECHANISM};
use crate::backend::{LoginError, ServerConn, ServerError};
use crate::protocol::errcodes::INVALID_PASSWORD;
use crate::protocol::FrameError;

/// The SCRAM client a login runs: with the password, or with a recovered ClientKey.
enum Client {
    Password(Box<ScramSha256>),
    Key(ScramKeyClient),
}

impl Client {
    /// The client `target`'s secret calls for; a SCRAM secret needs a ClientKey that a
    /// client's SCRAM login recovered since the broker started.
    fn for_target(target: &LoginTarget) -> Result<Client, LoginError> {
        match &target.secret {
            Secret::Plain(password) => Ok(Client::Password(Box::new(ScramSha256::new(
                password.as_bytes(),
                ChannelBinding::unsupported(),
            )))),
            Secret::Scram(secret) => match target.client_keys.get(&target.user, secret) {
                Some(key) => Ok(Client::Key(ScramKeyClient::new(key, secret.clone()))),
                None => Err(LoginError::NoClientKey {
                    user: target.user.clone(),
                }),
            },
            Secret::Md5(_) => Err(LoginError::Unsupported {
                method: "SCRAM-SHA-256 with an md5 secret",
            }),
        }
    }

    /// client-first-message.
    fn first(&mut self) -> Result<Vec<u8>, LoginError> {
        match self {
            Client::Password(client) => Ok(client.message().to_vec()),
            Client::Key(client) => Ok(client.client_first()?),
        }
    }

    /// client-final-message, in answer to server-first-message.
    fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, LoginError> {
        match self {
            Client::Password(client) => {
                client.update(server_first).map_err(ServerError::Io)?;
                Ok(client.message().to_vec())
            }
            Client::Key(client) => Ok(client.server_first(server_first)?),
        }
    }

    /// Checks server-final-message: the server knew the verifier.
    fn finish(&mut self, server_final: &[u8]) -> Result<(), LoginError> {
        match self {
            Client::Password(client) => Ok(client.finish(server_final).map_err(ServerError::Io)?),
            Client::Key(client) => Ok(client.server_final(server_final)?),
        }
    }
}

impl ServerConn {
    /// Runs the SCRAM-SHA-256 exchange the server asked for, up to and including its
    /// server-final-message; AuthenticationOk follows in the caller. Not cancel-safe (a
    /// login is dropped whole).
    pub(super) async fn sasl(
        &mut self,
        target: &LoginTarget,
        offer: &AuthenticationSaslBody,
    ) -> Result<(), LoginError> {
        let offered = offer
            .mechanisms()
            .any(|m| Ok(m == SCRAM_MECHANISM))
            .map_err(ServerError::Io)?;
        if !offered {
            return Err(LoginError::Unsupported {
                method: "SASL without SCRAM-SHA-256",
            });
        }
        let mut client = Client::for_target(target)?;
        let mut out = BytesMut::new();
        frontend::sasl_initial_response(SCRAM_MECHANISM, &client.first()?, &mut out)
            .map_err(ServerError::Io)?;
        self.send(&out).await?;
        let server_first = self.sasl_reply(&client, Step::Continue).await?;
        out.clear();
        frontend::sasl_response(&client.last(&server_first)?, &mut out).map_err(ServerError::Io)?;
        self.send(&out).await?;
        let server_final = self.sasl_reply(&client, Step::Final).await?;
        client.finish(&server_final)
    }

    /// Reads the server's next SASL message, which must be `step`. A refused password during
    /// a key login means the configured secret is not the server's verifier.
    async fn sasl_reply(&mut self, client: &Client, step: Step) -> Result<Vec<u8>, LoginError> {
        match (self.read_message().await?, step) {
            (Message::AuthenticationSaslContinue(body), Step::Continue) => Ok(body.data().to_vec()),
            (Message::AuthenticationSaslFinal(body), Step::Final) => Ok(body.data().to_vec()),
            (Message::ErrorResponse(body), _) => match (refused(&body), client) {
                (LoginError::Refused { code, .. }, Client::Key(_)) if code == INVALID_PASSWORD => {
                    Err(PassthroughError::Mismatch {
                        what: "the server refused the proof",
                    }
                    .into())
                }
                (error, _) => Err(error),
            },
            _ => Err(ServerError::Protocol(FrameError::Malformed {
                what: "unexpected message during SASL authentication",
            })
            .into()),
        }
    }
}

/// The SASL message the server owes next.
#[derive(Clone, Copy)]
enum Step {
    Continue,
    Final,
}
