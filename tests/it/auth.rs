//! Client authentication: SCRAM-SHA-256, md5 and cleartext against [[users]] entries whose
//! password is plaintext, an md5 hash or a SCRAM secret; bad password and unknown user.

use pgbroker::config::{AuthMethod, User};

use crate::common::{scalar, sqlstate, Harness};

fn user(name: &str, password: &str, method: Option<AuthMethod>) -> User {
    User {
        name: name.into(),
        password: password.into(),
        password_file: None,
        account: None,
        auth_method: method,
    }
}

fn md5_secret(password: &str, user: &str) -> String {
    use md5::Digest;
    let digest = md5::Md5::digest(format!("{password}{user}").as_bytes());
    format!(
        "md5{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[tokio::test]
async fn scram_md5_and_cleartext_logins() {
    let h = Harness::start(|c| {
        c.users.clear();
        // Every user logs in to Postgres as `app` would: same role, different broker auth.
        c.users
            .push(user("app", "app", Some(AuthMethod::ScramSha256)));
    })
    .await;
    let client = h.connect().await;
    assert_eq!(scalar(&client, "SELECT current_user").await, "app");
    drop(h);

    for (password, method) in [
        ("app".to_owned(), Some(AuthMethod::Md5)),
        ("app".to_owned(), Some(AuthMethod::Password)),
        (
            pgbroker::auth::scram_secret("app", 4096),
            Some(AuthMethod::Password),
        ),
        (pgbroker::auth::scram_secret("app", 4096), None),
    ] {
        let h = Harness::start(|c| {
            c.users.clear();
            c.users.push(user("app", &password, method));
        })
        .await;
        if password.starts_with("SCRAM") {
            // The client authenticates against the secret; the server login then needs a
            // ClientKey (SCRAM passthrough, tests/it/passthrough.rs). A cleartext login
            // reveals none: a clear 08001. A SCRAM login reveals one, but this secret's salt
            // is not the server's: 28P01.
            let err = h
                .connect_as("app", "app", "t")
                .await
                .err()
                .expect("server login needs the server's verifier");
            let message = err.as_db_error().unwrap().message().to_owned();
            if method == Some(AuthMethod::Password) {
                assert_eq!(sqlstate(&err), "08001", "{err}");
                assert!(message.contains("SCRAM secret"), "{err}");
            } else {
                assert_eq!(sqlstate(&err), "28P01", "{err}");
                assert!(message.contains("SCRAM secret"), "{err}");
            }
            // A wrong password is still refused first, with 28P01.
            let err = h
                .connect_as("app", "bad", "t")
                .await
                .err()
                .expect("wrong password");
            assert_eq!(sqlstate(&err), "28P01", "{method:?}");
            continue;
        }
        let client = h.connect().await;
        assert_eq!(scalar(&client, "SELECT 1").await, "1", "{method:?}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_read_the_same() {
    let h = Harness::start(|_| {}).await;
    let wrong = h
        .connect_as("app", "nope", "t")
        .await
        .err()
        .expect("wrong password fails");
    let unknown = h
        .connect_as("ghost", "app", "t")
        .await
        .err()
        .expect("unknown user fails");
    assert_eq!(sqlstate(&wrong), "28P01");
    assert_eq!(sqlstate(&unknown), "28P01");
    let text =
        |e: &tokio_postgres::Error| e.as_db_error().unwrap().message().replace("ghost", "app");
    assert_eq!(text(&wrong), text(&unknown));
    assert!(text(&wrong).starts_with("pgbroker: "));
    // The broker stays healthy.
    assert_eq!(scalar(&h.connect().await, "SELECT 2").await, "2");
}

#[tokio::test]
async fn md5_and_cleartext_wrong_passwords_fail() {
    for method in [AuthMethod::Md5, AuthMethod::Password] {
        let h = Harness::start(|c| {
            c.users.clear();
            c.users.push(user("app", "app", Some(method)));
        })
        .await;
        let err = h.connect_as("app", "bad", "t").await.err().expect("fails");
        assert_eq!(sqlstate(&err), "28P01", "{method:?}");
    }
}

/// A user configured with only its md5 hash: the client authenticates with md5 against the
/// hash, and the broker logs in to a server that asks for md5 with the same hash.
#[tokio::test]
async fn md5_secret_for_client_and_server_logins() {
    let cluster = crate::common::cluster(20).await;
    cluster.create_md5_login("m5", "pw5", "app").await.unwrap();
    let mut config = crate::common::config_for(&cluster);
    config
        .users
        .push(user("m5", &md5_secret("pw5", "m5"), None));
    let h = Harness::with_config(cluster, config).await;
    let client = h.connect_as("m5", "pw5", "t").await.unwrap();
    assert_eq!(scalar(&client, "SELECT current_user").await, "m5");
    let err = h
        .connect_as("m5", "wrong", "t")
        .await
        .err()
        .expect("wrong password");
    assert_eq!(sqlstate(&err), "28P01");
}
