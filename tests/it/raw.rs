//! Raw protocol helpers: hand-built frontend messages over a plain socket, for what
//! no driver sends (hostile frames, unnamed statements across clients, lone Flush).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::Harness;

/// Logs in over a raw socket with cleartext auth; returns the socket after ReadyForQuery.
pub async fn raw_login(h: &Harness) -> tokio::net::TcpStream {
    raw_login_with_key(h).await.0
}

/// [`raw_login`], also returning the cancel key (pid, secret) the broker sent in its
/// BackendKeyData.
pub async fn raw_login_with_key(h: &Harness) -> (tokio::net::TcpStream, (i32, i32)) {
    raw_login_at(h.addr).await
}

/// [`raw_login_with_key`] to a broker listening on `addr` (one not started by a [`Harness`]).
pub async fn raw_login_at(addr: std::net::SocketAddr) -> (tokio::net::TcpStream, (i32, i32)) {
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    send_startup(&mut raw, 0, b"user\0app\0database\0app\0\0").await;
    let mut request = [0u8; 9];
    raw.read_exact(&mut request).await.unwrap();
    assert_eq!(
        request,
        [b'R', 0, 0, 0, 8, 0, 0, 0, 3],
        "cleartext password request"
    );
    raw.write_all(b"p\0\0\0\x08app\0").await.unwrap();
    let mut key = None;
    loop {
        match read_message(&mut raw).await {
            (b'K', body) => {
                let word = |at: usize| i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                key = Some((word(0), word(4)));
            }
            (b'Z', _) => return (raw, key.expect("BackendKeyData before ReadyForQuery")),
            _ => {}
        }
    }
}

/// Sends a protocol 3.`minor` StartupMessage with `params` (NUL-separated, list-terminated).
pub async fn send_startup(raw: &mut tokio::net::TcpStream, minor: u8, params: &[u8]) {
    let mut packet = u32::try_from(params.len() + 8)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    packet.extend_from_slice(&[0, 3, 0, minor]);
    packet.extend_from_slice(params);
    raw.write_all(&packet).await.unwrap();
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse of the unnamed statement, no parameter types.
pub fn parse_unnamed(sql: &str) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    message(b'P', &body)
}

/// Bind unnamed portal to unnamed statement, Execute it, Sync.
pub fn bind_execute_sync() -> Vec<u8> {
    let mut m = message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]);
    m.extend(message(b'E', &[0, 0, 0, 0, 0]));
    m.extend(message(b'S', &[]));
    m
}

/// Reads one whole message: its tag and its body.
pub async fn read_message(raw: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    raw.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    raw.read_exact(&mut body).await.unwrap();
    (header[0], body)
}

/// Reads up to ReadyForQuery; returns the tags and all bodies.
pub async fn read_reply(raw: &mut tokio::net::TcpStream) -> (Vec<u8>, Vec<u8>) {
    let (mut tags, mut bodies) = (Vec::new(), Vec::new());
    loop {
        let (tag, body) = read_message(raw).await;
        tags.push(tag);
        bodies.extend_from_slice(&body);
        if tag == b'Z' {
            return (tags, bodies);
        }
    }
}

pub fn cleartext_one_server(c: &mut pgbroker::Config) {
    c.pool.size = 1;
    c.pool.borrow_timeout = Duration::from_millis(500);
    c.users[0].auth_method = Some(pgbroker::config::AuthMethod::Password);
}

// Extended-protocol messages and what is read back, for the named-statement tests.

pub fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut body = format!("{name}\0{sql}\0").into_bytes();
    body.extend_from_slice(&u16::try_from(types.len()).unwrap().to_be_bytes());
    for oid in types {
        body.extend_from_slice(&oid.to_be_bytes());
    }
    message(b'P', &body)
}
pub fn bind(statement: &str, params: &[&str]) -> Vec<u8> {
    let mut body = format!("\0{statement}\0").into_bytes();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&u16::try_from(params.len()).unwrap().to_be_bytes());
    for p in params {
        body.extend_from_slice(&u32::try_from(p.len()).unwrap().to_be_bytes());
        body.extend_from_slice(p.as_bytes());
    }
    body.extend_from_slice(&[0, 0]);
    message(b'B', &body)
}
pub fn close_statement(name: &str) -> Vec<u8> {
    message(b'C', format!("S{name}\0").as_bytes())
}
pub fn execute() -> Vec<u8> {
    message(b'E', &[0, 0, 0, 0, 0])
}
pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}
pub fn flush() -> Vec<u8> {
    message(b'H', &[])
}
pub fn query(sql: &str) -> Vec<u8> {
    message(b'Q', format!("{sql}\0").as_bytes())
}
/// A field of an ErrorResponse body.
pub fn field(body: &[u8], code: u8) -> String {
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&code))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

pub fn describe_statement(name: &str) -> Vec<u8> {
    message(b'D', format!("S{name}\0").as_bytes())
}

/// How a test transcript shows one server message: its tag, `E:<SQLSTATE>`, `D:<first
/// column>`, `C[<command tag>]`, and with `status` `Z<status>`; `None` for ParameterStatus
/// and notices.
pub fn token(tag: u8, body: &[u8], status: bool) -> Option<String> {
    Some(match tag {
        b'E' => format!("E:{}", field(body, b'C')),
        b'D' => {
            let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
            let value = usize::try_from(len).map_or("NULL".into(), |len| {
                String::from_utf8_lossy(&body[6..6 + len]).into_owned()
            });
            format!("D:{value}")
        }
        b'C' => format!("C[{}]", String::from_utf8_lossy(&body[..body.len() - 1])),
        b'Z' if status => format!("Z{}", char::from(body[0])),
        b'N' | b'S' => return None,
        tag => char::from(tag).to_string(),
    })
}
