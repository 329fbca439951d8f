//! tls-server-end-point hashes of certificates made by rcgen, checked against sha2 applied to
//! the DER by hand; hand-built DER for the algorithms rcgen cannot sign with; hostile input.
#![allow(clippy::unwrap_used)]

use super::*;
use rand::RngExt;
use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};

/// A throwaway 2048-bit RSA key (PKCS #8) for test certificates only: ring, rcgen's backend
/// here, signs with RSA but cannot generate RSA keys.
const TEST_RSA_KEY: &str = include_str!("test-rsa2048.pem");

/// A self-signed certificate for `localhost` signed by `key` (with its algorithm), as DER.
fn certificate(key: &KeyPair) -> Vec<u8> {
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.self_signed(key).unwrap().der().to_vec()
}

fn generated(alg: &'static SignatureAlgorithm) -> Vec<u8> {
    certificate(&KeyPair::generate_for(alg).unwrap())
}

fn rsa(alg: &'static SignatureAlgorithm) -> Vec<u8> {
    certificate(&KeyPair::from_pem_and_sign_algo(TEST_RSA_KEY, alg).unwrap())
}

#[test]
fn ecdsa_certificates_hash_with_their_signature_hash() {
    let p256 = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
    let hash = tls_server_end_point(&p256).unwrap();
    assert_eq!(hash, Sha256::digest(&p256).to_vec());
    assert_eq!(hash.len(), 32);

    let p384 = generated(&rcgen::PKCS_ECDSA_P384_SHA384);
    let hash = tls_server_end_point(&p384).unwrap();
    assert_eq!(hash, Sha384::digest(&p384).to_vec());
    assert_eq!(hash.len(), 48);
}

#[test]
fn rsa_certificates_hash_with_their_signature_hash() {
    let sha256 = rsa(&rcgen::PKCS_RSA_SHA256);
    assert_eq!(
        tls_server_end_point(&sha256).unwrap(),
        Sha256::digest(&sha256).to_vec()
    );
    let sha384 = rsa(&rcgen::PKCS_RSA_SHA384);
    assert_eq!(
        tls_server_end_point(&sha384).unwrap(),
        Sha384::digest(&sha384).to_vec()
    );
    let sha512 = rsa(&rcgen::PKCS_RSA_SHA512);
    assert_eq!(
        tls_server_end_point(&sha512).unwrap(),
        Sha512::digest(&sha512).to_vec()
    );
}

#[test]
fn ed25519_has_no_end_point_hash() {
    let cert = generated(&rcgen::PKCS_ED25519);
    let err = tls_server_end_point(&cert).unwrap_err();
    assert!(matches!(err, EndPointError::NoHash { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no tls-server-end-point hash for signature algorithm 1.3.101.112"
    );
}

/// One DER element with a short- or long-form length.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let header = match u8::try_from(len) {
        Ok(short) if short < 0x80 => vec![tag, short],
        _ => [&[tag, 0x82][..], &u16::try_from(len).unwrap().to_be_bytes()].concat(),
    };
    [header, contents.to_vec()].concat()
}

/// A structurally valid certificate whose signatureAlgorithm is `algorithm` (the contents of
/// its AlgorithmIdentifier); the signature is not checked by anyone here.
fn fake_certificate(algorithm: &[u8]) -> Vec<u8> {
    let tbs = tlv(SEQUENCE, &tlv(0x02, &[1]));
    let body = [
        tbs,
        tlv(SEQUENCE, algorithm),
        tlv(BIT_STRING, &[0, 1, 2, 3]),
    ]
    .concat();
    tlv(SEQUENCE, &body)
}

fn with_oid(oid: &[u8]) -> Vec<u8> {
    fake_certificate(&[tlv(OID, oid), tlv(0x05, &[])].concat())
}

/// RSASSA-PSS with `hash` as hashAlgorithm (`None`: left out, so SHA-1 by default).
fn pss(hash: Option<&[u8]>) -> Vec<u8> {
    let mgf = tlv(0xa1, &tlv(SEQUENCE, &[0x06, 0x01, 0x2a]));
    let params = match hash {
        Some(hash) => {
            let identifier = tlv(SEQUENCE, &[tlv(OID, hash), tlv(0x05, &[])].concat());
            [tlv(CONTEXT_0, &identifier), mgf].concat()
        }
        None => mgf,
    };
    fake_certificate(&[tlv(OID, RSASSA_PSS), tlv(SEQUENCE, &params)].concat())
}

#[test]
fn each_signature_algorithm_picks_its_hash() {
    let cases: [(Vec<u8>, Hash); 16] = [
        (with_oid(MD5_WITH_RSA), Hash::Sha256),
        (with_oid(SHA1_WITH_RSA), Hash::Sha256),
        (with_oid(ECDSA_WITH_SHA1), Hash::Sha256),
        (with_oid(SHA224_WITH_RSA), Hash::Sha224),
        (with_oid(ECDSA_WITH_SHA224), Hash::Sha224),
        (with_oid(SHA256_WITH_RSA), Hash::Sha256),
        (with_oid(ECDSA_WITH_SHA512), Hash::Sha512),
        (with_oid(SHA384_WITH_RSA), Hash::Sha384),
        (with_oid(SHA512_WITH_RSA), Hash::Sha512),
        (pss(Some(SHA256)), Hash::Sha256),
        (pss(Some(SHA384)), Hash::Sha384),
        (pss(Some(SHA512)), Hash::Sha512),
        (pss(Some(SHA224)), Hash::Sha224),
        (pss(Some(SHA1)), Hash::Sha256),
        (pss(None), Hash::Sha256),
        (
            fake_certificate(&[tlv(OID, RSASSA_PSS), tlv(SEQUENCE, &[])].concat()),
            Hash::Sha256,
        ),
    ];
    for (cert, hash) in cases {
        assert_eq!(signature_hash(&cert).unwrap(), hash, "{cert:02x?}");
        assert_eq!(tls_server_end_point(&cert).unwrap(), hash.digest(&cert));
    }
    assert_eq!(
        tls_server_end_point(&pss(Some(SHA384))).unwrap(),
        Sha384::digest(pss(Some(SHA384))).to_vec()
    );
}

#[test]
fn algorithms_without_a_usable_hash_are_refused() {
    let md5 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05];
    let cases = [
        (with_oid(&[0x2b, 0x65, 0x71]), "1.3.101.113"),
        (with_oid(&[0x2a, 0x03]), "1.2.3"),
        (pss(Some(&md5)), "1.2.840.113549.2.5"),
    ];
    for (cert, dotted) in cases {
        let err = tls_server_end_point(&cert).unwrap_err();
        assert!(err.to_string().ends_with(dotted), "{err}");
    }
    let no_params = fake_certificate(&tlv(OID, RSASSA_PSS));
    let err = tls_server_end_point(&no_params).unwrap_err();
    assert!(matches!(err, EndPointError::Malformed { .. }), "{err:?}");
}

#[test]
fn malformed_der_is_an_error() {
    let good = with_oid(SHA256_WITH_RSA);
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![SEQUENCE],
        vec![SEQUENCE, 0x80, 0, 0],
        vec![SEQUENCE, 0x85, 0, 0, 0, 0, 1, 0],
        vec![SEQUENCE, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![SEQUENCE, 0x81],
        vec![0x1f, 0x01, 0x00],
        [good.clone(), vec![0]].concat(),
        tlv(0x31, good.get(2..).unwrap()),
        fake_certificate(&[]),
        fake_certificate(&tlv(0x04, SHA256_WITH_RSA)),
        tlv(
            SEQUENCE,
            &[
                tlv(SEQUENCE, &[]),
                tlv(SEQUENCE, &tlv(OID, SHA256_WITH_RSA)),
            ]
            .concat(),
        ),
        tlv(SEQUENCE, &[good.get(2..).unwrap(), &[0x05, 0x00]].concat()),
    ];
    for input in bad {
        let err = tls_server_end_point(&input).unwrap_err();
        assert!(
            matches!(err, EndPointError::Malformed { .. }),
            "{input:02x?}: {err:?}"
        );
    }
}

#[test]
fn every_truncation_of_a_real_certificate_is_an_error() {
    let cert = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
    for len in 0..cert.len() {
        assert!(
            tls_server_end_point(cert.get(..len).unwrap()).is_err(),
            "{len}"
        );
    }
}

#[test]
fn corrupted_and_random_bytes_never_panic() {
    let cert = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut rng = rand::rng();
    for _ in 0..2000 {
        let mut corrupted = cert.clone();
        let at = rng.random_range(0..corrupted.len());
        if let Some(byte) = corrupted.get_mut(at) {
            *byte ^= 1 << rng.random_range(0..8);
        }
        let _ = tls_server_end_point(&corrupted);
        let len = rng.random_range(0..64);
        let random: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = tls_server_end_point(&random);
        let _ = tls_server_end_point(&[&[SEQUENCE, 0x82][..], &random].concat());
    }
}
