//! The tls-server-end-point channel binding data (RFC 5929 §4.1) of the broker's certificate:
//! the hash a SCRAM-SHA-256-PLUS client computes over the certificate it saw in the TLS
//! handshake, so a man-in-the-middle with another certificate cannot relay the login.
//!
//! The hash function is the one the certificate's signatureAlgorithm uses, except that MD5 and
//! SHA-1 become SHA-256; an algorithm without a hash of its own (Ed25519, Ed448) has no
//! tls-server-end-point data, and Postgres (through OpenSSL) cannot bind there either, so the
//! caller should offer plain SCRAM-SHA-256 only for such a certificate.
//!
//! Only the outer signatureAlgorithm is read, with a small bounds-checked DER reader rather
//! than a full X.509 parser: `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm
//! AlgorithmIdentifier, signatureValue BIT STRING }` (RFC 5280 §4.1). DER's rules on minimal
//! encodings are not enforced: the bytes are hashed as given, as the client hashes them.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Why a certificate yields no tls-server-end-point hash.
#[derive(Debug, thiserror::Error)]
pub enum EndPointError {
    /// The bytes are not a DER certificate (as far as the outer structure goes).
    #[error("certificate is not valid DER: {what}")]
    Malformed {
        /// Which part is wrong.
        what: &'static str,
    },
    /// The signature algorithm has no hash function for channel binding (Ed25519, Ed448), or
    /// is one the broker does not know.
    #[error("no tls-server-end-point hash for signature algorithm {}", dotted(.oid))]
    NoHash {
        /// The algorithm's OID (DER contents), shown dotted.
        oid: Vec<u8>,
    },
}

/// The tls-server-end-point channel binding data of a DER certificate: the hash for
/// `auth::ChannelBinding::EndPoint`.
pub fn tls_server_end_point(cert_der: &[u8]) -> Result<Vec<u8>, EndPointError> {
    Ok(signature_hash(cert_der)?.digest(cert_der))
}

/// A hash function channel binding may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha224 => Sha224::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

pub(super) const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
/// `[0] EXPLICIT`, the hashAlgorithm field of RSASSA-PSS-params.
pub(super) const CONTEXT_0: u8 = 0xa0;

/// DER contents of the signature algorithm OIDs: PKCS #1 (RFC 8017) and ECDSA (RFC 5758).
const MD5_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
const SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const SHA224_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e];
const ECDSA_WITH_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const ECDSA_WITH_SHA224: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01];
const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_WITH_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ECDSA_WITH_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

/// DER contents of the hash OIDs that RSASSA-PSS names (RFC 8017 appendix B.1).
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const SHA224: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04];

/// The hash to use for a certificate: that of its outer signatureAlgorithm.
fn signature_hash(cert: &[u8]) -> Result<Hash, EndPointError> {
    let (certificate, trailing) = expect(cert, SEQUENCE, "Certificate is not a SEQUENCE")?;
    if !trailing.is_empty() {
        return Err(malformed("data after the certificate"));
    }
    let (_, rest) = expect(certificate, SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let (algorithm, rest) = expect(rest, SEQUENCE, "signatureAlgorithm is not a SEQUENCE")?;
    let (_, rest) = expect(rest, BIT_STRING, "signatureValue is not a BIT STRING")?;
    if !rest.is_empty() {
        return Err(malformed("data after the signature"));
    }
    let (oid, parameters) = expect(algorithm, OID, "signatureAlgorithm has no OID")?;
    match oid {
        // RFC 5929 §4.1: MD5 and SHA-1 are replaced by SHA-256.
        MD5_WITH_RSA | SHA1_WITH_RSA | ECDSA_WITH_SHA1 => Ok(Hash::Sha256),
        SHA224_WITH_RSA | ECDSA_WITH_SHA224 => Ok(Hash::Sha224),
        SHA256_WITH_RSA | ECDSA_WITH_SHA256 => Ok(Hash::Sha256),
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => Ok(Hash::Sha384),
        SHA512_WITH_RSA | ECDSA_WITH_SHA512 => Ok(Hash::Sha512),
        RSASSA_PSS => pss_hash(parameters),
        _ => Err(EndPointError::NoHash { oid: oid.to_vec() }),
    }
}

/// The hashAlgorithm of RSASSA-PSS-params (RFC 4055 §3.1): `SEQUENCE { hashAlgorithm [0]
/// AlgorithmIdentifier DEFAULT sha1, … }`; the later fields do not matter here.
fn pss_hash(parameters: &[u8]) -> Result<Hash, EndPointError> {
    let (params, _) = expect(parameters, SEQUENCE, "RSASSA-PSS without parameters")?;
    let hash_oid = match read(params)? {
        Some(element) if element.tag == CONTEXT_0 => {
            let (identifier, _) = expect(element.contents, SEQUENCE, "bad PSS hashAlgorithm")?;
            expect(identifier, OID, "PSS hashAlgorithm has no OID")?.0
        }
        // hashAlgorithm left out: the default, SHA-1.
        _ => SHA1,
    };
    match hash_oid {
        SHA1 | SHA256 => Ok(Hash::Sha256),
        SHA224 => Ok(Hash::Sha224),
        SHA384 => Ok(Hash::Sha384),
        SHA512 => Ok(Hash::Sha512),
        _ => Err(EndPointError::NoHash {
            oid: hash_oid.to_vec(),
        }),
    }
}

/// Reads the element at the front of `input`, which must have tag `tag`: returns its contents
/// and the bytes after it.
pub(super) fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), EndPointError> {
    match read(input)? {
        Some(element) if element.tag == tag => Ok((element.contents, element.rest)),
        _ => Err(malformed(what)),
    }
}

/// One DER element (tag, length, contents) and the bytes that follow it.
pub(super) struct Element<'a> {
    pub(super) tag: u8,
    pub(super) contents: &'a [u8],
    pub(super) rest: &'a [u8],
}

/// Reads one DER element from the front of `input`; `None` at the end of the input.
pub(super) fn read(input: &[u8]) -> Result<Option<Element<'_>>, EndPointError> {
    let Some((&tag, rest)) = input.split_first() else {
        return Ok(None);
    };
    // Multi-byte tags (number 31 and up) never occur in the fields read here.
    if tag & 0x1f == 0x1f {
        return Err(malformed("multi-byte tag"));
    }
    let (&first, rest) = rest.split_first().ok_or(malformed("truncated length"))?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        // Long form with up to four length bytes; 0x80 (indefinite) is not DER.
        0x81..=0x84 => {
            let (bytes, rest) = rest
                .split_at_checked(usize::from(first & 0x7f))
                .ok_or(malformed("truncated length"))?;
            let len = bytes.iter().fold(0u32, |len, &b| (len << 8) | u32::from(b));
            let len = usize::try_from(len).map_err(|_| malformed("length too large"))?;
            (len, rest)
        }
        _ => return Err(malformed("indefinite or oversized length")),
    };
    let (contents, rest) = rest
        .split_at_checked(len)
        .ok_or(malformed("element runs past the end"))?;
    Ok(Some(Element {
        tag,
        contents,
        rest,
    }))
}

/// An OID's DER contents in dotted form (`1.3.101.112`), for error messages.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u128> = Vec::new();
    let mut arc: u128 = 0;
    for &b in oid {
        // Arcs past 128 bits do not occur in real OIDs; saturate rather than fail.
        arc = arc.saturating_mul(128).saturating_add(u128::from(b & 0x7f));
        if b & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        }
    }
    let mut parts = Vec::with_capacity(arcs.len() + 1);
    if let Some((&first, rest)) = arcs.split_first() {
        // The first subidentifier packs the first two arcs: 40 * a + b, a in 0..=2.
        let top = (first / 40).min(2);
        parts.push(top.to_string());
        parts.push((first - top * 40).to_string());
        parts.extend(rest.iter().map(u128::to_string));
    }
    parts.join(".")
}

pub(super) fn malformed(what: &'static str) -> EndPointError {
    EndPointError::Malformed { what }
}

#[cfg(test)]
mod tests;
