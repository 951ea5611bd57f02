//! JSON-RPC framing on a byte stream.
//!
//! RFC 7047 §4 sends JSON-RPC messages back to back on a stream, with no
//! delimiter: a message ends where its top-level object closes. [`Framer`]
//! finds those ends with a brace scanner that understands strings and
//! escapes, so a `}` inside a string never ends a message.
//!
//! Invariants:
//! - the scanner state (`pos`, `depth`, `in_string`, `escape`) always
//!   describes `buf[..pos]`, so every byte is scanned once even when a large
//!   message arrives in many reads (no quadratic re-parse);
//! - between messages only JSON whitespace is accepted; anything else is a
//!   protocol error, reported once, after which the connection must close;
//! - a message larger than `max_len` is an error rather than unbounded memory.

/// Errors of the framer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum FrameError {
    /// unexpected byte {0:#04x} between JSON-RPC messages (expected `{{`)
    Garbage(u8),
    /// JSON-RPC message longer than {0} bytes
    TooLong(usize),
    /// JSON nesting deeper than {0}
    TooDeep(usize),
}

/// Incremental splitter of a byte stream into complete JSON texts.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    pos: usize,
    /// Start of the message being scanned (index into `buf`).
    start: Option<usize>,
    depth: usize,
    in_string: bool,
    escape: bool,
    max_len: usize,
}

/// Deepest nesting accepted; OVSDB values are shallow (a map of sets is ~6).
const MAX_DEPTH: usize = 128;

impl Framer {
    /// A framer that refuses messages longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Framer {
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            start: None,
            depth: 0,
            in_string: false,
            escape: false,
            max_len,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether a message has started but not ended (a close now would cut it).
    pub fn in_message(&self) -> bool {
        self.start.is_some()
    }

    /// Returns the next complete JSON text, if the buffer holds one.
    ///
    /// # Errors
    ///
    /// [`FrameError`] when the stream is not a sequence of JSON objects or
    /// arrays, or a message exceeds the length limit.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.start.is_none() {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.start = Some(self.pos - 1);
                        self.depth = 1;
                        continue;
                    }
                    other => return Err(FrameError::Garbage(other)),
                }
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(FrameError::TooDeep(MAX_DEPTH));
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let start = self.start.take().expect("in a message");
                        let frame = self.buf[start..self.pos].to_vec();
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                        return Ok(Some(frame));
                    }
                }
                _ => {}
            }
        }
        // Drop leading whitespace so an idle stream does not grow the buffer.
        if self.start.is_none() {
            self.buf.clear();
            self.pos = 0;
        } else if self.buf.len() > self.max_len {
            return Err(FrameError::TooLong(self.max_len));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<String> {
        let mut f = Framer::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(m) = f.next_frame().unwrap() {
                out.push(String::from_utf8(m).unwrap());
            }
        }
        out
    }

    #[test]
    fn test_back_to_back() {
        assert_eq!(
            frames(&[b"{\"a\":1}{\"b\":[2,{}]}\n  {\"c\":3}"]),
            vec!["{\"a\":1}", "{\"b\":[2,{}]}", "{\"c\":3}"]
        );
    }

    #[test]
    fn test_braces_in_strings_and_escapes() {
        let msg = br#"{"s":"}{\"]\\","t":"\\"}"#;
        assert_eq!(frames(&[msg]), vec![String::from_utf8(msg.to_vec()).unwrap()]);
    }

    #[test]
    fn test_split_everywhere() {
        let msg = br#"{"id":1,"result":{"x":"a\"}b","y":[1,2,{"z":"\\"}]}}"#;
        for i in 0..msg.len() {
            let got = frames(&[&msg[..i], &msg[i..]]);
            assert_eq!(got.len(), 1, "split at {i}");
            let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
            assert_eq!(v["result"]["x"], "a\"}b");
        }
    }

    #[test]
    fn test_garbage() {
        let mut f = Framer::new(100);
        f.push(b"  hello");
        assert_eq!(f.next_frame(), Err(FrameError::Garbage(b'h')));
    }

    #[test]
    fn test_too_long() {
        let mut f = Framer::new(8);
        f.push(b"{\"aaaaaaaaaaaaaaa");
        assert_eq!(f.next_frame(), Err(FrameError::TooLong(8)));
    }
}
