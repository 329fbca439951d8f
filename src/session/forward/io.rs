//! The cancel-safe reads and writes the forwarding loop's `select!` waits on.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::{ReadPart, WritePart};

/// The client read buffer allocated when a silent client speaks again.
const READ_START: usize = 8192;

/// Reads client bytes. With no buffer (an idle session gave it back) a plain client's
/// socket is first waited on until readable, so a client that stays silent holds no read
/// buffer (a TLS session reads into one at once: its records are decrypted in rustls's own
/// buffers anyway). Cancel-safe: `readable` is, and the read itself does not wait.
pub(super) async fn client_read<T: AsyncRead + Unpin>(
    r: &mut ReadPart<'_, T>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() > buf.len() {
        return r.read_buf(buf).await;
    }
    let Some(plain) = r.plain() else {
        buf.reserve(READ_START);
        return r.read_buf(buf).await;
    };
    loop {
        plain.readable().await?;
        buf.reserve(READ_START);
        match plain.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// Writes some of `buf`, or, with nothing left in it, flushes what a TLS session still
/// holds of the bytes written before. Returns how many bytes of `buf` went (0 for a flush).
/// Cancel-safe.
pub(super) async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &BytesMut,
) -> std::io::Result<usize> {
    if buf.is_empty() {
        w.flush().await?;
        return Ok(0);
    }
    w.write(buf).await
}

/// [`send`] to the server, if one is held. Cancel-safe.
pub(super) async fn server_send<T: AsyncWrite + Unpin>(
    server: &mut Option<WritePart<'_, T>>,
    buf: &BytesMut,
) -> std::io::Result<usize> {
    match server {
        Some(w) => send(w, buf).await,
        None => std::future::pending().await,
    }
}

/// Reads server bytes into its buffer, if one is held. Cancel-safe.
pub(super) async fn server_read<T: AsyncRead + Unpin>(
    server: &mut Option<(ReadPart<'_, T>, &mut BytesMut)>,
) -> std::io::Result<usize> {
    match server {
        Some((r, buf)) => r.read_buf(*buf).await,
        None => std::future::pending().await,
    }
}
