//! How the upstream client reaches its upstream: TCP (production), or an
//! in-memory pipe to an HTTP server in the same process, so the whole
//! pipeline can be driven without sockets (in-process tests, benchmarks).
//! Both go through the same pooled client, TLS layer and timeouts.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens one in-memory connection: returns the client's end of a pipe whose
/// other end some server in the process serves.
pub type Dial = Arc<dyn Fn() -> io::Result<DuplexStream> + Send + Sync>;

#[derive(Clone)]
pub enum Connector {
    Tcp(HttpConnector),
    Memory(Dial),
}

/// One connection, of either kind.
pub enum Io {
    Tcp(TokioIo<TcpStream>),
    Memory(TokioIo<DuplexStream>),
}

impl tower_service::Service<Uri> for Connector {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Connector::Tcp(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Memory(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Connector::Tcp(c) => {
                let connecting = c.call(uri);
                Box::pin(async move { Ok(Io::Tcp(connecting.await?)) })
            }
            Connector::Memory(dial) => {
                let r = dial().map(|s| Io::Memory(TokioIo::new(s)));
                Box::pin(async move { Ok(r?) })
            }
        }
    }
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        match self {
            Io::Tcp(s) => s.connected(),
            Io::Memory(_) => Connected::new(),
        }
    }
}

impl Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Memory(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}
