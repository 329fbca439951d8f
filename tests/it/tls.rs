//! The TLS groundwork, against Postgres directly (no broker): a sandbox cluster serves a
//! certificate from the test CA; psql (libpq) and tokio-postgres over rustls verify it or
//! refuse another CA's; `require_tls` turns plaintext away as a managed Postgres does; SCRAM
//! channel binding works over it; a certificate replaced by a reload reaches new sessions.

use std::process::Command;

use pgbroker::sandbox::Cluster;

use crate::certs::{RustlsClient, TestCerts};
use crate::common::{self, scalar, PASSWORD, USER};
use crate::tools::program;

/// Whether the session runs over TLS, as the server sees it.
pub const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// A cluster with login `app` that serves a server certificate from `certs`' CA.
async fn tls_cluster() -> (Cluster, TestCerts) {
    let (cluster, certs) = (common::cluster(20).await, TestCerts::new());
    let (cert, key) = (&certs.server_cert.pem, &certs.server_key.pem);
    cluster.enable_tls(cert, key).await.expect("enable TLS");
    (cluster, certs)
}

/// A libpq connection string to `cluster` as app/app: by the name `localhost`, which the
/// certificate holds, at its address; `extra` adds or overrides settings.
fn conninfo(cluster: &Cluster, extra: &str) -> String {
    let (addr, port) = (cluster.host(), cluster.port());
    format!(
        "host=localhost hostaddr={addr} port={port} user={USER} password={PASSWORD} \
         dbname=app connect_timeout=10 {extra}"
    )
}

/// `psql -X -At -d conninfo -c sql`: whether it succeeded, and its output and errors.
pub async fn psql(conninfo: String, sql: &str) -> (bool, String) {
    let mut command = Command::new(program("psql"));
    command.args(["-X", "-At", "-d", &conninfo, "-c", sql]);
    // Only the connection string speaks; English, for the messages the tests look for.
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PG")) {
        command.env_remove(name);
    }
    command.env("LC_ALL", "C");
    let out = tokio::task::spawn_blocking(move || command.output().expect("run psql"));
    let out = out.await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.into_owned())
}

#[tokio::test]
async fn psql_verify_full_trusts_the_test_ca_and_refuses_another() {
    let (cluster, certs) = tls_cluster().await;
    let ca = certs.ca.path.display();
    let verified = conninfo(&cluster, &format!("sslmode=verify-full sslrootcert={ca}"));
    let (ok, out) = psql(verified, SSL_IN_USE).await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "t");
    let other = certs.other_ca.path.display();
    let wrong = conninfo(
        &cluster,
        &format!("sslmode=verify-full sslrootcert={other}"),
    );
    let (ok, out) = psql(wrong, SSL_IN_USE).await;
    assert!(!ok, "another CA must not verify: {out}");
    assert!(out.contains("certificate verify failed"), "{out}");
    // Without TLS required, plaintext still gets in.
    let (ok, out) = psql(conninfo(&cluster, "sslmode=disable"), SSL_IN_USE).await;
    assert!(ok && out.trim() == "f", "{out}");
}

#[tokio::test]
async fn require_tls_refuses_plaintext_and_admits_tls() {
    let (cluster, _certs) = tls_cluster().await;
    cluster.require_tls().await.expect("require TLS");
    let (ok, out) = psql(conninfo(&cluster, "sslmode=disable"), SSL_IN_USE).await;
    assert!(!ok, "plaintext must be refused: {out}");
    assert!(out.contains("pg_hba.conf rejects connection"), "{out}");
    assert!(out.contains("no encryption"), "{out}");
    let (ok, out) = psql(conninfo(&cluster, "sslmode=require"), SSL_IN_USE).await;
    assert!(ok && out.trim() == "t", "{out}");
    // The sandbox's own administration goes through the unix socket, TLS or not.
    let login = cluster.create_login("later", "pw", "later");
    login.await.expect("create a login after require_tls");
    let later = "sslmode=require user=later password=pw dbname=later";
    let (ok, out) = psql(conninfo(&cluster, later), SSL_IN_USE).await;
    assert!(ok && out.trim() == "t", "{out}");
}

#[tokio::test]
async fn channel_binding_is_required_and_works_over_tls() {
    let (cluster, certs) = tls_cluster().await;
    let ca = certs.ca.path.display();
    let bound = format!("sslmode=verify-full sslrootcert={ca} channel_binding=require");
    let sql =
        "SELECT current_user || ' ' || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";
    let (ok, out) = psql(conninfo(&cluster, &bound), sql).await;
    assert!(ok, "SCRAM-SHA-256-PLUS over TLS: {out}");
    assert_eq!(out.trim(), "app true");
    // libpq refuses to log in without it rather than let a server skip the binding.
    let plain = "sslmode=disable channel_binding=require";
    let (ok, out) = psql(conninfo(&cluster, plain), sql).await;
    assert!(!ok, "{out}");
    assert!(out.contains("channel binding"), "{out}");
}

#[tokio::test]
async fn tokio_postgres_over_rustls_verifies_against_the_ca() {
    let (cluster, certs) = tls_cluster().await;
    cluster.require_tls().await.expect("require TLS");
    let url = conninfo(&cluster, "sslmode=require channel_binding=require");
    let client = RustlsClient::trusting(&certs.ca);
    let session = client
        .connect(&url)
        .await
        .expect("TLS with channel binding");
    assert_eq!(scalar(&session, SSL_IN_USE).await, "t");
    assert_eq!(client.last_server_cert(), Some(certs.server_cert.der()));
    let wrong = RustlsClient::trusting(&certs.other_ca);
    let refused = wrong.connect(&url).await.err().expect("another CA refused");
    let why = format!("{refused:?}");
    assert!(why.contains("UnknownIssuer"), "{why}");
    // No TLS client at all meets the reject rule.
    let plain = common::connect_url(&conninfo(&cluster, "sslmode=disable")).await;
    let plain = plain.err().expect("plaintext refused");
    assert_eq!(common::sqlstate(&plain), "28000", "{plain}");
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_sessions_and_old_ones_stay() {
    let (cluster, mut certs) = tls_cluster().await;
    let url = conninfo(&cluster, "sslmode=require");
    let client = RustlsClient::trusting(&certs.ca);
    let before = client.connect(&url).await.expect("first session");
    let first = certs.server_cert.der();
    certs.reissue_server();
    let second = certs.server_cert.der();
    assert_ne!(first, second);
    assert_eq!(certs.server_common_name(), "pgbroker test server 2");
    let (cert, key) = (&certs.server_cert.pem, &certs.server_key.pem);
    cluster
        .enable_tls(cert, key)
        .await
        .expect("replace the certificate");
    assert_eq!(
        scalar(&before, SSL_IN_USE).await,
        "t",
        "the old session stays"
    );
    let after = client
        .connect(&url)
        .await
        .expect("a session after the reload");
    assert_eq!(scalar(&after, SSL_IN_USE).await, "t");
    assert_eq!(client.last_server_cert(), Some(second));
}
