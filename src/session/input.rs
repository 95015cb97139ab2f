//! What the client sent before login, decided without I/O: [`decode`] looks at the bytes
//! buffered so far and says what the driver must do next. Pure functions, so the fuzz target
//! (`fuzz/fuzz_targets/preauth.rs`) and the property tests exercise exactly what the gate runs.
//!
//! The buffer never exceeds `max` bytes: a synchronizing literal is weighed against the limit
//! before `+` is sent, and a LITERAL+ literal alone over the limit ends the session. A command
//! line that fills the buffer without ending is discarded up to its end by a [`Discard`] (which
//! follows its literals by count, holding nothing), then answered `BAD [TOOBIG]`, as Dovecot
//! does: the session goes on.
//!
//! LOGIN arguments may be atoms with characters IMAP's grammar keeps out of atoms but Dovecot
//! accepts there (`\`, `%`, `*`, `]`, `}`...): Python's imaplib sends `LOGIN EXAMPLE\user "pw"`.
//! Such a LOGIN is read as if those arguments had been quoted ([`relax_login`]).

use imap_codec::decode::{AuthenticateDataDecodeError, CommandDecodeError, Decoder};
use imap_codec::imap_types::auth::AuthenticateData;
use imap_codec::imap_types::command::Command;
use imap_codec::imap_types::core::{IString, LiteralMode, NString};
use imap_codec::{AuthenticateDataCodec, CommandCodec};

/// RFC 2971 limits: 30 pairs, fields of 30 octets, values of 1024.
const ID_MAX_PAIRS: usize = 30;
const ID_MAX_FIELD: usize = 30;
const ID_MAX_VALUE: usize = 1024;

/// The next step for the driver.
#[derive(Debug)]
pub enum Decoded {
    /// A whole command, made of the first `consumed` bytes.
    Command {
        command: Box<Command<'static>>,
        consumed: usize,
    },
    /// Read more (the buffer is below the limit).
    NeedMore,
    /// A synchronizing literal within the limit: send `+`, then read until the buffer holds
    /// `until` bytes (the literal and at least the byte after it) before decoding again.
    Continue { until: usize },
    /// A synchronizing literal over the limit: answer `tag BAD [TOOBIG]` and drop the buffer (the
    /// client sends nothing more of this command without a `+`).
    LiteralTooBig { tag: String },
    /// Over the limit with no way to resynchronize: `* BYE [TOOBIG]` and close.
    TooLong,
    /// A command line longer than the limit: discard the rest of it with a [`Discard`] fed the
    /// buffer first, then answer `tag BAD [TOOBIG]` (the session goes on).
    Overlong { tag: Option<String> },
    /// An unparseable line of `consumed` bytes; its tag when one could be read.
    Bad {
        tag: Option<String>,
        consumed: usize,
    },
    /// An unparseable command that announced a literal: where it ends cannot be known safely
    /// (its literal may hold anything, even lines that look like commands), so the session ends
    /// after `tag BAD` and `* BYE`.
    BadLiteral { tag: Option<String> },
}

pub fn decode(buf: &[u8], max: usize) -> Decoded {
    let strict = decode_strict(buf, max);
    if !matches!(strict, Decoded::Bad { .. } | Decoded::BadLiteral { .. }) {
        return strict;
    }
    // Not IMAP's grammar: perhaps a LOGIN with atoms Dovecot accepts. Its rewritten form is
    // `delta` bytes longer; every position after the rewritten arguments shifts by as much.
    let Some(relaxed) = relax_login(buf) else {
        return strict;
    };
    let delta = relaxed.len() - buf.len();
    match decode_strict(&relaxed, max + delta) {
        Decoded::Command { command, consumed } => Decoded::Command {
            command,
            consumed: consumed - delta,
        },
        Decoded::Continue { until } => Decoded::Continue {
            until: until - delta,
        },
        d @ (Decoded::NeedMore | Decoded::LiteralTooBig { .. }) => d,
        _ => strict,
    }
}

fn decode_strict(buf: &[u8], max: usize) -> Decoded {
    match CommandCodec::new().decode_static(buf) {
        Ok((rest, command)) => Decoded::Command {
            command: Box::new(command),
            consumed: buf.len() - rest.len(),
        },
        Err(CommandDecodeError::Incomplete) if buf.len() >= max => overlong(buf),
        Err(CommandDecodeError::Incomplete) => Decoded::NeedMore,
        Err(CommandDecodeError::LiteralFound { tag, length, mode }) => {
            let length = length as usize;
            // A literal is always followed by at least CRLF: room for both, and wait for one byte
            // past it (an empty literal would otherwise be "complete" before anything arrived).
            match mode {
                LiteralMode::Sync if buf.len().saturating_add(length).saturating_add(2) > max => {
                    Decoded::LiteralTooBig {
                        tag: tag.inner().to_string(),
                    }
                }
                LiteralMode::Sync => Decoded::Continue {
                    until: buf.len() + length + 1,
                },
                LiteralMode::NonSync if length > max => Decoded::TooLong,
                LiteralMode::NonSync if buf.len() >= max => overlong(buf),
                LiteralMode::NonSync => Decoded::NeedMore,
            }
        }
        Err(CommandDecodeError::Failed) => match memchr::memchr(b'\n', buf) {
            // Answer a bad line only once it is complete, so it is dropped whole.
            None if buf.len() >= max => overlong(buf),
            None => Decoded::NeedMore,
            // Any well-formed announcement is a literal (imap-codec stops at 32 bits): one too
            // large is refused as such, before a `+` or by closing.
            Some(lf) => match crate::wire::literal_announcement(&buf[..lf]) {
                Some((length, false)) if length.saturating_add(lf as u64 + 3) > max as u64 => {
                    Decoded::LiteralTooBig {
                        tag: line_tag(buf).unwrap_or_else(|| "*".into()),
                    }
                }
                Some((length, true)) if length > max as u64 => Decoded::TooLong,
                Some(_) => Decoded::BadLiteral { tag: line_tag(buf) },
                None => Decoded::Bad {
                    tag: line_tag(buf),
                    consumed: lf + 1,
                },
            },
        },
    }
}

fn overlong(buf: &[u8]) -> Decoded {
    Decoded::Overlong { tag: line_tag(buf) }
}

/// What a [`Discard`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Discarded {
    /// The command goes on past what was fed: feed more.
    NeedMore,
    /// The command ended; the first `consumed` bytes of the last chunk were its end.
    Ended { consumed: usize },
    /// A LITERAL+ literal over the limit: the gate will not read its bytes, so it cannot tell
    /// where the command ends.
    Unsyncable,
}

/// Throws away the rest of a command too long to keep, holding nothing but a few counters:
/// literals are followed by count (a LITERAL+ one up to the limit), and a synchronizing literal
/// announced after the limit ends the command, since the client waits for a `+` that never
/// comes.
#[derive(Debug)]
pub struct Discard {
    max: u64,
    /// Bytes of a literal still to skip.
    literal_left: u64,
    /// Whether the current line ends, so far, with a literal announcement.
    announcement: Announcement,
    /// Lines only (an AUTHENTICATE response): braces mean nothing.
    lines_only: bool,
}

impl Discard {
    /// For a command: its literals are followed.
    pub fn command(max: usize) -> Discard {
        Discard {
            max: max as u64,
            literal_left: 0,
            announcement: Announcement::default(),
            lines_only: false,
        }
    }

    /// For a line without literals (a SASL response).
    pub fn line() -> Discard {
        Discard {
            lines_only: true,
            ..Discard::command(0)
        }
    }

    /// Feeds the next bytes of the command. `sync_answered`: the synchronizing literals
    /// announced in `chunk` were answered `+` (true only for what was buffered before the
    /// command turned out too long), so their data follows.
    pub fn feed(&mut self, chunk: &[u8], sync_answered: bool) -> Discarded {
        let mut at = 0;
        while at < chunk.len() {
            if self.literal_left > 0 {
                let skip = self.literal_left.min((chunk.len() - at) as u64);
                self.literal_left -= skip;
                at += skip as usize;
                continue;
            }
            let byte = chunk[at];
            at += 1;
            if byte != b'\n' {
                self.announcement.step(byte);
                continue;
            }
            let announced = self.announcement.end_of_line();
            match announced {
                _ if self.lines_only => return Discarded::Ended { consumed: at },
                None => return Discarded::Ended { consumed: at },
                Some((_, false)) if !sync_answered => return Discarded::Ended { consumed: at },
                Some((length, true)) if length > self.max => return Discarded::Unsyncable,
                Some((length, _)) => self.literal_left = length,
            }
        }
        Discarded::NeedMore
    }
}

/// Recognises, byte by byte, a literal announcement (`{N}` or `{N+}`, then maybe CR) at the end
/// of a line, with any number of digits, in constant space.
#[derive(Debug, Default)]
struct Announcement {
    state: AnnouncementState,
    length: u64,
    non_sync: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum AnnouncementState {
    #[default]
    None,
    Open,
    Digits,
    Plus,
    Closed,
    ClosedCr,
}

impl Announcement {
    fn step(&mut self, byte: u8) {
        use AnnouncementState::*;
        self.state = match (self.state, byte) {
            (_, b'{') => {
                self.length = 0;
                self.non_sync = false;
                Open
            }
            (Open | Digits, b'0'..=b'9') => {
                self.length = self
                    .length
                    .saturating_mul(10)
                    .saturating_add(u64::from(byte - b'0'));
                Digits
            }
            (Digits, b'+') => {
                self.non_sync = true;
                Plus
            }
            (Digits | Plus, b'}') => Closed,
            (Closed, b'\r') => ClosedCr,
            _ => None,
        };
    }

    /// At a line feed: the announcement the line ended with, if any; starts over.
    fn end_of_line(&mut self) -> Option<(u64, bool)> {
        let found = matches!(
            self.state,
            AnnouncementState::Closed | AnnouncementState::ClosedCr
        )
        .then_some((self.length, self.non_sync));
        *self = Announcement::default();
        found
    }
}

/// `LOGIN` with atoms that IMAP's grammar refuses but Dovecot accepts, rewritten with those
/// atoms quoted; `None` when the buffer does not start with such a LOGIN, or nothing needs
/// rewriting. Atoms here are runs of printable ASCII without `(`, `)`, `"` or `{` (what Dovecot
/// reads as an atom); CR, LF, NUL, other controls and 8-bit bytes stay refused. Quoted strings
/// and literals among the arguments are copied as they are.
pub fn relax_login(buf: &[u8]) -> Option<Vec<u8>> {
    let sp = memchr::memchr(b' ', buf)?;
    let command = buf.get(sp + 1..sp + 7)?;
    if !command.eq_ignore_ascii_case(b"LOGIN ") {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len() + 8);
    out.extend_from_slice(&buf[..sp + 7]);
    let mut rest = &buf[sp + 7..];
    let mut changed = false;
    for argument in 0..2 {
        if argument == 1 {
            rest = rest.strip_prefix(b" ")?;
            out.push(b' ');
        }
        match rest.first()? {
            b'"' => {
                let end = quoted_end(rest)?;
                out.extend_from_slice(&rest[..end]);
                rest = &rest[end..];
            }
            b'{' => {
                let lf = memchr::memchr(b'\n', rest)?;
                let (length, _) = crate::wire::literal_announcement(&rest[..lf])?;
                let end = usize::try_from(length)
                    .ok()
                    .and_then(|l| l.checked_add(lf + 1))
                    .filter(|&end| end <= rest.len());
                match end {
                    Some(end) => {
                        out.extend_from_slice(&rest[..end]);
                        rest = &rest[end..];
                    }
                    // The literal's data has not all arrived: what follows is not looked at.
                    None => {
                        out.extend_from_slice(rest);
                        return changed.then_some(out);
                    }
                }
            }
            _ => {
                let len = rest
                    .iter()
                    .position(|&b| !is_relaxed_atom_char(b))
                    .unwrap_or(rest.len());
                if len == 0 {
                    return None;
                }
                let atom = &rest[..len];
                if atom.iter().all(|&b| is_astring_char(b)) {
                    out.extend_from_slice(atom);
                } else {
                    out.push(b'"');
                    for &b in atom {
                        if b == b'\\' {
                            out.push(b'\\');
                        }
                        out.push(b);
                    }
                    out.push(b'"');
                    changed = true;
                }
                rest = &rest[len..];
            }
        }
    }
    out.extend_from_slice(rest);
    changed.then_some(out)
}

/// An atom character as Dovecot reads LOGIN arguments.
fn is_relaxed_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'"' | b'{')
}

/// A character IMAP's grammar allows in an unquoted astring.
fn is_astring_char(b: u8) -> bool {
    is_relaxed_atom_char(b) && !matches!(b, b'%' | b'*' | b'\\')
}

/// Length of the quoted string at the start of `s`, quotes included.
fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The client's answer to an empty `+` during AUTHENTICATE.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslDecoded {
    /// The decoded SASL message, made of the first `consumed` bytes.
    Message {
        message: Vec<u8>,
        consumed: usize,
    },
    /// `*`: the client cancelled.
    Cancel {
        consumed: usize,
    },
    NeedMore,
    TooLong,
    /// Not base64.
    Bad {
        consumed: usize,
    },
}

pub fn decode_sasl(buf: &[u8], max: usize) -> SaslDecoded {
    match AuthenticateDataCodec::new().decode(buf) {
        Ok((rest, data)) => {
            let consumed = buf.len() - rest.len();
            match data {
                AuthenticateData::Continue(secret) => SaslDecoded::Message {
                    message: secret.declassify().to_vec(),
                    consumed,
                },
                AuthenticateData::Cancel => SaslDecoded::Cancel { consumed },
            }
        }
        Err(AuthenticateDataDecodeError::Incomplete) if buf.len() >= max => SaslDecoded::TooLong,
        Err(AuthenticateDataDecodeError::Incomplete) => SaslDecoded::NeedMore,
        Err(AuthenticateDataDecodeError::Failed) => SaslDecoded::Bad {
            consumed: line_end(buf),
        },
    }
}

/// Length of the first line including its LF, or the whole buffer when there is none.
fn line_end(buf: &[u8]) -> usize {
    memchr::memchr(b'\n', buf).map_or(buf.len(), |p| p + 1)
}

pub use crate::wire::line_tag;

/// The client's ID parameters, bounded as RFC 2971 allows, keeping only UTF-8 text.
pub fn id_parameters(params: Vec<(IString<'_>, NString<'_>)>) -> Vec<(String, Option<String>)> {
    params
        .into_iter()
        .take(ID_MAX_PAIRS)
        .filter_map(|(k, v)| {
            let k = std::str::from_utf8(k.as_ref()).ok()?;
            if k.len() > ID_MAX_FIELD {
                return None;
            }
            let v = match v.0 {
                Some(v) => {
                    let v = std::str::from_utf8(v.as_ref()).ok()?;
                    Some((v.len() <= ID_MAX_VALUE).then(|| v.to_string())?)
                }
                None => None,
            };
            Some((k.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert!(matches!(
            decode(b"a NOOP\r\nb NOOP\r\n", 100),
            Decoded::Command { consumed: 8, .. }
        ));
        assert!(matches!(decode(b"a NOO", 100), Decoded::NeedMore));
        assert!(matches!(
            decode(b"a NOOOOOOOOOOO", 10),
            Decoded::Overlong { tag: Some(_) }
        ));
        assert!(matches!(
            decode(b"a LOGIN {5}\r\n", 100),
            Decoded::Continue { until: 19 }
        ));
        // An empty literal waits for the byte after it.
        assert!(matches!(
            decode(b"a LOGIN {0}\r\n", 100),
            Decoded::Continue { until: 14 }
        ));
        assert!(matches!(
            decode(b"a LOGIN {0}\r\n \"x\"\r\n", 100),
            Decoded::Command { .. }
        ));
        assert!(matches!(
            decode(b"a LOGIN {84}\r\n", 100),
            Decoded::Continue { .. }
        ));
        assert!(matches!(
            decode(b"a LOGIN {85}\r\n", 100),
            Decoded::LiteralTooBig { .. }
        ));
        assert!(matches!(decode(b"a LOGIN {95+}\r\n", 90), Decoded::TooLong));
        assert!(matches!(
            decode(b"a LOGIN {5+}\r\nab", 100),
            Decoded::NeedMore
        ));
        assert!(matches!(
            decode(b"a FROB\r\nb NOOP\r\n", 100),
            Decoded::Bad { consumed: 8, .. }
        ));
        assert!(matches!(decode(b"a FROB", 100), Decoded::NeedMore));
        // Announcements past 32 bits (imap-codec's limit) or 64 bits are literals too.
        assert!(matches!(
            decode(b"a1 LOGIN {18446744073709551616+}\r\n", 100),
            Decoded::TooLong
        ));
        assert!(matches!(
            decode(b"a1 LOGIN {99999999999}\r\n", 100),
            Decoded::LiteralTooBig { tag } if tag == "a1"
        ));
        assert!(matches!(
            decode(b"a FROB {0000000000000000000005+}\r\nb NOOP\r\n", 100),
            Decoded::BadLiteral { .. }
        ));
        assert!(matches!(
            decode(b"a FROB {5}\r\n", 100),
            Decoded::BadLiteral { .. }
        ));
        assert!(matches!(
            decode(b"a LOGIN {3}\r\na\0b x\r\n", 100),
            Decoded::BadLiteral { .. }
        ));
        assert_eq!(
            decode_sasl(b"*\r\n", 100),
            SaslDecoded::Cancel { consumed: 3 }
        );
        assert_eq!(
            decode_sasl(b"!!\r\nx", 100),
            SaslDecoded::Bad { consumed: 4 }
        );
        assert_eq!(
            decode_sasl(b"AGEAYg==\r\n", 100),
            SaslDecoded::Message {
                message: b"\0a\0b".to_vec(),
                consumed: 10
            }
        );
    }

    fn login_arguments(buf: &[u8]) -> (String, String, usize) {
        match decode(buf, 1000) {
            Decoded::Command { command, consumed } => match command.body {
                imap_codec::imap_types::command::CommandBody::Login { username, password } => (
                    String::from_utf8_lossy(username.as_ref()).into_owned(),
                    String::from_utf8_lossy(password.declassify().as_ref()).into_owned(),
                    consumed,
                ),
                other => panic!("not a LOGIN: {}", other.name()),
            },
            other => panic!("not a command: {other:?}"),
        }
    }

    #[test]
    fn login_atoms_as_dovecot_reads_them() {
        // Python's imaplib: the user name unquoted.
        let buf = b"a LOGIN EXAMPLE\\user3 \"pass3\"\r\nb NOOP\r\n";
        assert_eq!(
            login_arguments(buf),
            ("EXAMPLE\\user3".into(), "pass3".into(), buf.len() - 8)
        );
        assert_eq!(
            login_arguments(b"a login us%e*r] pa\\ss}\r\n"),
            ("us%e*r]".into(), "pa\\ss}".into(), 24)
        );
        // With literals on either side; the positions are the client's bytes.
        let buf = b"a LOGIN {5+}\r\nab\\cd pa\\ss\r\n";
        assert_eq!(
            login_arguments(buf),
            ("ab\\cd".into(), "pa\\ss".into(), buf.len())
        );
        let head = b"a LOGIN EX\\u {5}\r\n";
        match decode(head, 1000) {
            Decoded::Continue { until } => assert_eq!(until, head.len() + 5 + 1),
            other => panic!("{other:?}"),
        }
        let buf = b"a LOGIN EX\\u {5}\r\nhello\r\n";
        assert_eq!(
            login_arguments(buf),
            ("EX\\u".into(), "hello".into(), buf.len())
        );
        // What Dovecot refuses stays refused.
        for bad in [
            &b"a LOGIN us(er pw\r\n"[..],
            b"a LOGIN us)er pw\r\n",
            b"a LOGIN us\"er pw\r\n",
            b"a LOGIN us\0er pw\r\n",
            b"a LOGIN us\xc3\xa9\\ pw\r\n",
            b"a LOGIN us\rer\\ pw\r\n",
            b"a LOGIN user\\\r\n",
            b"a NOOP x\\y\r\n",
        ] {
            assert!(
                matches!(decode(bad, 1000), Decoded::Bad { .. }),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_overlong_command_is_discarded_to_its_end() {
        let max = 1024;
        let mut line = b"a ID (\"x\" \"".to_vec();
        line.resize(max, b'y');
        assert!(matches!(
            decode(&line, max),
            Decoded::Overlong { tag: Some(t) } if t == "a"
        ));
        let mut d = Discard::command(max);
        assert_eq!(d.feed(&line, true), Discarded::NeedMore);
        assert_eq!(d.feed(b"yyy\")", false), Discarded::NeedMore);
        assert_eq!(
            d.feed(b")\r\nb NOOP\r\n", false),
            Discarded::Ended { consumed: 3 }
        );
        // LITERAL+ literals are skipped by count, whatever they hold.
        let mut d = Discard::command(max);
        assert_eq!(
            d.feed(
                b"xx {000000000000000000000000000000005+}\r\n\r\n\r\n",
                false
            ),
            Discarded::NeedMore
        );
        assert_eq!(d.feed(b"x\r\nz", false), Discarded::Ended { consumed: 3 });
        // One over the limit cannot be skipped safely.
        let mut d = Discard::command(max);
        assert_eq!(d.feed(b"x {1025+}\r\n", false), Discarded::Unsyncable);
        let mut d = Discard::command(max);
        assert_eq!(
            d.feed(b"x {18446744073709551616+}\r\n", false),
            Discarded::Unsyncable
        );
        // A synchronizing literal after the limit waits for a `+`: the command ends there.
        let mut d = Discard::command(max);
        assert_eq!(
            d.feed(b"x {5}\r\nb NOOP", false),
            Discarded::Ended { consumed: 7 }
        );
        // ...but one answered before the limit has its data in the stream.
        let mut d = Discard::command(max);
        assert_eq!(d.feed(b"x {5}\r\n\r\n\r\nx y", true), Discarded::NeedMore);
        // SASL responses are lines.
        let mut d = Discard::line();
        assert_eq!(
            d.feed(b"QUFB {5+}\r\nb", false),
            Discarded::Ended { consumed: 11 }
        );
    }
}
