//! Finding a JSON-RPC reply's `id` without parsing the rest of the message.
//!
//! An upstream's answer is matched to its request before it is parsed in
//! full (once, by the call that keeps it). A full parse just to read the
//! `id` costs as much as the answer is large; this scan reads the top-level
//! members and skips the values it does not need — strings with `memchr`,
//! containers by counting brackets — so a reply whose `id` comes before a
//! large `result` costs a few dozen bytes. It does not validate the message.

/// The `id` of a JSON-RPC reply: `Some` when `message` is a top-level
/// object with a `result` or `error` member and an unsigned integer `id`.
/// Keys are compared as written (an escaped `"i\u0064"` is not `id`), and
/// nothing else is validated: the caller parses what it keeps, and refuses
/// a document that is not JSON then.
pub fn reply_id(message: &[u8]) -> Option<u64> {
    let mut s = Scan { b: message, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let mut id = None;
    let mut reply = false;
    s.ws();
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        s.ws();
        let key = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            b"id" => {
                id = s.uint();
                if id.is_none() {
                    s.skip_value()?;
                }
            }
            b"result" | b"error" => {
                reply = true;
                if id.is_some() {
                    return id;
                }
                s.skip_value()?;
            }
            _ => s.skip_value()?,
        }
        if reply && id.is_some() {
            return id;
        }
        s.ws();
        // The object ended (or broke off) without both: not a reply.
        if s.next()? != b',' {
            return None;
        }
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string at the cursor; returns its raw content (escapes kept).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            let at = memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
            self.i += at;
            if self.b[self.i] == b'\\' {
                self.i += 2;
            } else {
                let s = &self.b[start..self.i];
                self.i += 1;
                return Some(s);
            }
        }
    }

    /// An unsigned integer that ends where a JSON number would (not
    /// followed by a fraction, an exponent or more digits past `u64`).
    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        if self.i == start || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            self.i = start;
            return None;
        }
        Some(v)
    }

    /// Skips one value of any kind.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_found_before_or_after_the_result() {
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#),
            Some(7)
        );
        assert_eq!(
            reply_id(
                br#" { "result" : {"a":[1,{"b":"}]\"x"}],"id":9} , "jsonrpc":"2.0", "id" : 12 } "#
            ),
            Some(12)
        );
        assert_eq!(
            reply_id(br#"{"error":{"code":-32000,"message":"x"},"id":3}"#),
            Some(3)
        );
    }

    #[test]
    fn not_a_reply_or_not_an_integer_id_is_none() {
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#),
            None
        );
        assert_eq!(reply_id(br#"{"id":"7","result":{}}"#), None);
        assert_eq!(reply_id(br#"{"id":7.5,"result":{}}"#), None);
        assert_eq!(reply_id(br#"{"id":-7,"result":{}}"#), None);
        assert_eq!(reply_id(br#"{"id":1e3,"result":{}}"#), None);
        assert_eq!(
            reply_id(br#"{"id":99999999999999999999,"result":{}}"#),
            None
        );
        assert_eq!(reply_id(br#"[{"id":7,"result":{}}]"#), None);
        assert_eq!(reply_id(br#"{"result":{}}"#), None);
        assert_eq!(reply_id(b"{}"), None);
        assert_eq!(reply_id(b""), None);
        assert_eq!(
            reply_id(br#"{"result":{"id":7}}"#),
            None,
            "a nested id is not the reply's"
        );
        assert_eq!(reply_id(br#"{"id":7,"result":"unterminated"#), Some(7));
        assert_eq!(reply_id(br#"{"result":"unterminated,"id":7}"#), None);
    }

    #[test]
    fn agrees_with_a_full_parse_on_generated_replies() {
        // Differential: every reply shape the generator makes gets the id a
        // full parse (serde_json) finds.
        let values = [
            r#"{}"#,
            r#"{"content":[{"type":"text","text":"a \"quoted\" ] } text"}],"isError":false}"#,
            r#"[1,2,[3,{"x":"\\"}]]"#,
            r#""plain""#,
            r#"null"#,
            r#"{"nested":{"id":1,"result":2}}"#,
        ];
        for (n, v) in values.iter().enumerate() {
            for member in ["result", "error"] {
                for id_first in [true, false] {
                    let id = 1000 + n as u64;
                    let doc = if id_first {
                        format!(r#"{{"jsonrpc":"2.0","id":{id},"{member}":{v}}}"#)
                    } else {
                        format!(r#"{{"jsonrpc":"2.0", "{member}" : {v} ,"id":{id}}}"#)
                    };
                    let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
                    assert_eq!(reply_id(doc.as_bytes()), parsed["id"].as_u64(), "{doc}");
                }
            }
        }
    }
}
