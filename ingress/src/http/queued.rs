//! Reading what the kernel already holds before asking io_uring to wait.
//!
//! glommio reads a socket with a nonblocking `recv` and, when nothing is
//! there (or after a partial read), arms an io_uring poll that completes
//! when bytes arrive. A poll completing while the shard is busy costs a
//! task-work interrupt (an IPI when the sender runs on another CPU) — about
//! one and a half per call under load, more than the rest of the call's
//! kernel work. So a read here first takes what is queued; if nothing is,
//! it lets the shard's other runnable tasks go first and looks once more;
//! only then does it wait through glommio. Under load the next request or
//! response has usually arrived by then and no poll is armed; when idle,
//! the cost is two `recv` calls that find nothing.

use std::io;
use std::os::fd::AsRawFd;

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

/// Takes what `fd` holds, yielding once to the shard's other tasks if it
/// holds nothing yet; `None` when the caller must wait on the socket.
pub async fn read_queued(fd: &impl AsRawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    if buf.is_empty() {
        return Some(Ok(0));
    }
    if let Some(r) = try_recv(fd, buf) {
        return Some(r);
    }
    futures_lite::future::yield_now().await;
    try_recv(fd, buf)
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
