//! Parsing of the two client messages of a SCRAM exchange (RFC 5802 §7): client-first-message
//! (gs2 header, then the bare part) and client-final-message. Only syntax is checked here; what
//! the values must be is the exchange's business.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{malformed, AuthError, MAX_SCRAM_MESSAGE_LEN};

/// The parts of client-first-message the exchange needs.
pub(super) struct ClientFirst<'a> {
    pub(super) gs2_header: &'a str,
    pub(super) bare: &'a str,
    pub(super) nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    /// `gs2-header client-first-message-bare`, e.g. `n,,n=,r=abc`.
    pub(super) fn parse(msg: &'a str) -> Result<ClientFirst<'a>, AuthError> {
        match msg.as_bytes() {
            [b'n' | b'y', b',', b',', ..] => {}
            [b'n' | b'y', b',', b'a', b'=', ..] => {
                return Err(AuthError::Unsupported {
                    what: "SCRAM authorization identity",
                })
            }
            [b'p', ..] => return Err(malformed("channel binding requested (p=)")),
            _ => return Err(malformed("bad gs2 header")),
        }
        let (Some(gs2_header), Some(bare)) = (msg.get(..3), msg.get(3..)) else {
            return Err(malformed("bad gs2 header"));
        };
        let nonce = parse_bare(bare)?;
        Ok(ClientFirst {
            gs2_header,
            bare,
            nonce,
        })
    }
}

/// `n=<user>,r=<nonce>[,<extension>]*`: returns the nonce. The user name is ignored.
fn parse_bare(bare: &str) -> Result<&str, AuthError> {
    let mut parts = bare.split(',');
    let user = parts.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(AuthError::Unsupported {
            what: "mandatory SCRAM extension",
        });
    }
    attribute(Some(user), 'n').ok_or(malformed("missing user name (n=)"))?;
    let nonce = attribute(parts.next(), 'r').ok_or(malformed("missing nonce (r=)"))?;
    if nonce.is_empty() || !nonce.bytes().all(|b| matches!(b, 0x21..=0x7e)) {
        return Err(malformed("nonce is not printable"));
    }
    extensions(parts)?;
    Ok(nonce)
}

/// The parts of client-final-message the exchange needs.
pub(super) struct ClientFinal<'a> {
    pub(super) channel_binding: &'a str,
    pub(super) nonce: &'a str,
    /// client-final-message-without-proof: the end of AuthMessage.
    pub(super) without_proof: &'a str,
    pub(super) proof: [u8; 32],
}

impl<'a> ClientFinal<'a> {
    /// `c=<cbind>,r=<nonce>[,<extension>]*,p=<proof>`.
    pub(super) fn parse(msg: &'a str) -> Result<ClientFinal<'a>, AuthError> {
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(malformed("missing proof"))?;
        let proof = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(malformed("proof is not 32 bytes of base64"))?;
        let mut parts = without_proof.split(',');
        let channel_binding =
            attribute(parts.next(), 'c').ok_or(malformed("missing channel binding (c=)"))?;
        let nonce = attribute(parts.next(), 'r').ok_or(malformed("missing nonce (r=)"))?;
        extensions(parts)?;
        Ok(ClientFinal {
            channel_binding,
            nonce,
            without_proof,
            proof,
        })
    }
}

/// The value of `<name>=<value>`, if `part` is that attribute.
fn attribute(part: Option<&str>, name: char) -> Option<&str> {
    part?.strip_prefix(name)?.strip_prefix('=')
}

/// Optional extensions are ignored, as Postgres does, but each must look like `x=…`.
fn extensions<'a>(mut parts: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    let well_formed = |p: &str| matches!(p.as_bytes(), [b'a'..=b'z' | b'A'..=b'Z', b'=', ..]);
    if parts.all(well_formed) {
        Ok(())
    } else {
        Err(malformed("bad attribute"))
    }
}

/// A client message as text, within [`MAX_SCRAM_MESSAGE_LEN`].
pub(super) fn as_message(data: &[u8]) -> Result<&str, AuthError> {
    if data.len() > MAX_SCRAM_MESSAGE_LEN {
        return Err(malformed("SCRAM message too long"));
    }
    std::str::from_utf8(data).map_err(|_| malformed("SCRAM message is not UTF-8"))
}
