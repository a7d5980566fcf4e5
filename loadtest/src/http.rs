//! Just enough HTTP/1.1 for a load generator and a fast upstream: one
//! message at a time, `Content-Length` framing, buffers reused.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection.
    Closed,
    /// Not HTTP, or framing this tool does not handle.
    Malformed,
    /// A socket error.
    Io,
}

/// A message in the buffer: head length, body end, status (responses).
pub struct Message {
    /// Bytes of the head.
    pub head: usize,
    /// End of the body in the buffer.
    pub end: usize,
    /// HTTP status, for responses.
    pub status: u16,
}

async fn fill<S: AsyncRead + Unpin>(conn: &mut S, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    let len = buf.len();
    buf.resize(len + 16 * 1024, 0);
    match conn.read(&mut buf[len..]).await {
        Ok(0) => {
            buf.truncate(len);
            Err(ReadError::Closed)
        }
        Ok(n) => {
            buf.truncate(len + n);
            Ok(())
        }
        Err(_) => {
            buf.truncate(len);
            Err(ReadError::Io)
        }
    }
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<usize, ReadError> {
    let mut len = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::Malformed);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(ReadError::Malformed)?;
        }
    }
    Ok(len)
}

/// Reads one request (`request = true`) or response from `conn` into `buf`.
pub async fn read_message<S: AsyncRead + Unpin>(
    conn: &mut S,
    buf: &mut Vec<u8>,
    request: bool,
) -> Result<Message, ReadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let parsed = if request {
            let mut r = httparse::Request::new(&mut headers);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(n)) => Some((n, content_length(r.headers)?, 0)),
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(ReadError::Malformed),
            }
        } else {
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    Some((n, content_length(r.headers)?, r.code.unwrap_or(0)))
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(ReadError::Malformed),
            }
        };
        match parsed {
            Some((head, len, status)) => {
                while buf.len() < head + len {
                    fill(conn, buf).await?;
                }
                return Ok(Message {
                    head,
                    end: head + len,
                    status,
                });
            }
            None => {
                if buf.len() > 1 << 20 {
                    return Err(ReadError::Malformed);
                }
                fill(conn, buf).await?;
            }
        }
    }
}

/// Writes all of `bytes`.
pub async fn write_all<S: AsyncWrite + Unpin>(conn: &mut S, bytes: &[u8]) -> Result<(), ReadError> {
    conn.write_all(bytes).await.map_err(|_| ReadError::Io)?;
    conn.flush().await.map_err(|_| ReadError::Io)
}
