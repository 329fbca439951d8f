//! SCRAM-SHA-256-PLUS: full exchanges with postgres-protocol's client bound with
//! tls-server-end-point, Postgres's negotiation rules, and the checks of `c=`.

use super::{assert_malformed, challenged_with, exchange};
use crate::auth::scram::*;
use crate::auth::scram_secret;
use crate::tls::tls_server_end_point;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use postgres_protocol::authentication::sasl;
use rand::RngExt;

/// The tls-server-end-point hash of a freshly made certificate, as the TLS layer will pass it.
fn end_point() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    tls_server_end_point(cert.der()).unwrap()
}

/// The secret of user "app" with password "app".
fn secret() -> Option<ScramSecret> {
    Some(ScramSecret::parse(&scram_secret("app", 4096)).unwrap())
}

/// A full exchange for "app" on a connection offering `offered`.
fn login(
    secret: Option<ScramSecret>,
    offered: &ChannelBinding,
    mechanism: &str,
    password: &str,
    cb: sasl::ChannelBinding,
) -> Result<(), AuthError> {
    let server = ScramExchange::new("app", secret, offered.clone());
    exchange(server, mechanism, password, cb)
}

fn is_binding_error(result: &Result<(), AuthError>) -> bool {
    matches!(result, Err(AuthError::ChannelBinding { .. }))
}

#[test]
fn plus_is_offered_first_when_there_is_a_binding() {
    assert_eq!(ChannelBinding::None.mechanisms(), [SCRAM_MECHANISM]);
    assert_eq!(
        ChannelBinding::EndPoint(end_point()).mechanisms(),
        [SCRAM_PLUS_MECHANISM, SCRAM_MECHANISM]
    );
    assert_eq!(SCRAM_PLUS_MECHANISM, "SCRAM-SHA-256-PLUS");
}

#[test]
fn plus_with_the_right_binding_logs_in() {
    let hash = end_point();
    let offered = ChannelBinding::EndPoint(hash.clone());
    let cb = sasl::ChannelBinding::tls_server_end_point(hash);
    login(secret(), &offered, SCRAM_PLUS_MECHANISM, "app", cb).unwrap();
}

#[test]
fn plus_with_a_wrong_binding_fails_even_with_the_right_password() {
    let offered = ChannelBinding::EndPoint(end_point());
    // Another certificate of the same kind, and a hash of another length (SHA-384).
    for wrong in [end_point(), vec![7; 48], vec![]] {
        let cb = sasl::ChannelBinding::tls_server_end_point(wrong);
        let result = login(secret(), &offered, SCRAM_PLUS_MECHANISM, "app", cb);
        assert!(is_binding_error(&result), "{result:?}");
    }
}

#[test]
fn plain_without_binding_logs_in_whether_or_not_plus_is_offered() {
    for offered in [ChannelBinding::None, ChannelBinding::EndPoint(end_point())] {
        let cb = sasl::ChannelBinding::unsupported();
        login(secret(), &offered, SCRAM_MECHANISM, "app", cb).unwrap();
    }
}

#[test]
fn plain_with_y_is_a_downgrade_only_when_plus_was_offered() {
    let offered = ChannelBinding::EndPoint(end_point());
    let cb = sasl::ChannelBinding::unrequested();
    let result = login(secret(), &offered, SCRAM_MECHANISM, "app", cb);
    assert!(is_binding_error(&result), "{result:?}");

    let cb = sasl::ChannelBinding::unrequested();
    login(secret(), &ChannelBinding::None, SCRAM_MECHANISM, "app", cb).unwrap();
}

#[test]
fn plus_is_refused_when_not_offered() {
    let cb = sasl::ChannelBinding::tls_server_end_point(end_point());
    let result = login(
        secret(),
        &ChannelBinding::None,
        SCRAM_PLUS_MECHANISM,
        "app",
        cb,
    );
    assert!(is_binding_error(&result), "{result:?}");
}

#[test]
fn unknown_user_via_plus_fails_like_a_wrong_password() {
    let hash = end_point();
    let offered = ChannelBinding::EndPoint(hash.clone());
    let cb = || sasl::ChannelBinding::tls_server_end_point(hash.clone());
    let unknown = login(None, &offered, SCRAM_PLUS_MECHANISM, "app", cb());
    let wrong = login(secret(), &offered, SCRAM_PLUS_MECHANISM, "apP", cb());
    assert!(
        matches!(unknown, Err(AuthError::BadPassword)),
        "{unknown:?}"
    );
    assert!(matches!(wrong, Err(AuthError::BadPassword)), "{wrong:?}");

    // A wrong binding is refused alike for known and unknown users: it says nothing of either.
    let cb = sasl::ChannelBinding::tls_server_end_point(end_point());
    let unknown = login(None, &offered, SCRAM_PLUS_MECHANISM, "app", cb);
    assert!(is_binding_error(&unknown), "{unknown:?}");
}

#[test]
fn gs2_header_must_agree_with_the_mechanism() {
    let offered = ChannelBinding::EndPoint(end_point());
    let first = |mechanism: &str, message: &str| {
        ScramExchange::new("app", secret(), offered.clone())
            .client_first(mechanism, message.as_bytes())
    };
    for message in ["n,,n=,r=a", "y,,n=,r=a", "p=,,n=,r=a", "p=a b,,n=,r=a"] {
        assert_malformed(first(SCRAM_PLUS_MECHANISM, message), message);
    }
    let p = "p=tls-server-end-point,,n=,r=a";
    assert_malformed(first(SCRAM_MECHANISM, p), "p= with the plain mechanism");
    for (mechanism, message) in [
        (SCRAM_PLUS_MECHANISM, "p=tls-unique,,n=,r=a"),
        (SCRAM_PLUS_MECHANISM, "p=tls-server-end-point,a=x,n=,r=a"),
        ("SCRAM-SHA-1", "n,,n=,r=a"),
        ("scram-sha-256", "n,,n=,r=a"),
    ] {
        let result = first(mechanism, message);
        assert!(
            matches!(result, Err(AuthError::Unsupported { .. })),
            "{mechanism} {message}: {result:?}"
        );
    }
    assert!(first(SCRAM_PLUS_MECHANISM, p).is_ok());
}

#[test]
fn client_final_must_carry_the_header_and_the_binding() {
    let hash = end_point();
    let header = "p=tls-server-end-point,,";
    let proof = STANDARD.encode([7u8; 32]);
    let c = |data: &[u8]| STANDARD.encode([header.as_bytes(), data].concat());
    let final_with = |cbind: &str| {
        let offered = ChannelBinding::EndPoint(hash.clone());
        let (mut server, nonce) = challenged_with(offered, SCRAM_PLUS_MECHANISM, header);
        server.client_final(format!("c={cbind},r={nonce},p={proof}").as_bytes())
    };
    // The binding holds; only the (made-up) proof is wrong.
    let result = final_with(&c(&hash));
    assert!(matches!(result, Err(AuthError::BadPassword)), "{result:?}");

    let mut flipped = hash.clone();
    if let Some(byte) = flipped.last_mut() {
        *byte ^= 1;
    }
    for cbind in [
        c(&flipped),
        c(&[]),
        c(&[&hash[..], b"x"].concat()),
        "biws".to_owned(),
        STANDARD.encode(&hash),
    ] {
        let result = final_with(&cbind);
        assert!(
            matches!(result, Err(AuthError::ChannelBinding { .. })),
            "{cbind}: {result:?}"
        );
    }
    assert_malformed(final_with("!!"), "not base64");
}

#[test]
fn binding_data_stays_out_of_debug_and_errors() {
    let hash = vec![0xab; 32];
    let server = ScramExchange::new("app", secret(), ChannelBinding::EndPoint(hash));
    assert_eq!(
        format!("{server:?}"),
        r#"ScramExchange { state: "Initial" }"#
    );
    let err = AuthError::ChannelBinding { what: "x" };
    assert_eq!(err.to_string(), "SCRAM channel binding failed: x");
}

#[test]
fn random_bytes_never_panic_with_plus() {
    let mut rng = rand::rng();
    let hash = vec![1; 32];
    let offered = ChannelBinding::EndPoint(hash.clone());
    let header = "p=tls-server-end-point,,";
    let cbind = STANDARD.encode([header.as_bytes(), &hash].concat());
    for _ in 0..2000 {
        let len = rng.random_range(0..64);
        let data: Vec<u8> = (0..len).map(|_| rng.random_range(0x20..0x80)).collect();
        let first = [header.as_bytes(), b"n=,r=", &data].concat();
        for message in [&data, &first] {
            let mut server = ScramExchange::new("app", None, offered.clone());
            let _ = server.client_first(SCRAM_PLUS_MECHANISM, message);
        }
        let (mut server, nonce) = challenged_with(offered.clone(), SCRAM_PLUS_MECHANISM, header);
        let last = [format!("c={cbind},r={nonce},").as_bytes(), &data].concat();
        let _ = server.client_final(&last);
    }
}
