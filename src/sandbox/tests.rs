//! Tests of the sandbox: real clusters started, used, stopped and removed.

use super::access::tls_only;
use super::setup::{account, version_key};
use super::*;

async fn started() -> Cluster {
    Cluster::start(ClusterOptions::default())
        .await
        .expect("cluster starts")
}

async fn answers(port: u16) -> bool {
    tokio::net::TcpStream::connect((Cluster::HOST, port))
        .await
        .is_ok()
}

#[tokio::test]
async fn two_clusters_get_their_own_port_and_answer_the_superuser() {
    let (a, b) = tokio::join!(started(), started());
    assert_ne!(a.port(), b.port());
    for cluster in [&a, &b] {
        let client = cluster.superuser("postgres").await.expect("connect");
        let row = client.query_one("SELECT 1", &[]).await.expect("query");
        assert_eq!(row.get::<_, i32>(0), 1);
    }
}

#[tokio::test]
async fn logins_connect_with_their_password() {
    let cluster = started().await;
    let login = cluster.create_login("app", "pw'1", "app");
    login.await.expect("create");
    cluster
        .create_login("app", "pw'1", "app")
        .await
        .expect("again");
    let client = cluster.connect("app", "pw'1", "app").await.expect("login");
    let sql = "SELECT current_user::text";
    let row = client.query_one(sql, &[]).await.expect("query");
    assert_eq!(row.get::<_, String>(0), "app");
    assert!(cluster.connect("app", "wrong", "app").await.is_err());
    let login = cluster.create_md5_login("legacy", "pw", "legacy");
    login.await.expect("md5 login");
    let sql = "SELECT rolpassword FROM pg_authid WHERE rolname = 'legacy'";
    let client = cluster.superuser("postgres").await.expect("connect");
    let secret: String = client.query_one(sql, &[]).await.expect("query").get(0);
    assert!(secret.starts_with("md5"), "{secret}");
}

#[tokio::test]
async fn stop_then_restart() {
    let mut cluster = started().await;
    cluster.stop().expect("stop");
    assert!(cluster.superuser("postgres").await.is_err());
    cluster.restart().expect("restart");
    cluster
        .superuser("postgres")
        .await
        .expect("connect after restart");
}

#[tokio::test]
async fn drop_removes_the_directory_and_frees_the_port() {
    let cluster = started().await;
    let (root, port) = (cluster.root.clone(), cluster.port());
    assert!(root.exists() && answers(port).await);
    drop(cluster);
    assert!(!root.exists());
    assert!(!answers(port).await);
}

#[tokio::test]
async fn a_panicking_test_still_cleans_up() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let cluster = started().await;
        let _ = tx.send((cluster.root.clone(), cluster.port()));
        panic!("deliberate panic with a running cluster");
    });
    assert!(task.await.is_err());
    let (root, port) = rx.await.expect("cluster started");
    assert!(!root.exists());
    assert!(!answers(port).await);
}

#[tokio::test]
async fn a_taken_port_is_retried_and_options_apply() {
    let busy = std::net::TcpListener::bind((Cluster::HOST, 0)).expect("bind");
    let mut ports = [busy.local_addr().expect("addr").port()].into_iter();
    let taken = ports.clone().next();
    let extra_conf = vec!["work_mem = '2MB'".into()];
    let opts = ClusterOptions {
        max_connections: 7,
        extra_conf,
    };
    let next = move || ports.next().map_or_else(free_port, Ok);
    let start = blocking(move || Cluster::start_blocking(&opts, next));
    let cluster = start.await.expect("start on a second port");
    assert_ne!(Some(cluster.port()), taken);
    let client = cluster.superuser("postgres").await.expect("connect");
    let sql = "SELECT current_setting('max_connections')";
    let row = client.query_one(sql, &[]).await.expect("query");
    assert_eq!(row.get::<_, String>(0), "7");
}

#[test]
fn finds_binaries_reads_accounts_orders_versions() {
    assert!(find_bin_dir().expect("installed").join("pg_ctl").is_file());
    let passwd = "root:x:0:0::/root:/bin/sh\npostgres:x:101:104::/:/bin/sh\n";
    assert_eq!(account(passwd, "postgres"), Some((101, 104)));
    assert_eq!(account(passwd, "nobody"), None);
    let mut versions = ["9.6", "15", "12"].map(version_key);
    versions.sort_by(|a, b| b.cmp(a));
    assert_eq!(versions, [vec![15], vec![12], vec![9, 6]]);
}

#[test]
fn tls_only_makes_host_rules_hostssl_and_rejects_the_rest_once() {
    let hba = "local all all trust\nhost all \"u\" 127.0.0.1/32 md5\n\
        host all all 127.0.0.1/32 scram-sha-256\n";
    let want = "local all all trust\nhostssl all \"u\" 127.0.0.1/32 md5\n\
        hostssl all all 127.0.0.1/32 scram-sha-256\n\
        hostnossl all all 127.0.0.1/32 reject\n";
    assert_eq!(tls_only(hba), want);
    assert_eq!(tls_only(want), want);
}

#[tokio::test]
async fn reload_waits_and_a_bad_certificate_is_refused_with_the_log() {
    let cluster = started().await;
    cluster.reload().await.expect("reload");
    let refused = cluster.enable_tls("not a certificate", "not a key").await;
    match refused {
        Err(SandboxError::NotApplied { what: "TLS", log }) => {
            assert!(log.contains("certificate"), "{log}");
        }
        other => panic!("a bad certificate must be refused: {other:?}"),
    }
    // The superuser's unix socket does not depend on TLS.
    cluster.superuser("postgres").await.expect("still answers");
}
