//! Protocol coverage through the broker: extended-protocol pipelines, COPY both ways,
//! errors inside transactions, cancel, and hostile bytes.

use std::time::Duration;

use futures_util::future::try_join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

use pgbroker::config::AuthMethod;

use crate::common::{eventually, running, scalar, sqlstate, until_running, Harness};
use crate::raw::{
    query, raw_login, raw_login_with_key, read_message, read_reply, send_startup, token,
};

#[tokio::test]
async fn extended_protocol_pipeline() {
    let h = Harness::start(|c| c.pool.size = 2).await;
    let client = h.connect().await;
    // tokio-postgres pipelines concurrent requests on one connection: Parse/Bind/Execute/Sync
    // batches arrive back to back, with the unnamed statement (no pin).
    let queries = (0..50).map(|i| {
        let client = &client;
        async move {
            let rows = client
                .query_typed(
                    "SELECT $1::int4 * 2, $2::text",
                    &[(&i, Type::INT4), (&"x", Type::TEXT)],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>((
                i,
                rows[0].get::<_, i32>(0),
                rows[0].get::<_, String>(1),
            ))
        }
    });
    for (i, doubled, text) in try_join_all(queries).await.unwrap() {
        assert_eq!((doubled, text.as_str()), (i * 2, "x"));
    }
}

#[tokio::test]
async fn error_inside_a_transaction_keeps_the_server_until_rollback() {
    let h = Harness::start(|c| c.pool.size = 2).await;
    let direct = h.direct().await;
    let a = h.connect().await;
    let b = h.connect().await;
    a.simple_query("BEGIN").await.unwrap();
    let pid = scalar(&a, "SELECT pg_backend_pid()").await;
    let err = a.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    // Another client works meanwhile, on the other server.
    assert_ne!(
        scalar(&b, "SELECT pg_backend_pid()").await,
        pid,
        "b is not lent a's server"
    );
    let err = a.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "25P02",
        "still in the failed transaction on the same server"
    );
    // The backend a began on still holds a's aborted transaction: the broker kept it.
    let state = format!("SELECT state FROM pg_stat_activity WHERE pid = {pid}");
    let kept = eventually(Duration::from_secs(5), || async {
        scalar(&direct, &state).await == "idle in transaction (aborted)"
    })
    .await;
    assert!(kept, "backend {pid} is idle in a's aborted transaction");
    a.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(scalar(&a, "SELECT 1").await, "1");
    let ended = eventually(Duration::from_secs(5), || async {
        scalar(&direct, &state).await == "idle"
    })
    .await;
    assert!(ended, "the ROLLBACK ended the transaction on backend {pid}");
}

#[tokio::test]
async fn copy_in_and_out() {
    let h = Harness::start(|_| {}).await;
    let client = h.connect().await;
    client
        .simple_query("CREATE TABLE c (id int, name text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\tname {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 5000);
    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    use futures_util::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 5000);
    assert_eq!(text.lines().last(), Some("4999\tname 4999"));
}

#[tokio::test]
async fn cancel_reaches_the_running_query() {
    let h = Harness::start(|c| c.pool.size = 2).await;
    let client = h.connect().await;
    let token = client.cancel_token();
    // A query that runs until cancelled.
    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (result.map(|_| ()), client)
    });
    until_running(&h.direct().await, "SELECT pg_sleep(30)").await;
    let started = std::time::Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let (result, client) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        scalar(&client, "SELECT 'still usable'").await,
        "still usable"
    );
}

/// A query through a raw session that runs until the test releases advisory lock 7: it is
/// surely still running whenever a cancel request arrives, with no timing involved.
const BLOCKED: &str = "SELECT 'survived', pg_advisory_xact_lock(7)";

/// Sends a CancelRequest for (pid, secret) on a connection of its own; returns what the
/// broker answered before closing it. The broker closes it only once a cancel it forwards
/// has been taken by Postgres, so any signal it sent has been sent when this returns.
async fn cancel_request(h: &Harness, pid: i32, secret: i32) -> Vec<u8> {
    let mut raw = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut packet = Vec::new();
    for word in [16, 80_877_102, pid, secret] {
        packet.extend_from_slice(&word.to_be_bytes());
    }
    raw.write_all(&packet).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .expect("the broker closes a cancel request's connection")
        .unwrap();
    answer
}

/// The reply to one simple query, message by message (see [`token`]), up to ReadyForQuery.
async fn transcript(raw: &mut tokio::net::TcpStream) -> Vec<String> {
    let read = async {
        let mut seen = Vec::new();
        loop {
            let (tag, body) = read_message(raw).await;
            seen.extend(token(tag, &body, false));
            if tag == b'Z' {
                return seen;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a reply")
}

/// Sends [`BLOCKED`] while `direct` holds its lock, and waits until Postgres runs it.
async fn block(raw: &mut tokio::net::TcpStream, direct: &tokio_postgres::Client) {
    direct
        .batch_execute("SELECT pg_advisory_lock(7)")
        .await
        .unwrap();
    raw.write_all(&query(BLOCKED)).await.unwrap();
    until_running(direct, BLOCKED).await;
}

/// Forged keys (the client's pid with a wrong secret, its secret under another pid, a
/// made-up pair) reach no query: a query running through the broker at that moment lives
/// on and returns its row. The same query is then cancelled with the genuine key (57014),
/// so the forgeries took a path that does cancel when the key is right.
#[tokio::test]
async fn forged_cancel_keys_are_dropped() {
    let h = Harness::start(|c| c.users[0].auth_method = Some(AuthMethod::Password)).await;
    let direct = h.direct().await;
    let (mut raw, (pid, secret)) = raw_login_with_key(&h).await;
    block(&mut raw, &direct).await;
    for (pid, secret) in [
        (pid, secret.wrapping_add(1)),
        (pid, !secret),
        (pid ^ 1, secret),
        (12345, 678),
    ] {
        let answer = cancel_request(&h, pid, secret).await;
        assert!(answer.is_empty(), "a cancel request gets no answer");
    }
    // A forwarded forgery would have interrupted the lock wait by now (57014).
    assert!(running(&direct, BLOCKED).await, "forged cancels reached it");
    direct
        .batch_execute("SELECT pg_advisory_unlock(7)")
        .await
        .unwrap();
    let survived = ["T", "D:survived", "C[SELECT 1]", "Z"];
    assert_eq!(transcript(&mut raw).await, survived);
    // The positive control: the genuine key cancels the same query.
    block(&mut raw, &direct).await;
    assert!(cancel_request(&h, pid, secret).await.is_empty());
    assert_eq!(transcript(&mut raw).await, ["T", "E:57014", "Z"]);
    direct
        .batch_execute("SELECT pg_advisory_unlock(7)")
        .await
        .unwrap();
    raw.write_all(&query("SELECT 1")).await.unwrap();
    assert_eq!(transcript(&mut raw).await, ["T", "D:1", "C[SELECT 1]", "Z"]);
}

/// Hostile startup packets end their own connection with 08P01 (or 0A000 for a protocol
/// version the broker does not speak), and nothing else.
#[tokio::test]
async fn malformed_messages_get_08p01_and_others_keep_working() {
    let h = Harness::start(|_| {}).await;
    let healthy = h.connect().await;
    for garbage in [
        vec![0u8, 0, 0, 2],                                    // startup length below 8
        vec![0, 0, 0xff, 0xff, 0, 3, 0, 0],                    // startup length over the bound
        vec![0, 0, 0, 8, 0, 9, 0, 0],                          // protocol 9.0
        vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'], // unterminated parameters
    ] {
        let mut raw = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        raw.write_all(&garbage).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf.first(), Some(&b'E'), "{garbage:?} got {buf:?}");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("08P01") || text.contains("0A000"), "{text}");
    }
    assert_eq!(scalar(&healthy, "SELECT 1").await, "1");
}

#[tokio::test]
async fn ssl_request_is_refused_and_startup_continues() {
    let h = Harness::start(|_| {}).await;
    let mut raw = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    raw.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    // The same connection goes on with a StartupMessage and is asked to authenticate.
    send_startup(&mut raw, 0, b"user\0app\0database\0app\0\0").await;
    let mut tag = [0u8; 1];
    raw.read_exact(&mut tag).await.unwrap();
    assert_eq!(&tag, b"R", "an authentication request follows");
}

#[tokio::test]
async fn bad_frames_after_startup_get_08p01() {
    let h = Harness::start(|c| {
        c.listen.max_message_size = 4096;
        c.users[0].auth_method = Some(pgbroker::config::AuthMethod::Password);
    })
    .await;
    let healthy = h.connect().await;
    let cases: [&[u8]; 3] = [
        b"Q\0\0\0\x02",       // length below 4
        b"Q\0\x10\0\0select", // 1 MiB query, over max_message_size: refused before buffering
        b"~\0\0\0\x04",       // unknown message type
    ];
    for bytes in cases {
        let mut raw = raw_login(&h).await;
        // A valid query first: the session works.
        raw.write_all(b"Q\0\0\0\x0dselect 1\0").await.unwrap();
        assert_eq!(read_reply(&mut raw).await.0, b"TDCZ");
        raw.write_all(bytes).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf.first(), Some(&b'E'), "{bytes:?}");
        assert!(String::from_utf8_lossy(&buf).contains("08P01"), "{bytes:?}");
    }
    assert_eq!(scalar(&healthy, "SELECT 1").await, "1");
}

#[tokio::test]
async fn startup_timeout_ends_silent_clients() {
    let h = Harness::start(|c| c.listen.startup_timeout = Duration::from_millis(300)).await;
    let mut raw = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&buf).contains("08P01"));
}

#[tokio::test]
async fn newer_minor_version_gets_negotiate_protocol_version() {
    let h = Harness::start(|_| {}).await;
    let mut raw = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    send_startup(&mut raw, 2, b"user\0app\0_pq_.future\0x\0\0").await;
    let mut header = [0u8; 5];
    raw.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], b'v');
    let mut body = vec![0u8; u32::from_be_bytes(header[1..].try_into().unwrap()) as usize - 4];
    raw.read_exact(&mut body).await.unwrap();
    assert_eq!(
        &body[..8],
        &[0, 0, 0, 0, 0, 0, 0, 1],
        "minor 0, one unrecognized option"
    );
    assert_eq!(&body[8..], b"_pq_.future\0");
    raw.read_exact(&mut header[..1]).await.unwrap();
    assert_eq!(header[0], b'R', "authentication follows on 3.0");
}

#[tokio::test]
async fn max_client_connections_turns_clients_away_with_53300() {
    let h = Harness::start(|c| c.listen.max_client_connections = 2).await;
    let a = h.connect().await;
    let _b = h.connect().await;
    let err = h
        .connect_as("app", "app", "third")
        .await
        .err()
        .expect("third client refused");
    assert_eq!(sqlstate(&err), "53300");
    drop(a);
    // The slot frees when a's session task ends.
    let admitted = eventually(Duration::from_secs(5), || async {
        h.connect_as("app", "app", "after").await.is_ok()
    })
    .await;
    assert!(admitted, "a slot freed up");
}
