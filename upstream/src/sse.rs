//! Server-sent events, as upstream MCP servers stream JSON-RPC messages.

/// Calls `on_data` with the data of each complete `message` event in `body`,
/// in order, until it returns `true`; returns whether it did.
pub fn find_event(body: &[u8], on_data: impl FnMut(&[u8]) -> bool) -> bool {
    Events::default().feed(body, on_data)
}

/// An event stream read as it arrives: bytes are fed in whatever pieces
/// they come, and each `message` event is handed on once its blank line
/// has arrived. What it holds is bounded by the caller's body limit: an
/// unfinished line and the data of an unfinished event.
#[derive(Default)]
pub struct Events {
    /// An unfinished line (its bytes came without their end yet).
    line: Vec<u8>,
    /// A `\r` ended the last piece: a `\n` starting the next belongs to it.
    after_cr: bool,
    /// The data of the event being read.
    data: Vec<u8>,
    has_data: bool,
    /// Whether the event being read is a `message` (the default).
    not_message: bool,
}

impl Events {
    /// Reads `bytes`, calling `on_data` with each `message` event completed
    /// by them, in order, until it returns `true`; returns whether it did
    /// (the rest of `bytes` is then not read).
    pub fn feed(&mut self, bytes: &[u8], mut on_data: impl FnMut(&[u8]) -> bool) -> bool {
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(r) = rest.strip_prefix(b"\n") {
                rest = r;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let crlf = rest[end] == b'\r';
            let mut next = end + 1;
            if crlf {
                match rest.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let done = if self.line.is_empty() {
                self.line_done(&rest[..end], &mut on_data)
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..end]);
                let done = self.line_done(&line, &mut on_data);
                line.clear();
                self.line = line;
                done
            };
            rest = &rest[next..];
            if done {
                return true;
            }
        }
        self.line.extend_from_slice(rest);
        false
    }

    /// One complete line; true when `on_data` took the event it ended.
    fn line_done(&mut self, line: &[u8], on_data: &mut impl FnMut(&[u8]) -> bool) -> bool {
        if line.is_empty() {
            let taken = self.has_data && !self.not_message && on_data(&self.data);
            self.data.clear();
            self.has_data = false;
            self.not_message = false;
            return taken;
        }
        if line[0] == b':' {
            return false;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.not_message = value != b"message",
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(body: &str) -> Vec<String> {
        let mut out = Vec::new();
        find_event(body.as_bytes(), |d| {
            out.push(String::from_utf8_lossy(d).into_owned());
            false
        });
        out
    }

    #[test]
    fn events_with_crlf_comments_and_multiline_data() {
        let body = ": ping\r\n\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nid: 3\ndata: {}\n\nevent: other\ndata: x\n\ndata: tail";
        assert_eq!(
            events(body),
            vec!["{\"a\":\n1}".to_owned(), "{}".to_owned()]
        );
    }

    #[test]
    fn stops_at_the_first_accepted_event() {
        let mut seen = 0;
        let found = find_event(b"data: 1\n\ndata: 2\n\ndata: 3\n\n", |d| {
            seen += 1;
            d == b"2"
        });
        assert!(found);
        assert_eq!(seen, 2);
    }

    #[test]
    fn the_same_events_however_the_stream_is_cut() {
        let body = ": ping\r\n\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nid: 3\ndata: {}\r\rdata: x\n\nevent: other\ndata: y\n\ndata: tail";
        let whole = events(body);
        assert_eq!(whole.len(), 3, "{whole:?}");
        for cut in 0..body.len() {
            for step in [1, 2, 3, 7] {
                let mut e = Events::default();
                let mut got = Vec::new();
                let bytes = body.as_bytes();
                let mut pieces = vec![&bytes[..cut]];
                pieces.extend(bytes[cut..].chunks(step));
                for p in pieces {
                    e.feed(p, |d| {
                        got.push(String::from_utf8_lossy(d).into_owned());
                        false
                    });
                }
                assert_eq!(got, whole, "cut at {cut}, step {step}");
            }
        }
    }
}
