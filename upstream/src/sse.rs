//! Server-sent events, as upstream MCP servers stream JSON-RPC messages.

/// Calls `on_data` with the data of each complete `message` event in `body`,
/// in order, until it returns `true`; returns whether it did.
pub fn find_event(body: &[u8], mut on_data: impl FnMut(&[u8]) -> bool) -> bool {
    let mut data: Vec<u8> = Vec::new();
    let mut has_data = false;
    let mut event_is_message = true;
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let mut next = end;
        if next < rest.len() {
            next += if rest[next] == b'\r' && rest.get(next + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
        } else {
            // An unterminated last line is not a complete event.
            break;
        }
        rest = &rest[next..];
        if line.is_empty() {
            if has_data && event_is_message && on_data(&data) {
                return true;
            }
            data.clear();
            has_data = false;
            event_is_message = true;
            continue;
        }
        if line[0] == b':' {
            continue;
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
                if has_data {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                has_data = true;
            }
            b"event" => event_is_message = value == b"message",
            _ => {}
        }
    }
    false
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
}
