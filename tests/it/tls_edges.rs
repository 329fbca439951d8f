//! The broker's own TLS, on both edges, against a real Postgres: clients upgrade after an
//! SSLRequest (psql with verify-full and channel binding, tokio-postgres over rustls), a
//! required TLS turns plaintext away with 28000, bytes sent with an SSLRequest are refused,
//! the certificate reloads on SIGHUP while sessions stay; towards Postgres, each sslmode
//! against a cluster that requires TLS as a managed Postgres does, and a server whose 'S'
//! comes with extra bytes is abandoned.

use std::time::Duration;

use pgbroker::config::{BackendTlsMode, Config, ListenTlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::certs::{RustlsClient, TestCerts};
use crate::common::{self, scalar, sqlstate, Harness, PASSWORD, USER};
use crate::observe::Scrape;
use crate::raw::{read_message, send_startup};
use crate::tls::{psql, SSL_IN_USE};

/// The SSLRequest packet.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A broker whose clients get TLS with `certs`' server certificate, in `mode`.
async fn tls_broker(certs: &TestCerts, mode: ListenTlsMode) -> Harness {
    Harness::start(|c| listen_tls(c, certs, mode)).await
}

fn listen_tls(config: &mut Config, certs: &TestCerts, mode: ListenTlsMode) {
    config.listen.tls.mode = mode;
    config.listen.tls.cert = certs.server_cert.path.display().to_string();
    config.listen.tls.key = certs.server_key.path.display().to_string();
}

/// A libpq connection string to the broker by the name its certificate holds.
fn conninfo(h: &Harness, extra: &str) -> String {
    let (addr, port) = (h.addr.ip(), h.addr.port());
    format!(
        "host=localhost hostaddr={addr} port={port} user={USER} password={PASSWORD} \
         dbname=app connect_timeout=10 {extra}"
    )
}

#[tokio::test]
async fn clients_verify_the_broker_and_bind_their_scram_to_its_certificate() {
    let certs = TestCerts::new();
    let h = tls_broker(&certs, ListenTlsMode::Require).await;
    let ca = certs.ca.path.display();
    // channel_binding=require: libpq accepts nothing but SCRAM-SHA-256-PLUS.
    let verified = format!("sslmode=verify-full sslrootcert={ca} channel_binding=require");
    let (ok, out) = psql(conninfo(&h, &verified), "\\conninfo").await;
    assert!(ok, "{out}");
    assert!(out.contains("SSL connection"), "{out}");
    let other = certs.other_ca.path.display();
    let wrong = format!("sslmode=verify-full sslrootcert={other}");
    let (ok, out) = psql(conninfo(&h, &wrong), "SELECT 1").await;
    assert!(!ok && out.contains("certificate verify failed"), "{out}");
    // tokio-postgres over rustls, binding too; it was shown the broker's certificate.
    let client = RustlsClient::trusting(&certs.ca);
    let tls = client
        .connect(&conninfo(&h, "sslmode=require channel_binding=require"))
        .await
        .expect("tokio-postgres over TLS through the broker");
    assert_eq!(scalar(&tls, "SELECT 40 + 2").await, "42");
    assert_eq!(client.last_server_cert(), Some(certs.server_cert.der()));
    let scrape = Scrape::take(h.metrics.unwrap()).await;
    let ok = [("side", "client"), ("outcome", "ok")];
    assert!(scrape.sum("pgbroker_tls_handshakes_total", &ok) >= 2.0);
    // /status tells when the certificate in use expires (rcgen's default: 4096-01-01).
    let (_, body) = crate::observe::http_get(h.metrics.unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["tls"]["mode"], "require");
    assert_eq!(
        status["tls"]["certificate_not_after"],
        "4096-01-01T00:00:00Z"
    );
}

#[tokio::test]
async fn require_refuses_plaintext_with_28000_and_allow_serves_both() {
    let certs = TestCerts::new();
    let h = tls_broker(&certs, ListenTlsMode::Require).await;
    let (ok, out) = psql(conninfo(&h, "sslmode=disable"), "SELECT 1").await;
    assert!(!ok && out.contains("pgbroker: TLS is required"), "{out}");
    let refused = common::connect_url(&h.url(USER, PASSWORD, "plain")).await;
    assert_eq!(sqlstate(&refused.expect_err("plaintext refused")), "28000");
    let h = tls_broker(&certs, ListenTlsMode::Allow).await;
    let (ok, out) = psql(conninfo(&h, "sslmode=disable"), "\\conninfo").await;
    assert!(ok && !out.contains("SSL connection"), "{out}");
    let (ok, out) = psql(conninfo(&h, "sslmode=require"), "\\conninfo").await;
    assert!(ok && out.contains("SSL connection"), "{out}");
}

#[tokio::test]
async fn bytes_sent_with_the_ssl_request_are_refused_not_read() {
    let certs = TestCerts::new();
    let h = tls_broker(&certs, ListenTlsMode::Allow).await;
    let mut raw = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    // An SSLRequest and a plaintext StartupMessage in one write: what a man in the middle
    // injects ahead of the handshake.
    let mut injected = SSL_REQUEST.to_vec();
    let params = b"user\0app\0database\0app\0\0";
    let len = u32::try_from(8 + params.len()).unwrap();
    injected.extend_from_slice(&len.to_be_bytes());
    injected.extend_from_slice(&[0, 3, 0, 0]);
    injected.extend_from_slice(params);
    raw.write_all(&injected).await.unwrap();
    let (tag, body) = read_message(&mut raw).await;
    assert_eq!(tag, b'E', "no 'S', no handshake: an error");
    assert_eq!(crate::raw::field(&body, b'C'), "08P01");
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "then the connection closes");
    // Everyone else is served; a clean SSLRequest gets its 'S'.
    let mut clean = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    clean.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(clean.read_u8().await.unwrap(), b'S');
    let mut plain = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    send_startup(&mut plain, 0, params).await;
    assert_eq!(read_message(&mut plain).await.0, b'R');
}

#[tokio::test]
async fn a_new_certificate_is_served_after_sighup_and_sessions_stay() {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before any SIGHUP is sent: the process keeps running whatever the broker's
    // own listener has done by then.
    let mut hangups = signal(SignalKind::hangup()).unwrap();
    let mut certs = TestCerts::new();
    let h = tls_broker(&certs, ListenTlsMode::Require).await;
    let client = RustlsClient::trusting(&certs.ca);
    let info = conninfo(&h, "sslmode=require");
    let old = client.connect(&info).await.expect("before the reload");
    let first = certs.server_cert.der();
    assert_eq!(client.last_server_cert(), Some(first.clone()));
    certs.reissue_server();
    let pid = std::process::id().to_string();
    // SIGHUP until a new session is shown the new certificate (a signal sent before the
    // broker's listener started would be missed by it).
    let mut served_new = false;
    for _ in 0..20 {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status();
        assert!(sent.unwrap().success());
        let _ = tokio::time::timeout(Duration::from_secs(1), hangups.recv()).await;
        drop(client.connect(&info).await.expect("after the reload"));
        served_new = client.last_server_cert() == Some(certs.server_cert.der());
        if served_new {
            break;
        }
    }
    assert!(served_new, "the reissued certificate is served");
    assert_ne!(certs.server_cert.der(), first);
    assert_eq!(scalar(&old, "SELECT 'still here'").await, "still here");
}

/// The words of a server error the client got.
fn db_message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default()
}

/// A cluster that requires TLS (as RDS with rds.force_ssl does) and a broker reaching it
/// with `mode`, trusting `ca` for verify-full.
async fn to_tls_postgres(certs: &TestCerts, mode: BackendTlsMode, ca: &str) -> Harness {
    let cluster = common::cluster(20).await;
    let (cert, key) = (&certs.server_cert.pem, &certs.server_key.pem);
    cluster.enable_tls(cert, key).await.expect("enable TLS");
    cluster.require_tls().await.expect("require TLS");
    let mut config = common::config_for(&cluster);
    config.backend.host = "localhost".into();
    config.backend.tls.mode = mode;
    config.backend.tls.ca = ca.into();
    Harness::with_config(cluster, config).await
}

#[tokio::test]
async fn each_sslmode_towards_a_postgres_that_requires_tls() {
    let certs = TestCerts::new();
    let ca = certs.ca.path.display().to_string();
    for mode in [BackendTlsMode::Require, BackendTlsMode::VerifyFull] {
        let h = to_tls_postgres(&certs, mode, &ca).await;
        let client = h.connect().await;
        assert_eq!(scalar(&client, SSL_IN_USE).await, "t", "{mode:?}");
        let scrape = Scrape::take(h.metrics.unwrap()).await;
        let ok = [("side", "server"), ("outcome", "ok")];
        assert!(scrape.sum("pgbroker_tls_handshakes_total", &ok) >= 1.0);
    }
    // Plain TCP is refused by the server (pg_hba: hostnossl reject).
    let h = to_tls_postgres(&certs, BackendTlsMode::Disable, "").await;
    let refused = common::connect_url(&h.url(USER, PASSWORD, "t")).await;
    assert_eq!(sqlstate(&refused.expect_err("no TLS, no login")), "28000");
    // verify-full against another CA: the handshake fails, and the client is told so.
    let other = certs.other_ca.path.display().to_string();
    let h = to_tls_postgres(&certs, BackendTlsMode::VerifyFull, &other).await;
    let error = common::connect_url(&h.url(USER, PASSWORD, "t"))
        .await
        .expect_err("unverified");
    assert_eq!(sqlstate(&error), "08001");
    assert!(db_message(&error).contains("TLS handshake"), "{error:?}");
}

#[tokio::test]
async fn prefer_falls_back_to_plain_tcp_where_postgres_has_no_tls() {
    let h = Harness::start(|c| c.backend.tls.mode = BackendTlsMode::Prefer).await;
    let client = h.connect().await;
    assert_eq!(scalar(&client, SSL_IN_USE).await, "f");
    let h = Harness::start(|c| c.backend.tls.mode = BackendTlsMode::Require).await;
    let error = common::connect_url(&h.url(USER, PASSWORD, "t"))
        .await
        .expect_err("no TLS");
    assert_eq!(sqlstate(&error), "08001");
    assert!(
        db_message(&error).contains("does not offer TLS"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_server_whose_tls_answer_comes_with_extra_bytes_is_abandoned() {
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = fake.local_addr().unwrap().port();
    // A "server" that answers the SSLRequest with 'S' and plaintext bytes after it.
    // Each connection on its own task: the broker's backend check connects too.
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = fake.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if socket.read_exact(&mut request).await.is_ok() && request == SSL_REQUEST {
                    let _ = socket.write_all(b"SR\0\0\0\x08\0\0\0\0").await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await; // holds it open
            });
        }
    });
    let h = Harness::start(|c| {
        c.backend.port = port;
        c.backend.tls.mode = BackendTlsMode::Require;
    })
    .await;
    let error = common::connect_url(&h.url(USER, PASSWORD, "t"))
        .await
        .expect_err("abandoned");
    assert_eq!(sqlstate(&error), "08001", "{error:?}");
    assert!(
        db_message(&error).contains("bytes arrived with its reply"),
        "{error:?}"
    );
}
