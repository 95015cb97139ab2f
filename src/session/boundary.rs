//! Where an IMAP byte stream stands, without parsing it: at the start of a line, inside a line, or
//! inside a literal. The relay feeds every chunk through a [`Boundary`] so that, when a session
//! must be closed (its mailbox was disabled), it knows whether a `* BYE` line can be written to
//! the client without landing inside a response or a literal.
//!
//! The cost is one `memchr` for `\n` over response lines; literal data, which is nearly all of a
//! large FETCH, is skipped by arithmetic. On the client side it also notices `COMPRESS`, after
//! which the stream is deflate and no plaintext line may ever be injected.

/// Longest tail of a line kept to recognise a literal announcement (`{` + 20 digits + `+}\r`).
const TAIL: usize = 32;

#[derive(Debug, Default)]
pub struct Boundary {
    literal_left: u64,
    /// Bytes of the current line seen so far (0 = at a line start).
    line_len: u64,
    tail: Vec<u8>,
    /// Client side: how far the current line's command name matches `COMPRESS`.
    head: CommandName,
    /// The stream switched to COMPRESS (or was otherwise lost): no more tracking.
    opaque: bool,
    /// Look for `COMPRESS` commands (client-to-server direction).
    watch_compress: bool,
}

impl Boundary {
    /// Tracker for the backend-to-client direction.
    pub fn responses() -> Boundary {
        Boundary::default()
    }

    /// Tracker for the client-to-backend direction, which also notices COMPRESS.
    pub fn commands() -> Boundary {
        Boundary {
            watch_compress: true,
            ..Boundary::default()
        }
    }

    /// True when the next byte would start a new line, outside any literal.
    pub fn at_line_start(&self) -> bool {
        !self.opaque && self.literal_left == 0 && self.line_len == 0
    }

    /// True once the stream can no longer be followed (COMPRESS is on).
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// Bytes of the current literal not seen yet (responses only; 0 outside a literal).
    pub fn literal_left(&self) -> u64 {
        if self.opaque || self.watch_compress {
            0
        } else {
            self.literal_left
        }
    }

    /// Accounts for `n` bytes of the current literal that moved without being seen (spliced).
    pub fn skip_literal(&mut self, n: u64) {
        debug_assert!(n <= self.literal_left);
        self.literal_left -= n.min(self.literal_left);
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.watch_compress {
            self.feed_commands(chunk);
            return;
        }
        while !self.opaque && !chunk.is_empty() {
            if self.literal_left > 0 {
                let skip = self.literal_left.min(chunk.len() as u64);
                self.literal_left -= skip;
                chunk = &chunk[skip as usize..];
                continue;
            }
            match memchr::memchr(b'\n', chunk) {
                None => {
                    self.remember(chunk);
                    self.line_len += chunk.len() as u64;
                    return;
                }
                Some(pos) => {
                    self.remember(&chunk[..pos]);
                    chunk = &chunk[pos + 1..];
                    match literal_announced(&self.tail) {
                        Some(n) => {
                            self.literal_left = n;
                            self.line_len += pos as u64 + 1;
                        }
                        None => self.end_of_line(),
                    }
                    self.tail.clear();
                }
            }
        }
    }

    /// The client side: every line is checked for `COMPRESS`, literals included. Whether the
    /// server accepted a synchronizing literal is not known here (it may have answered `NO`
    /// instead of `+`), so skipping literal bytes could miss a real COMPRESS; a false match only
    /// costs the courtesy BYE.
    fn feed_commands(&mut self, mut chunk: &[u8]) {
        while !self.opaque && !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                None => {
                    self.remember(chunk);
                    self.line_len += chunk.len() as u64;
                    return;
                }
                Some(pos) => {
                    self.remember(&chunk[..pos]);
                    chunk = &chunk[pos + 1..];
                    self.end_of_line();
                    self.tail.clear();
                }
            }
        }
    }

    fn remember(&mut self, bytes: &[u8]) {
        if self.watch_compress {
            self.head.feed(bytes);
            return;
        }
        if bytes.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - TAIL..]);
        } else {
            self.tail.extend_from_slice(bytes);
            if self.tail.len() > TAIL {
                self.tail.drain(..self.tail.len() - TAIL);
            }
        }
    }

    fn end_of_line(&mut self) {
        if self.watch_compress && self.head.is_compress() {
            self.opaque = true;
        }
        self.head = CommandName::default();
        self.line_len = 0;
    }
}

/// Whether a command line's second word (after the tag, however long) is `COMPRESS`, decided
/// byte by byte in constant space: the tag is skipped, then the name compared as it comes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum CommandName {
    #[default]
    Tag,
    /// This many bytes of `COMPRESS` matched so far.
    Name(u8),
    /// `COMPRESS` and its end (space or CR).
    Compress,
    Other,
}

impl CommandName {
    const NAME: &'static [u8] = b"COMPRESS";

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if matches!(self, CommandName::Compress | CommandName::Other) {
                return;
            }
            *self = match (*self, b) {
                (CommandName::Tag, b' ') => CommandName::Name(0),
                (CommandName::Tag, _) => CommandName::Tag,
                (CommandName::Name(n), _) if usize::from(n) < Self::NAME.len() => {
                    if b.eq_ignore_ascii_case(&Self::NAME[usize::from(n)]) {
                        CommandName::Name(n + 1)
                    } else {
                        CommandName::Other
                    }
                }
                (CommandName::Name(_), b' ' | b'\r') => CommandName::Compress,
                (CommandName::Name(_), _) => CommandName::Other,
                (decided, _) => decided,
            };
        }
    }

    fn is_compress(self) -> bool {
        self == CommandName::Compress || self == CommandName::Name(Self::NAME.len() as u8)
    }
}

use crate::wire::literal_announced;

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(parts: &[&[u8]]) -> Boundary {
        let mut b = Boundary::responses();
        for p in parts {
            b.feed(p);
        }
        b
    }

    #[test]
    fn lines_and_literals() {
        assert!(fed(&[]).at_line_start());
        assert!(fed(&[b"* 3 EXISTS\r\n"]).at_line_start());
        assert!(!fed(&[b"* 3 EXI"]).at_line_start());
        // Inside a literal, even right after a CRLF that belongs to the literal.
        assert!(!fed(&[b"* 1 FETCH (BODY[] {10}\r\n", b"abc\r\n"]).at_line_start());
        // After the literal the line continues to its own CRLF.
        assert!(!fed(&[b"* 1 FETCH (BODY[] {5}\r\nab\r\nc"]).at_line_start());
        assert!(fed(&[b"* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\n", b"a OK done\r\n"]).at_line_start());
        // Split everywhere, one byte at a time.
        let stream = b"* 1 FETCH (BODY[] {12}\r\n0123456789\r\n BODY[1] {3+}\r\nxyz)\r\na1 OK\r\n";
        let fetch_end = stream.windows(3).position(|w| w == b")\r\n").unwrap() + 2;
        let mut b = Boundary::responses();
        for (i, byte) in stream.iter().enumerate() {
            b.feed(std::slice::from_ref(byte));
            let expect = i == fetch_end || i + 1 == stream.len();
            assert_eq!(b.at_line_start(), expect, "after byte {i}");
        }
    }

    #[test]
    fn spliced_literal_bytes_are_skipped() {
        let mut b = Boundary::responses();
        b.feed(b"* 1 FETCH (BODY[] {100000}\r\n0123");
        assert_eq!(b.literal_left(), 99_996);
        b.skip_literal(99_990);
        b.feed(b"456789)\r\n");
        assert!(b.at_line_start());
        assert_eq!(Boundary::commands().literal_left(), 0);
    }

    #[test]
    fn compress_makes_the_client_stream_opaque() {
        let mut b = Boundary::commands();
        b.feed(b"a1 NOOP\r\na2 APPEND INBOX {100000}\r\n");
        assert!(!b.is_opaque());
        // The server may have refused the literal: the next line is a command again.
        b.feed(b"a3 compress DEFLATE\r\n");
        assert!(b.is_opaque());
        assert!(!b.at_line_start());
        // Whatever the tag's length, and however the line is cut.
        let line = format!("{} COMPRESS DEFLATE\r\n", "t".repeat(300));
        for cut in [1, 7, 299, 305] {
            let mut b = Boundary::commands();
            b.feed(&line.as_bytes()[..cut]);
            b.feed(&line.as_bytes()[cut..]);
            assert!(b.is_opaque(), "cut at {cut}");
        }
        for other in ["a COMPRESSX\r\n", "a COMPRES\r\n", "a NOOP COMPRESS\r\n"] {
            let mut b = Boundary::commands();
            b.feed(other.as_bytes());
            assert!(!b.is_opaque(), "{other}");
        }
        let mut b = Boundary::commands();
        b.feed(b"a COMPRESS\n");
        assert!(b.is_opaque());
    }
}
