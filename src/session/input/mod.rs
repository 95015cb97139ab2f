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

mod discard;
mod relax;

pub use discard::{Discard, Discarded};
pub use relax::relax_login;

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
mod tests;
