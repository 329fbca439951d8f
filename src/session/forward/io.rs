//! The cancel-safe reads and writes the forwarding loop's `select!` waits on.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// The client read buffer allocated when a silent client speaks again.
const READ_START: usize = 8192;

/// Reads client bytes. With no buffer (an idle session gave it back) it first waits for
/// the socket to be readable, so a client that stays silent holds no read buffer.
/// Cancel-safe: `readable` is, and the read itself does not wait.
pub(super) async fn client_read(
    r: &mut ReadHalf<'_>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() > buf.len() {
        return r.read_buf(buf).await;
    }
    loop {
        r.readable().await?;
        buf.reserve(READ_START);
        match r.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

pub(super) async fn server_write(
    server: &mut Option<WriteHalf<'_>>,
    buf: &BytesMut,
) -> std::io::Result<usize> {
    match server {
        Some(w) => w.write(buf).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn server_read(
    server: &mut Option<(ReadHalf<'_>, &mut BytesMut)>,
) -> std::io::Result<usize> {
    match server {
        Some((r, buf)) => r.read_buf(*buf).await,
        None => std::future::pending().await,
    }
}
