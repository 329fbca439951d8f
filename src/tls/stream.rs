//! A socket that is plain TCP or TLS over it, and its read and write halves for the
//! forwarding loop. The plain case keeps tokio's borrowed TCP halves (no lock, and the
//! readiness wait that lets an idle client hold no read buffer); the TLS case shares the
//! session between the halves through tokio's split.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp;
use tokio::net::TcpStream;

/// Plain TCP, or a TLS session `T` over it.
#[derive(Debug)]
pub enum Stream<T> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (boxed: a session is a few hundred bytes an idle plain client need not carry).
    Tls(Box<T>),
    /// Neither, for the moment the socket is handed to a TLS handshake; I/O on it fails.
    Upgrading,
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadPart<'a, T> {
    /// Of plain TCP.
    Plain(tcp::ReadHalf<'a>),
    /// Of a TLS session.
    Tls(tokio::io::ReadHalf<&'a mut T>),
    /// Of a socket being upgraded: reads fail.
    Closed,
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WritePart<'a, T> {
    /// Of plain TCP.
    Plain(tcp::WriteHalf<'a>),
    /// Of a TLS session.
    Tls(tokio::io::WriteHalf<&'a mut T>),
    /// Of a socket being upgraded: writes fail.
    Closed,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream<T> {
    /// Splits it for reading and writing at once.
    pub fn split(&mut self) -> (ReadPart<'_, T>, WritePart<'_, T>) {
        match self {
            Stream::Plain(tcp) => {
                let (r, w) = tcp.split();
                (ReadPart::Plain(r), WritePart::Plain(w))
            }
            Stream::Tls(tls) => {
                let (r, w) = tokio::io::split(&mut **tls);
                (ReadPart::Tls(r), WritePart::Tls(w))
            }
            Stream::Upgrading => (ReadPart::Closed, WritePart::Closed),
        }
    }

    /// True for a TLS session.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl<T> Stream<T> {
    /// True when nothing waits to be read and the peer has not closed: the socket of an
    /// idle connection that may be handed out again. Never blocks. (Plain: a byte that
    /// was there is consumed, but such a connection is discarded anyway.)
    pub fn is_quiet(&self) -> bool
    where
        T: HasTcp,
    {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.tcp(),
            Stream::Upgrading => return false,
        };
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tcp.poll_peek(&mut cx, &mut probe).is_pending()
    }
}

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "socket handed to a TLS handshake",
    )
}

/// A TLS session that can show its TCP socket.
pub trait HasTcp {
    /// The socket under the session.
    fn tcp(&self) -> &TcpStream;
}

impl HasTcp for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl HasTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl<'a, T> ReadPart<'a, T> {
    /// The plain TCP half, whose readiness can be awaited without reading.
    pub fn plain(&mut self) -> Option<&mut tcp::ReadHalf<'a>> {
        match self {
            ReadPart::Plain(r) => Some(r),
            ReadPart::Tls(_) | ReadPart::Closed => None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadPart<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadPart::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadPart::Tls(r) => Pin::new(r).poll_read(cx, buf),
            ReadPart::Closed => Poll::Ready(Err(upgrading())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WritePart<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WritePart::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WritePart::Tls(w) => Pin::new(w).poll_write(cx, buf),
            WritePart::Closed => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WritePart::Plain(w) => Pin::new(w).poll_flush(cx),
            WritePart::Tls(w) => Pin::new(w).poll_flush(cx),
            WritePart::Closed => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WritePart::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WritePart::Tls(w) => Pin::new(w).poll_shutdown(cx),
            WritePart::Closed => Poll::Ready(Err(upgrading())),
        }
    }
}
