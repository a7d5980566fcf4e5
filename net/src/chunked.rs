//! Incremental decoder of `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1).
//!
//! Fed whatever bytes have arrived; keeps its place between calls, so a body
//! trickling in one byte at a time costs linear work. Chunk extensions are
//! skipped; trailers are read and discarded. Sizes are checked against the
//! caller's limit before any byte of the chunk is buffered.

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Not valid chunked framing.
    #[error("malformed chunked body")]
    Malformed,
    /// The decoded body exceeds the limit.
    #[error("chunked body too large")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf { blank: bool },
    Done,
}

/// Longest chunk-extension or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Decoder state for one body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    max: usize,
    size: u64,
    digits: u8,
    line: usize,
}

impl ChunkedDecoder {
    /// A decoder refusing bodies over `max` decoded bytes.
    pub fn new(max: usize) -> Self {
        Self {
            state: State::Size,
            max,
            size: 0,
            digits: 0,
            line: 0,
        }
    }

    /// Whether the terminating chunk and trailers were seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending data to `out`; returns bytes consumed.
    /// Stops at the end of the body: bytes after it are not consumed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 15 {
                            return Err(ChunkError::TooLarge);
                        }
                        let d = match b {
                            b'0'..=b'9' => b - b'0',
                            b'a'..=b'f' => b - b'a' + 10,
                            _ => b - b'A' + 10,
                        };
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                        if out.len() as u64 + self.size > self.max as u64 {
                            return Err(ChunkError::TooLarge);
                        }
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => {
                        self.line = 0;
                        self.state = State::Extension;
                    }
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Malformed),
                },
                State::Extension => {
                    self.line += 1;
                    if self.line > MAX_LINE || b == b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.digits = 0;
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::TrailerLf { blank: true },
                    b'\n' => return Err(ChunkError::Malformed),
                    _ => {
                        self.line = 1;
                        self.state = State::TrailerLine;
                    }
                },
                State::TrailerLine => {
                    self.line += 1;
                    if self.line > MAX_LINE || b == b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    if b == b'\r' {
                        self.state = State::TrailerLf { blank: false };
                    }
                }
                State::TrailerLf { blank } => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    if blank {
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    self.state = State::TrailerStart;
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(
        input: &[u8],
        piece: usize,
        max: usize,
    ) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let mut used = 0;
        for chunk in input.chunks(piece) {
            used += d.feed(chunk, &mut out)?;
            if d.is_done() {
                return Ok((out, used));
            }
        }
        Err(ChunkError::Malformed)
    }

    #[test]
    fn body_split_across_any_reads_decodes_the_same() {
        let wire =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in 1..wire.len() {
            let (body, used) = decode_in_pieces(wire, piece, 1024).unwrap_or_default();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "piece {piece}");
            assert_eq!(&wire[used..], b"NEXT", "piece {piece}");
        }
    }

    #[test]
    fn oversize_chunk_is_refused_before_buffering() {
        assert_eq!(
            decode_in_pieces(b"fffff\r\n", 64, 1024).err(),
            Some(ChunkError::TooLarge)
        );
        assert_eq!(
            decode_in_pieces(b"ffffffffffffffffff\r\n", 64, usize::MAX).err(),
            Some(ChunkError::TooLarge)
        );
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\r\nWikiXX",
            b"4\nWiki\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(
                decode_in_pieces(bad, 64, 1024).err(),
                Some(ChunkError::Malformed),
                "{bad:?}"
            );
        }
    }
}
