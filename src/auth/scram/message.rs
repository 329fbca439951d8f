//! Parsing of the two client messages of a SCRAM exchange (RFC 5802 §7): client-first-message
//! (gs2 header, then the bare part) and client-final-message. Only syntax is checked here; what
//! the values must be is the exchange's business.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{malformed, AuthError, MAX_SCRAM_MESSAGE_LEN};

/// The gs2-cbind-flag of client-first-message (RFC 5802 §7).
#[derive(Clone, Copy)]
pub(super) enum Gs2Flag<'a> {
    /// `n`: the client does not do channel binding.
    ClientLacks,
    /// `y`: the client does, but believes the server does not.
    ServerLacks,
    /// `p=<cb-name>`: the client binds with this channel binding type.
    Binds(&'a str),
}

impl<'a> Gs2Flag<'a> {
    /// `n`, `y` or `p=<cb-name>`, a cb-name being letters, digits, `.` and `-` (RFC 5802 §7).
    fn parse(flag: &'a str) -> Result<Gs2Flag<'a>, AuthError> {
        let cb_name = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        match flag {
            "n" => Ok(Gs2Flag::ClientLacks),
            "y" => Ok(Gs2Flag::ServerLacks),
            _ => match flag.strip_prefix("p=") {
                Some(name) if cb_name(name) => Ok(Gs2Flag::Binds(name)),
                _ => Err(malformed("bad gs2 header")),
            },
        }
    }
}

/// The parts of client-first-message the exchange needs.
pub(super) struct ClientFirst<'a> {
    pub(super) flag: Gs2Flag<'a>,
    pub(super) gs2_header: &'a str,
    pub(super) bare: &'a str,
    pub(super) nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    /// `gs2-header client-first-message-bare`, e.g. `n,,n=,r=abc`.
    pub(super) fn parse(msg: &'a str) -> Result<ClientFirst<'a>, AuthError> {
        let mut parts = msg.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("bad gs2 header"));
        };
        let flag = Gs2Flag::parse(flag)?;
        if authzid.starts_with("a=") {
            return Err(AuthError::Unsupported {
                what: "SCRAM authorization identity",
            });
        }
        if !authzid.is_empty() {
            return Err(malformed("bad gs2 header"));
        }
        // `bare` is the tail of `msg`, so this is everything up to the second comma.
        let gs2_header = msg.strip_suffix(bare).ok_or(malformed("bad gs2 header"))?;
        let nonce = parse_bare(bare)?;
        Ok(ClientFirst {
            flag,
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
