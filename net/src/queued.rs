//! Reading what the kernel already holds before asking io_uring to wait.
//!
//! glommio reads a socket with a nonblocking `recv` and, when nothing is
//! there (or after a partial read), arms an io_uring poll that completes
//! when bytes arrive. A poll completing while the shard is busy costs a
//! task-work interrupt (an IPI when the sender runs on another CPU) — about
//! one and a half per call under load, more than the rest of the call's
//! kernel work. [`Queued`] wraps a socket so that a read first takes what is
//! queued; if nothing is, it lets the shard's other runnable tasks go first
//! and looks once more; only then does it wait through glommio. Under load
//! the next request or response has usually arrived by then and no poll is
//! armed; when idle, the cost is two `recv` calls that find nothing. TLS
//! streams wrap a [`Queued`] socket, so their record reads get the same.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

/// What a nonblocking `recv` found: bytes (or end of stream, `Ok(0)`), an
/// error, or `None` when nothing is queued.
fn try_recv(fd: &impl AsRawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
        Ok(n) => Some(Ok(n)),
        Err(Errno::EAGAIN | Errno::EINTR) => None,
        Err(e) => Some(Err(io::Error::from(e))),
    }
}

/// A socket whose reads take what is queued before waiting (module doc).
/// Writes go straight to the socket.
///
/// Never set a read timeout of glommio's on the wrapped socket: a read that
/// completes here, without glommio, leaves glommio's timer armed with its
/// old deadline, to fail a later read early. Bound reads with a timer
/// around them instead.
#[derive(Debug)]
pub struct Queued<S> {
    inner: S,
    /// The last read found nothing and yielded once; the next one that
    /// finds nothing waits through the socket.
    yielded: bool,
}

impl<S> Queued<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            yielded: false,
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + AsRawFd + Unpin> AsyncRead for Queued<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(r) = try_recv(&this.inner, buf) {
            this.yielded = false;
            return Poll::Ready(r);
        }
        if !this.yielded {
            // Back of the run queue: the shard's other tasks go first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Queued<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn queued_bytes_are_read_and_an_empty_socket_reports_none() -> io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        let mut buf = [0u8; 16];
        assert!(try_recv(&server, &mut buf).is_none(), "nothing sent yet");
        client.write_all(b"hello")?;
        let mut got = None;
        for _ in 0..1000 {
            got = try_recv(&server, &mut buf);
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got.map(|r| r.ok()), Some(Some(5)));
        assert_eq!(&buf[..5], b"hello");
        drop(client);
        let mut eof = None;
        for _ in 0..1000 {
            eof = try_recv(&server, &mut buf);
            if eof.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(eof.map(|r| r.ok()), Some(Some(0)), "end of stream is Ok(0)");
        Ok(())
    }
}
