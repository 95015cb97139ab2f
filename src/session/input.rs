//! What the client sent before login, decided without I/O: [`decode`] looks at the bytes
//! buffered so far and says what the driver must do next. Pure functions, so the fuzz target
//! (`fuzz/fuzz_targets/preauth.rs`) and the property tests exercise exactly what the gate runs.
//!
//! The buffer never exceeds `max` bytes: a synchronizing literal is weighed against the limit
//! before `+` is sent, a LITERAL+ literal alone over the limit ends the session, and a command
//! that fills the buffer without completing ends it too (there is no safe way to resynchronize).

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
    match CommandCodec::new().decode_static(buf) {
        Ok((rest, command)) => Decoded::Command {
            command: Box::new(command),
            consumed: buf.len() - rest.len(),
        },
        Err(CommandDecodeError::Incomplete) if buf.len() >= max => Decoded::TooLong,
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
                LiteralMode::NonSync if length > max || buf.len() >= max => Decoded::TooLong,
                LiteralMode::NonSync => Decoded::NeedMore,
            }
        }
        Err(CommandDecodeError::Failed) => match memchr::memchr(b'\n', buf) {
            // Answer a bad line only once it is complete, so it is dropped whole.
            None if buf.len() >= max => Decoded::TooLong,
            None => Decoded::NeedMore,
            Some(lf) if super::boundary::literal_announced(&buf[..lf]).is_some() => {
                Decoded::BadLiteral { tag: line_tag(buf) }
            }
            Some(lf) => Decoded::Bad {
                tag: line_tag(buf),
                consumed: lf + 1,
            },
        },
    }
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

/// The tag of an unparseable line, when its first word is a valid tag.
pub fn line_tag(buf: &[u8]) -> Option<String> {
    let end = buf
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    let tag = &buf[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}

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
    fn tags_of_bad_lines() {
        assert_eq!(line_tag(b"a1 FOO\r\n").as_deref(), Some("a1"));
        assert_eq!(line_tag(b"* FOO\r\n"), None);
        assert_eq!(line_tag(b"a{1 FOO\r\n"), None);
        assert_eq!(line_tag(b"nospace"), None);
    }

    #[test]
    fn decisions() {
        assert!(matches!(
            decode(b"a NOOP\r\nb NOOP\r\n", 100),
            Decoded::Command { consumed: 8, .. }
        ));
        assert!(matches!(decode(b"a NOO", 100), Decoded::NeedMore));
        assert!(matches!(decode(b"a NOOOOOOOOOOO", 10), Decoded::TooLong));
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
}
