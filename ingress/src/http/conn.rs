//! The byte streams the agent-facing server runs on: plain TCP and TLS over
//! TCP, behind one trait so the connection loop is written once.
//!
//! Every read and write carries its own time limit. On plain TCP that is the
//! socket's io_uring timeout. Under TLS one read of plaintext may take many
//! socket reads (a record trickled in a byte at a time), so the TLS read is
//! additionally raced against a timer: the limit holds for the whole read,
//! not per socket read.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;

use crate::tls::PeerNames;

/// What the connection loop knows about the connection it serves.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub secure: bool,
    /// Names of the verified client certificate, when one was presented.
    pub client_names: Option<PeerNames>,
}

/// A stream the connection loop reads requests from and writes answers to.
pub trait Conn: AsyncRead + AsyncWrite + Unpin {
    /// Reads some bytes into `buf` (0 at end of stream); `TimedOut` once
    /// `limit` passes without any.
    fn read_within(
        &mut self,
        buf: &mut [u8],
        limit: Duration,
    ) -> impl Future<Output = io::Result<usize>>;

    /// Writes all of `data` and flushes; each socket write may take `limit`.
    fn write_all_within(
        &mut self,
        data: &[u8],
        limit: Duration,
    ) -> impl Future<Output = io::Result<()>>;
}

impl Conn for TcpStream {
    async fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        if let Some(r) = super::queued::read_queued(self, buf).await {
            return r;
        }
        self.set_read_timeout(Some(limit))?;
        self.read(buf).await
    }

    async fn write_all_within(&mut self, data: &[u8], limit: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(limit))?;
        self.write_all(data).await?;
        self.flush().await
    }
}

impl Conn for TlsStream<TcpStream> {
    async fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        self.get_ref().0.set_read_timeout(Some(limit))?;
        let read = async { self.read(buf).await.map_err(glommio::GlommioError::from) };
        glommio::timer::timeout(limit, read)
            .await
            .map_err(|e| match e {
                glommio::GlommioError::IoError(e) => e,
                _ => io::Error::new(io::ErrorKind::TimedOut, "read timed out"),
            })
    }

    async fn write_all_within(&mut self, data: &[u8], limit: Duration) -> io::Result<()> {
        self.get_ref().0.set_write_timeout(Some(limit))?;
        self.write_all(data).await?;
        self.flush().await
    }
}
