#![allow(clippy::unwrap_used)]

use super::*;
use crate::auth::{AuthError, ChannelBinding, ScramExchange, SCRAM_MECHANISM};
use postgres_protocol::authentication::sasl;

const ITERATIONS: u32 = 16;

fn secret(password: &str, salt: &[u8]) -> ScramSecret {
    ScramSecret::derive(password, salt, ITERATIONS)
}

/// Runs a key login against our own server-side exchange holding `server_secret`; returns
/// the client's result at the step that failed, or the server's.
fn log_in(
    key: ClientKey,
    configured: &ScramSecret,
    server_secret: &ScramSecret,
) -> Result<Result<(), PassthroughError>, AuthError> {
    let mut client = ScramKeyClient::new(key, configured.clone());
    let mut server = ScramExchange::new("app", Some(server_secret.clone()), ChannelBinding::None);
    let server_first = server.client_first(SCRAM_MECHANISM, &client.client_first().unwrap())?;
    let client_final = match client.server_first(&server_first) {
        Ok(message) => message,
        Err(e) => return Ok(Err(e)),
    };
    let server_final = server.client_final(&client_final)?;
    Ok(client.server_final(&server_final))
}

#[test]
fn a_key_logs_in_where_the_password_would() {
    let secret = secret("app", b"some salt");
    let key = ClientKey::derive("app", &secret);
    log_in(key, &secret, &secret).unwrap().unwrap();
}

#[test]
fn the_key_a_password_login_reveals_logs_in_again() {
    let secret = secret("app", b"some salt");
    let mut server = ScramExchange::new("app", Some(secret.clone()), ChannelBinding::None);
    let mut client = sasl::ScramSha256::new(b"app", sasl::ChannelBinding::unsupported());
    assert!(server.client_key().is_none());
    let first = server
        .client_first(SCRAM_MECHANISM, client.message())
        .unwrap();
    client.update(&first).unwrap();
    assert!(server.client_key().is_none());
    let last = server.client_final(client.message()).unwrap();
    client.finish(&last).unwrap();
    let key = server.client_key().unwrap().clone();
    assert!(key.fits(&secret));
    assert_eq!(
        format!("{server:?}"),
        "ScramExchange { state: \"Verified\" }"
    );
    log_in(key, &secret, &secret).unwrap().unwrap();
}

#[test]
fn a_failed_proof_reveals_no_key() {
    let secret = secret("app", b"some salt");
    let mut server = ScramExchange::new("app", Some(secret), ChannelBinding::None);
    let mut client = sasl::ScramSha256::new(b"bad", sasl::ChannelBinding::unsupported());
    let first = server
        .client_first(SCRAM_MECHANISM, client.message())
        .unwrap();
    client.update(&first).unwrap();
    assert!(server.client_final(client.message()).is_err());
    assert!(server.client_key().is_none());
}

#[test]
fn another_verifier_is_a_mismatch() {
    let configured = secret("app", b"config salt");
    let key = ClientKey::derive("app", &configured);
    // Same password, another salt: refused before any proof is sent.
    let other_salt = secret("app", b"server salt");
    let err = log_in(key.clone(), &configured, &other_salt).unwrap();
    assert!(
        matches!(err, Err(PassthroughError::Mismatch { .. })),
        "{err:?}"
    );
    // Same salt, other iterations.
    let other_count = ScramSecret::derive("app", b"config salt", ITERATIONS + 1);
    let err = log_in(key.clone(), &configured, &other_count).unwrap();
    assert!(
        matches!(err, Err(PassthroughError::Mismatch { .. })),
        "{err:?}"
    );
    // Same salt and count, another password: the server refuses the proof.
    let other_password = secret("other", b"config salt");
    let err = log_in(key, &configured, &other_password).unwrap_err();
    assert!(matches!(err, AuthError::BadPassword), "{err:?}");
}

#[test]
fn a_server_signing_with_another_key_is_refused() {
    let secret = secret("app", b"some salt");
    let mut client = ScramKeyClient::new(ClientKey::derive("app", &secret), secret.clone());
    let mut server = ScramExchange::new("app", Some(secret.clone()), ChannelBinding::None);
    let first = server
        .client_first(SCRAM_MECHANISM, &client.client_first().unwrap())
        .unwrap();
    let last = client.server_first(&first).unwrap();
    server.client_final(&last).unwrap();
    let forged = format!("v={}", STANDARD.encode([7u8; 32]));
    let err = client.server_final(forged.as_bytes()).unwrap_err();
    assert!(matches!(err, PassthroughError::Mismatch { .. }), "{err:?}");
}

/// A client that sent client-first with a known nonce, as if the server's reply came next.
fn started(secret: &ScramSecret) -> (ScramKeyClient, String) {
    let mut client = ScramKeyClient::new(ClientKey::derive("app", secret), secret.clone());
    let first = String::from_utf8(client.client_first().unwrap()).unwrap();
    let nonce = first.strip_prefix("n,,n=,r=").unwrap().to_owned();
    (client, nonce)
}

#[test]
fn server_first_is_bounds_checked() {
    let secret = secret("app", b"some salt");
    let salt = STANDARD.encode(&secret.salt);
    let i = ITERATIONS;
    let cases = |nonce: &str| {
        vec![
            format!("r={nonce}XY,s={salt}"),
            format!("r={nonce}XY,i={i},s={salt}"),
            format!("r=someoneelse,s={salt},i={i}"),
            format!("r={nonce},s={salt},i={i}"),
            format!("r={nonce}X Y,s={salt},i={i}"),
            format!("r={nonce}XY,s=!!!,i={i}"),
            format!("r={nonce}XY,s={salt},i=-1"),
            format!("m=ext,r={nonce}XY,s={salt},i={i}"),
            format!(
                "r={nonce}XY,s={salt},i={i},{}",
                "x".repeat(MAX_SCRAM_MESSAGE_LEN)
            ),
        ]
    };
    for case in cases("NONCE") {
        let (mut client, nonce) = started(&secret);
        let message = case.replace("NONCE", &nonce);
        let err = client.server_first(message.as_bytes()).unwrap_err();
        assert!(
            matches!(err, PassthroughError::Malformed { .. }),
            "{message}: {err:?}"
        );
        assert!(matches!(
            client.server_final(b"v="),
            Err(PassthroughError::OutOfOrder { .. })
        ));
    }
    let (mut client, _) = started(&secret);
    let err = client.server_first(&[0xff, 0xfe]).unwrap_err();
    assert!(matches!(err, PassthroughError::Malformed { .. }));
}

#[test]
fn server_final_is_checked_and_steps_keep_their_order() {
    let secret = secret("app", b"some salt");
    let (mut client, nonce) = started(&secret);
    let salt = STANDARD.encode(&secret.salt);
    let first = format!("r={nonce}XY,s={salt},i={ITERATIONS}");
    let last = String::from_utf8(client.server_first(first.as_bytes()).unwrap()).unwrap();
    assert!(
        last.starts_with(&format!("c=biws,r={nonce}XY,p=")),
        "{last}"
    );
    assert!(matches!(
        client.client_first(),
        Err(PassthroughError::OutOfOrder { .. })
    ));
    for bad in [&b"e=invalid-proof"[..], b"x=1", b"v=!!"] {
        let (mut client, nonce) = started(&secret);
        let first = format!("r={nonce}XY,s={salt},i={ITERATIONS}");
        client.server_first(first.as_bytes()).unwrap();
        assert!(client.server_final(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn debug_and_errors_show_no_key() {
    let secret = secret("app", b"some salt");
    let key = ClientKey::derive("app", &secret);
    let encoded = STANDARD.encode(key.bytes());
    let client = ScramKeyClient::new(key, secret);
    let text = format!("{client:?} {}", mismatch("salt"));
    assert_eq!(
        format!("{client:?}"),
        "ScramKeyClient { state: \"Initial\" }"
    );
    assert!(!text.contains(&encoded));
}
