//! The byte streams the agent-facing server runs on: plain TCP and TLS over
//! TCP, behind one trait so the connection loop is written once.
//!
//! Every read and write carries its own time limit. Writes use the socket's
//! own (glommio) write timeout. Reads of a [`Queued`] socket race a timer
//! instead: such a read may complete without glommio (bytes already queued),
//! which would leave a socket read timer of glommio's armed with a stale
//! deadline. Under TLS one read of plaintext may take many socket reads (a
//! record trickled in a byte at a time); the timer bounds the whole read.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;

use toolgate_net::queued::Queued;
use toolgate_net::tls::PeerNames;

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

    /// Whether the client has closed the connection (or it broke), seen
    /// without reading anything: a peek at the socket that never waits.
    fn peer_closed(&self) -> bool;
}

/// [`Conn::peer_closed`] of the socket `fd`: the end of its stream is next
/// (the client sent its FIN), or the socket is in error.
fn closed(fd: std::os::fd::RawFd) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    let mut byte = [0u8; 1];
    match recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Ok(0) => true,
        Ok(_) => false,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
        Err(_) => true,
    }
}

impl Conn for TcpStream {
    async fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        self.set_read_timeout(Some(limit))?;
        self.read(buf).await
    }

    async fn write_all_within(&mut self, data: &[u8], limit: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(limit))?;
        self.write_all(data).await?;
        self.flush().await
    }

    fn peer_closed(&self) -> bool {
        closed(self.as_raw_fd())
    }
}

/// Reads into `buf` unless `limit` passes first (then `TimedOut`).
async fn read_timed<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    limit: Duration,
) -> io::Result<usize> {
    let read = async { r.read(buf).await.map_err(glommio::GlommioError::from) };
    glommio::timer::timeout(limit, read)
        .await
        .map_err(|e| match e {
            glommio::GlommioError::IoError(e) => e,
            _ => io::Error::new(io::ErrorKind::TimedOut, "read timed out"),
        })
}

impl Conn for Queued<TcpStream> {
    async fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        read_timed(self, buf, limit).await
    }

    async fn write_all_within(&mut self, data: &[u8], limit: Duration) -> io::Result<()> {
        self.get_ref().set_write_timeout(Some(limit))?;
        self.write_all(data).await?;
        self.flush().await
    }

    fn peer_closed(&self) -> bool {
        closed(self.get_ref().as_raw_fd())
    }
}

impl Conn for TlsStream<Queued<TcpStream>> {
    async fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        read_timed(self, buf, limit).await
    }

    async fn write_all_within(&mut self, data: &[u8], limit: Duration) -> io::Result<()> {
        self.get_ref().0.get_ref().set_write_timeout(Some(limit))?;
        self.write_all(data).await?;
        self.flush().await
    }

    fn peer_closed(&self) -> bool {
        closed(self.get_ref().0.get_ref().as_raw_fd())
    }
}
