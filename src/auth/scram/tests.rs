//! SCRAM exchanges against postgres-protocol's client, and hostile input.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::auth::scram_secret;
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use postgres_protocol::password::scram_sha_256;
use rand::RngExt;

mod plus;

/// A full exchange with postgres-protocol's client, which chooses `mechanism` and binds with
/// `cb`; the client checks the server signature.
fn exchange(
    mut server: ScramExchange,
    mechanism: &str,
    password: &str,
    cb: sasl::ChannelBinding,
) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), cb);
    let server_first = server.client_first(mechanism, client.message())?;
    client.update(&server_first).unwrap();
    let server_final = server.client_final(client.message())?;
    client.finish(&server_final).unwrap();
    Ok(())
}

/// A full SCRAM-SHA-256 exchange on a connection without channel binding.
fn login(
    secret: Option<ScramSecret>,
    password: &str,
    cb: sasl::ChannelBinding,
) -> Result<(), AuthError> {
    let server = ScramExchange::new("app", secret, ChannelBinding::None);
    exchange(server, SCRAM_MECHANISM, password, cb)
}

fn login_n(secret: &ScramSecret, password: &str) -> Result<(), AuthError> {
    login(
        Some(secret.clone()),
        password,
        sasl::ChannelBinding::unsupported(),
    )
}

/// An exchange that has answered a well-formed client-first; returns it and the full nonce.
fn challenged(gs2: &str) -> (ScramExchange, String) {
    challenged_with(ChannelBinding::None, SCRAM_MECHANISM, gs2)
}

/// [`challenged`] on a connection offering `binding`, the client having chosen `mechanism`.
fn challenged_with(binding: ChannelBinding, mechanism: &str, gs2: &str) -> (ScramExchange, String) {
    let secret = ScramSecret::derive("pw", b"salt", 1);
    let mut server = ScramExchange::new("app", Some(secret), binding);
    let first = server
        .client_first(mechanism, format!("{gs2}n=,r=abc").as_bytes())
        .unwrap();
    let first = String::from_utf8(first).unwrap();
    let nonce = first.strip_prefix("r=").unwrap().split(',').next().unwrap();
    (server, nonce.to_owned())
}

fn assert_malformed(result: Result<Vec<u8>, AuthError>, input: &str) {
    assert!(
        matches!(result, Err(AuthError::Malformed { .. })),
        "{input:?}: {result:?}"
    );
}

#[test]
fn plain_derived_secret_logs_in() {
    let secret = ScramSecret::derive("app", b"0123456789abcdef", 4096);
    login_n(&secret, "app").unwrap();
    login(Some(secret), "app", sasl::ChannelBinding::unrequested()).unwrap();
}

#[test]
fn parsed_secrets_log_in() {
    for stored in [
        scram_sha_256(b"app"),
        scram_secret("app", 4096),
        scram_secret("app", 1),
    ] {
        let secret = ScramSecret::parse(&stored).unwrap();
        login_n(&secret, "app").unwrap();
    }
}

#[test]
fn wrong_password_is_bad_password() {
    let secret = ScramSecret::parse(&scram_sha_256(b"app")).unwrap();
    assert!(matches!(
        login_n(&secret, "apP"),
        Err(AuthError::BadPassword)
    ));
    assert!(matches!(login_n(&secret, ""), Err(AuthError::BadPassword)));
}

#[test]
fn unknown_user_fails_at_the_final_step() {
    let mut server = ScramExchange::new("nobody", None, ChannelBinding::None);
    let mut client = ScramSha256::new(b"guess", sasl::ChannelBinding::unsupported());
    let server_first = server
        .client_first(SCRAM_MECHANISM, client.message())
        .unwrap();
    client.update(&server_first).unwrap();
    let result = server.client_final(client.message());
    assert!(matches!(result, Err(AuthError::BadPassword)), "{result:?}");
}

/// server-first-message split into (nonce, salt, iterations).
fn server_first_of(user: &str, secret: Option<ScramSecret>) -> (String, Vec<u8>, u32) {
    let mut server = ScramExchange::new(user, secret, ChannelBinding::None);
    let first = server
        .client_first(SCRAM_MECHANISM, b"n,,n=,r=clientnonce")
        .unwrap();
    let first = String::from_utf8(first).unwrap();
    let mut parts = first.split(',');
    let nonce = parts.next().unwrap().strip_prefix("r=").unwrap().to_owned();
    let salt = STANDARD.decode(parts.next().unwrap().strip_prefix("s=").unwrap());
    let iterations = parts.next().unwrap().strip_prefix("i=").unwrap().parse();
    assert_eq!(parts.next(), None);
    (nonce, salt.unwrap(), iterations.unwrap())
}

#[test]
fn unknown_user_looks_real_and_stable() {
    let real = ScramSecret::parse(&scram_sha_256(b"app")).unwrap();
    let (real_nonce, real_salt, real_iterations) = server_first_of("app", Some(real));
    let (nonce, salt, iterations) = server_first_of("nobody", None);
    assert_eq!((salt.len(), iterations), (real_salt.len(), real_iterations));
    assert_eq!(nonce.len(), real_nonce.len());
    assert!(nonce.starts_with("clientnonce"));
    let server_half = nonce.strip_prefix("clientnonce").unwrap();
    assert!(server_half.len() >= 24 && !server_half.contains(','));

    let (nonce_again, salt_again, _) = server_first_of("nobody", None);
    assert_eq!(salt_again, salt, "same user, same salt");
    assert_ne!(nonce_again, nonce, "fresh nonce every time");
    assert_ne!(
        server_first_of("somebody", None).1,
        salt,
        "salt depends on the user"
    );
}

#[test]
fn user_name_in_client_first_is_ignored() {
    let secret = ScramSecret::derive("pw", b"salt", 16);
    let mut server = ScramExchange::new("app", Some(secret), ChannelBinding::None);
    assert!(server
        .client_first(SCRAM_MECHANISM, b"n,,n=someone=2Celse,r=x,e=ext")
        .is_ok());
}

#[test]
fn bad_client_first_is_malformed() {
    let long = format!("n,,n=,r={}", "x".repeat(MAX_SCRAM_MESSAGE_LEN));
    for input in [
        "",
        "n",
        "n,",
        "x,,n=,r=a",
        "p=tls-server-end-point,,n=,r=a",
        "p,,n=,r=a",
        "n,,",
        "n,,r=abc",
        "n,,n=",
        "n,,n=,",
        "n,,n=,r=",
        "n,,n=,x=abc",
        "n,,n=,r=a b",
        "n,,n=,r=a,bad",
        "n,,n=,r=a,=b",
        "n,,n=,r=\u{e9}",
        "n,a,n=,r=a",
        &long,
    ] {
        let mut server = ScramExchange::new("app", None, ChannelBinding::None);
        assert_malformed(
            server.client_first(SCRAM_MECHANISM, input.as_bytes()),
            input,
        );
    }
    let mut server = ScramExchange::new("app", None, ChannelBinding::None);
    assert_malformed(
        server.client_first(SCRAM_MECHANISM, b"n,,n=,r=\xff\xfe"),
        "not UTF-8",
    );
}

#[test]
fn unsupported_client_first_options() {
    for input in ["n,a=admin,n=,r=abc", "y,a=x,n=,r=abc", "n,,m=ext,n=,r=abc"] {
        let result = ScramExchange::new("app", None, ChannelBinding::None)
            .client_first(SCRAM_MECHANISM, input.as_bytes());
        assert!(
            matches!(result, Err(AuthError::Unsupported { .. })),
            "{input}"
        );
    }
}

#[test]
fn bad_client_final_is_malformed() {
    let proof = STANDARD.encode([7u8; 32]);
    let (_, nonce) = challenged("n,,");
    let long = format!(
        "c=biws,r={nonce},p={proof}{}",
        " ".repeat(MAX_SCRAM_MESSAGE_LEN)
    );
    for input in [
        String::new(),
        "garbage".to_owned(),
        format!("c=biws,r={nonce}"),
        format!("c=biws,r={nonce},p="),
        format!("c=biws,r={nonce},p=!!!!"),
        format!("c=biws,r={nonce},p={}", STANDARD.encode([7u8; 31])),
        format!("c=eSws,r={nonce},p={proof}"),
        format!("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={nonce},p={proof}"),
        format!("c=*,r={nonce},p={proof}"),
        format!("c=biws,r={nonce}x,p={proof}"),
        format!("c=biws,r=abc,p={proof}"),
        format!("r={nonce},c=biws,p={proof}"),
        format!("c=biws,p={proof}"),
        format!("c=biws,r={nonce},,p={proof}"),
        format!("c=biws,r={nonce},p={proof},x=1"),
        long,
    ] {
        let (mut server, _) = challenged("n,,");
        assert_malformed(server.client_final(input.as_bytes()), &input);
    }
    let (mut server, _) = challenged("n,,");
    assert_malformed(server.client_final(b"c=biws,\xff"), "not UTF-8");
}

#[test]
fn channel_binding_must_match_the_flag() {
    let proof = STANDARD.encode([7u8; 32]);
    let (mut server, nonce) = challenged("y,,");
    let good_shape = format!("c=eSws,r={nonce},x=1,p={proof}");
    let result = server.client_final(good_shape.as_bytes());
    assert!(matches!(result, Err(AuthError::BadPassword)), "{result:?}");
    let (mut server, nonce) = challenged("y,,");
    assert_malformed(
        server.client_final(format!("c=biws,r={nonce},p={proof}").as_bytes()),
        "n",
    );
}

#[test]
fn steps_out_of_order_are_errors() {
    let out_of_order =
        |r: Result<Vec<u8>, AuthError>| matches!(r, Err(AuthError::OutOfOrder { .. }));
    let mut server = ScramExchange::new("app", None, ChannelBinding::None);
    assert!(out_of_order(server.client_final(b"c=biws,r=a,p=")));
    assert!(
        out_of_order(server.client_first(SCRAM_MECHANISM, b"n,,n=,r=a")),
        "failed exchange is over"
    );

    let (mut server, _) = challenged("n,,");
    assert!(out_of_order(
        server.client_first(SCRAM_MECHANISM, b"n,,n=,r=a")
    ));
    assert!(out_of_order(server.client_final(b"c=biws,r=a,p=")));

    let mut server = ScramExchange::new("app", None, ChannelBinding::None);
    assert!(server.client_first(SCRAM_MECHANISM, b"garbage").is_err());
    assert!(out_of_order(
        server.client_first(SCRAM_MECHANISM, b"n,,n=,r=a")
    ));
    assert!(format!("{server:?}").contains("Done"));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = rand::rng();
    for _ in 0..2000 {
        let len = rng.random_range(0..64);
        let data: Vec<u8> = (0..len).map(|_| rng.random_range(0x20..0x80)).collect();
        let (mut server, nonce) = challenged("n,,");
        let _ = server.client_final(&data);
        let prefixed = [format!("c=biws,r={nonce},").as_bytes(), &data].concat();
        let (mut server, _) = challenged("n,,");
        let _ = server.client_final(&prefixed);
        let _ = ScramExchange::new("app", None, ChannelBinding::None)
            .client_first(SCRAM_MECHANISM, &data);
        let prefixed = [b"n,,n=,r=", &data[..]].concat();
        let _ = ScramExchange::new("app", None, ChannelBinding::None)
            .client_first(SCRAM_MECHANISM, &prefixed);
    }
}
