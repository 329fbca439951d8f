//! Extended-protocol and session-end cases driven byte by byte: the unnamed statement,
//! COPY IN through Parse/Bind/Execute, lone Flush and Sync, an unfinished batch, Terminate.

use tokio::io::AsyncWriteExt;

use crate::common::{scalar, Harness};
use crate::raw::{
    bind_execute_sync, cleartext_one_server, message, parse_unnamed, raw_login, read_message,
    read_reply,
};

#[tokio::test]
async fn unnamed_statement_does_not_leak_to_the_next_client() {
    let h = Harness::start(cleartext_one_server).await;
    let mut a = raw_login(&h).await;
    let mut batch = parse_unnamed("SELECT 'secret-of-a'");
    batch.extend(message(b'S', &[]));
    a.write_all(&batch).await.unwrap();
    assert_eq!(read_reply(&mut a).await.0, b"1Z");
    // b binds "the" unnamed statement without parsing one: Postgres says 26000.
    let mut b = raw_login(&h).await;
    b.write_all(&bind_execute_sync()).await.unwrap();
    let (tags, bytes) = read_reply(&mut b).await;
    assert!(
        !tags.contains(&b'D'),
        "b must not run a's statement: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        String::from_utf8_lossy(&bytes).contains("26000"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    // b's own unnamed statements work as usual.
    let mut own = parse_unnamed("SELECT 'mine'");
    own.extend(bind_execute_sync());
    b.write_all(&own).await.unwrap();
    let (tags, bytes) = read_reply(&mut b).await;
    assert_eq!(tags, b"12DCZ");
    assert!(String::from_utf8_lossy(&bytes).contains("mine"));
}

#[tokio::test]
async fn extended_copy_in_gives_the_server_back() {
    let h = Harness::start(cleartext_one_server).await;
    let direct = h.direct().await;
    direct
        .batch_execute("CREATE TABLE ci (x int); GRANT ALL ON ci TO app")
        .await
        .unwrap();
    let mut raw = raw_login(&h).await;
    let mut batch = parse_unnamed("COPY ci FROM STDIN");
    batch.extend(bind_execute_sync());
    raw.write_all(&batch).await.unwrap();
    for want in *b"12G" {
        assert_eq!(read_message(&mut raw).await.0, want);
    }
    let mut data = message(b'd', b"1\n2\n");
    data.extend(message(b'c', &[]));
    data.extend(message(b'S', &[]));
    raw.write_all(&data).await.unwrap();
    let (tags, _) = read_reply(&mut raw).await;
    assert_eq!(tags, b"CZ");
    // The only server connection is free again: another client gets it.
    let other = h.connect().await;
    assert_eq!(scalar(&other, "SELECT count(*) FROM ci").await, "2");
}

#[tokio::test]
async fn idle_flush_and_sync_hold_no_server() {
    let h = Harness::start(cleartext_one_server).await;
    let mut raw = raw_login(&h).await;
    raw.write_all(&message(b'H', &[])).await.unwrap();
    let other = h.connect().await;
    assert_eq!(
        scalar(&other, "SELECT 1").await,
        "1",
        "a lone Flush holds nothing"
    );
    raw.write_all(&message(b'S', &[])).await.unwrap();
    assert_eq!(read_reply(&mut raw).await.0, b"Z");
}

#[tokio::test]
async fn unsynced_batch_of_a_vanished_client_is_not_committed() {
    let h = Harness::start(cleartext_one_server).await;
    let direct = h.direct().await;
    direct
        .batch_execute("CREATE TABLE us (x int); GRANT ALL ON us TO app")
        .await
        .unwrap();
    let mut raw = raw_login(&h).await;
    let mut batch = parse_unnamed("INSERT INTO us VALUES (1)");
    batch.extend(message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    batch.extend(message(b'E', &[0, 0, 0, 0, 0]));
    batch.extend(message(b'H', &[]));
    raw.write_all(&batch).await.unwrap();
    // ParseComplete, BindComplete, CommandComplete: the insert ran, in an implicit
    // transaction that only a Sync would commit.
    for want in *b"12C" {
        assert_eq!(read_message(&mut raw).await.0, want);
    }
    drop(raw);
    let other = h.connect().await;
    assert_eq!(
        scalar(&other, "SELECT count(*) FROM us").await,
        "0",
        "never committed"
    );
}

#[tokio::test]
async fn terminate_lets_the_last_query_finish() {
    let h = Harness::start(cleartext_one_server).await;
    let direct = h.direct().await;
    direct
        .batch_execute("CREATE TABLE tq (x int); GRANT ALL ON tq TO app")
        .await
        .unwrap();
    let mut raw = raw_login(&h).await;
    // pg_sleep: the query still runs when the Terminate arrives and the socket closes.
    let mut batch = message(b'Q', b"SELECT pg_sleep(0.3); INSERT INTO tq VALUES (1)\0");
    batch.extend(message(b'X', &[]));
    raw.write_all(&batch).await.unwrap();
    drop(raw);
    let other = h.connect().await;
    assert_eq!(
        scalar(&other, "SELECT count(*) FROM tq").await,
        "1",
        "the query before Terminate ran"
    );
}

#[tokio::test]
async fn an_earlier_batch_sync_does_not_release_the_server_early() {
    let h = Harness::start(|c| {
        cleartext_one_server(c);
        c.pool.borrow_timeout = std::time::Duration::from_secs(10);
    })
    .await;
    let direct = h.direct().await;
    direct
        .batch_execute("CREATE TABLE cc (x int); GRANT ALL ON cc TO app")
        .await
        .unwrap();
    let mut a = raw_login(&h).await;
    let mut batch = parse_unnamed("SELECT 1");
    batch.extend(bind_execute_sync());
    a.write_all(&batch).await.unwrap();
    read_reply(&mut a).await;
    a.write_all(&message(b'Q', b"COPY cc FROM STDIN\0"))
        .await
        .unwrap();
    assert_eq!(read_message(&mut a).await.0, b'G');
    let mut rest = message(b'd', b"1\n");
    rest.extend(message(b'c', &[]));
    rest.extend(message(b'S', &[]));
    // pg_sleep: a's query keeps the one server busy while b asks for it.
    rest.extend(message(b'Q', b"SELECT pg_sleep(0.5), 'a-secret'\0"));
    a.write_all(&rest).await.unwrap();
    // b asks meanwhile; it must get its own rows, after a's query is done.
    let b = h.connect().await;
    assert_eq!(scalar(&b, "SELECT 'b-own'").await, "b-own");
    assert_eq!(read_reply(&mut a).await.0, b"CZ");
    assert_eq!(read_reply(&mut a).await.0, b"Z");
    let (tags, bodies) = read_reply(&mut a).await;
    assert_eq!(tags, b"TDCZ");
    assert!(String::from_utf8_lossy(&bodies).contains("a-secret"));
}

#[tokio::test]
async fn a_flush_between_simple_queries_holds_nothing() {
    let h = Harness::start(cleartext_one_server).await;
    let mut a = raw_login(&h).await;
    a.write_all(&message(b'Q', b"BEGIN\0")).await.unwrap();
    read_reply(&mut a).await;
    a.write_all(&message(b'H', &[])).await.unwrap();
    a.write_all(&message(b'Q', b"COMMIT\0")).await.unwrap();
    read_reply(&mut a).await;
    let b = h.connect().await;
    assert_eq!(scalar(&b, "SELECT 'free'").await, "free");
}
