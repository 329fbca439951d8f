//! The runs a scenario is compared across: a direct connection to Postgres (the oracle), the
//! broker in session mode, and the broker in transaction mode with other clients churning.
//! Each run sends the same raw frontend messages and writes down what the client reads.

use std::net::SocketAddr;
use std::time::Duration;

use pgbroker::sandbox::Cluster;
use pgbroker::Broker;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::churn::{Churn, SETTINGS};
use crate::raw::{field, message, raw_login_at, read_message, read_reply, send_startup, token};

/// How much of a reply to read.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// This many ReadyForQuery messages (`<STALL>` after 4s of nothing).
    Ready(usize),
    /// This many messages of any kind.
    Msgs(usize),
    /// Up to this many ReadyForQuery, or until 700ms of quiet (Postgres may skip a Query
    /// sent after an error in an unsynced batch: fewer than counted).
    Quiet(usize),
}

/// What one client sends at one point of a scenario, and how much of the answer to read.
pub struct Exchange {
    pub client: usize,
    pub bytes: Vec<u8>,
    pub until: Until,
}

/// Where a scenario runs.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Straight to Postgres, over TCP with SCRAM as `app`: the oracle.
    Direct,
    /// Through the broker in session mode, one server connection per client.
    Session,
    /// Through the broker in transaction mode on `servers` server connections, with
    /// [`super::churn::CHURNERS`] other clients churning, `capacity` named statements per server.
    Transaction { servers: usize, capacity: usize },
}

/// A client's view of a reply up to `until`, one token per message (see [`raw::token`]).
///
/// [`raw::token`]: crate::raw::token
pub async fn collect(raw: &mut TcpStream, until: Until) -> String {
    read_until(raw, until, |tag, body| token(tag, body, false)).await
}

/// Reads messages up to `until`, each shown by `show` (`None`: left out).
pub async fn read_until(
    raw: &mut TcpStream,
    until: Until,
    show: impl Fn(u8, &[u8]) -> Option<String>,
) -> String {
    let mut seen = Vec::new();
    let (mut ready, mut msgs) = (0, 0);
    loop {
        let wait = match until {
            Until::Ready(n) | Until::Quiet(n) if ready >= n => break,
            Until::Msgs(n) if msgs >= n => break,
            Until::Quiet(_) => Duration::from_millis(700),
            _ => Duration::from_secs(4),
        };
        let Ok((tag, body)) = tokio::time::timeout(wait, read_message(raw)).await else {
            if !matches!(until, Until::Quiet(_)) {
                seen.push("<STALL>".to_string());
            }
            break;
        };
        msgs += 1;
        seen.extend(show(tag, &body));
        ready += usize::from(tag == b'Z');
    }
    seen.join(" ")
}

/// How the oracle transcripts show a message: [`token`] with the transaction status, plus
/// the text of errors and notices (`E:<SQLSTATE>[<message>]`), ParameterStatus (`S:name=value`),
/// every column of a row, the columns of a RowDescription and the types of a
/// ParameterDescription. Normalised only for the broker's statement names (`pgbroker_*`)
/// and backend pids (a NotificationResponse shows no pid; BackendKeyData shows no key).
pub fn oracle_token(tag: u8, body: &[u8]) -> Option<String> {
    let shown = match tag {
        b'E' | b'N' => format!(
            "{}:{}[{}]",
            char::from(tag),
            field(body, b'C'),
            field(body, b'M')
        ),
        b'S' => format!("S:{}", cstrings(body).join("=")),
        b'D' => format!("D:{}", columns(body).join("|")),
        b'T' => format!("T:{}", described_columns(body).join(",")),
        b't' => format!("t:{}", words(&body[2..]).join(",")),
        b'A' => format!("A:{}", cstrings(&body[4..]).join(":")),
        _ => return token(tag, body, true),
    };
    Some(normalise(&shown))
}

/// `pgbroker_<anything>` → `pgbroker_*`: the broker's server-side names vary between runs.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(pgbroker::protocol::statement::SERVER_PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str("pgbroker_*");
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out + rest
}

/// The NUL-terminated strings of a body (the last NUL ends the list).
fn cstrings(body: &[u8]) -> Vec<String> {
    let body = body.strip_suffix(&[0]).unwrap_or(body);
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A RowDescription's columns as `name/type oid`.
fn described_columns(body: &[u8]) -> Vec<String> {
    let mut at = 2;
    let mut out = Vec::new();
    while let Some(len) = body[at..].iter().position(|&b| b == 0) {
        let name = String::from_utf8_lossy(&body[at..at + len]);
        let oid = u32::from_be_bytes(body[at + len + 7..at + len + 11].try_into().unwrap());
        out.push(format!("{name}/{oid}"));
        at += len + 19;
    }
    out
}

fn words(body: &[u8]) -> Vec<String> {
    let word = |c: &[u8]| u32::from_be_bytes(c.try_into().unwrap()).to_string();
    body.chunks(4).map(word).collect()
}

fn columns(body: &[u8]) -> Vec<String> {
    let mut at = 2;
    let mut out = Vec::new();
    while at + 4 <= body.len() {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        out.push(usize::try_from(len).map_or("NULL".into(), |len| {
            at += len;
            String::from_utf8_lossy(&body[at - len..at]).into_owned()
        }));
    }
    out
}

/// Runs `exchanges` on a fresh connection per client to `target`; returns one line per
/// exchange, `[client] tokens…`, then whatever a client received after the last one.
pub async fn transcript(
    cluster: &Cluster,
    target: Target,
    clients: usize,
    exchanges: &[Exchange],
) -> Vec<String> {
    reset(cluster).await;
    let broker = match target {
        Target::Direct => None,
        _ => Some(Running::start(cluster, target, clients).await),
    };
    let mut raws = Vec::new();
    for _ in 0..clients {
        raws.push(match &broker {
            Some(b) => raw_login_at(b.addr).await.0,
            None => direct_login(cluster).await,
        });
    }
    let mut out = Vec::new();
    for e in exchanges {
        raws[e.client].write_all(&e.bytes).await.unwrap();
        let got = read_until(&mut raws[e.client], e.until, oracle_token).await;
        out.push(format!("[{}] {got}", e.client));
    }
    drain(&mut raws, &mut out).await;
    if let Some(broker) = broker {
        broker.stop(&mut out).await;
    }
    out
}

/// Notes anything a client receives after the last exchange, then ends each session.
async fn drain(raws: &mut [TcpStream], out: &mut Vec<String>) {
    for (c, raw) in raws.iter_mut().enumerate() {
        let mut extra = Vec::new();
        while let Ok((tag, body)) =
            tokio::time::timeout(Duration::from_millis(50), read_message(raw)).await
        {
            extra.extend(oracle_token(tag, &body));
        }
        if !extra.is_empty() {
            out.push(format!("[{c}] extra: {}", extra.join(" ")));
        }
        let _ = raw.write_all(&message(b'X', b"")).await;
    }
}

/// What a scenario may leave behind in the shared cluster is undone before each run: a
/// table `ct` owned by `app` for the COPY scenarios, empty.
async fn reset(cluster: &Cluster) {
    let su = cluster.superuser("app").await.unwrap();
    su.batch_execute(
        "DROP TABLE IF EXISTS ct; CREATE TABLE ct(x int); ALTER TABLE ct OWNER TO app",
    )
    .await
    .unwrap();
}

/// Logs in to Postgres itself as `app` over TCP (SCRAM-SHA-256), as a driver would.
pub async fn direct_login(cluster: &Cluster) -> TcpStream {
    let mut raw = TcpStream::connect((cluster.host(), cluster.port()))
        .await
        .unwrap();
    send_startup(&mut raw, 0, b"user\0app\0database\0app\0\0").await;
    let (tag, body) = read_message(&mut raw).await;
    assert_eq!((tag, &body[..4]), (b'R', &[0, 0, 0, 10][..]), "SASL asked");
    let mut scram = ScramSha256::new(b"app", ChannelBinding::unsupported());
    let mut first = b"SCRAM-SHA-256\0".to_vec();
    first.extend(i32::try_from(scram.message().len()).unwrap().to_be_bytes());
    first.extend(scram.message());
    raw.write_all(&message(b'p', &first)).await.unwrap();
    let (_, body) = read_message(&mut raw).await;
    scram.update(&body[4..]).unwrap();
    raw.write_all(&message(b'p', scram.message()))
        .await
        .unwrap();
    let (_, body) = read_message(&mut raw).await;
    scram.finish(&body[4..]).unwrap();
    read_reply(&mut raw).await;
    raw
}

/// The [`SETTINGS`] row of a fresh direct connection.
async fn baseline(cluster: &Cluster) -> String {
    let mut raw = direct_login(cluster).await;
    raw.write_all(&crate::raw::query(SETTINGS)).await.unwrap();
    let row = read_until(&mut raw, Until::Ready(1), |tag, body| {
        (tag == b'D').then(|| columns(body).join(""))
    });
    row.await
}

/// A broker started for one run, with its churning clients in transaction mode.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    churn: Option<Churn>,
}

impl Running {
    /// Starts a broker in front of `cluster` for `target` (not [`Target::Direct`]).
    pub async fn start(cluster: &Cluster, target: Target, clients: usize) -> Running {
        let mut config = crate::common::config_for(cluster);
        crate::raw::cleartext_one_server(&mut config);
        config.pool.borrow_timeout = Duration::from_secs(2);
        match target {
            Target::Transaction { servers, capacity } => {
                config.pool.size = servers;
                config.pool.prepared_statements_per_server = capacity;
            }
            _ => {
                config.pool.size = clients.max(1);
                config.pool.mode = pgbroker::config::PoolMode::Session;
            }
        }
        let broker = Broker::bind(config).await.expect("bind broker");
        let addr = broker.local_addr().unwrap();
        let shutdown = broker.shutdown_token();
        let handle = tokio::spawn(broker.run_until(std::future::pending()));
        let churn = match target {
            Target::Transaction { .. } => Some(Churn::start(addr, &baseline(cluster).await)),
            _ => None,
        };
        Running {
            addr,
            shutdown,
            handle,
            churn,
        }
    }

    /// Stops the churn and the broker; notes a setting that leaked to a churning client,
    /// or a broker that did not stop. Returns the churn's rounds.
    pub async fn stop(self, out: &mut Vec<String>) -> usize {
        let mut rounds = 0;
        if let Some(churn) = self.churn {
            let report = churn.stop().await;
            rounds = report.rounds;
            out.extend(
                report
                    .leaks
                    .iter()
                    .map(|l| format!("<LEAKED TO ANOTHER CLIENT: {l}>")),
            );
        }
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
        if stopped.is_err() {
            out.push("<BROKER DID NOT STOP>".into());
        }
        rounds
    }
}
