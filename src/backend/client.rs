//! A small IMAP client on imap-codec: what the gate needs to log in on a user's behalf, and what
//! `imapgate test-login` needs to log in through the gate.
//!
//! Messages are framed by imap-codec's fragmentizer (literals followed, size bounded) and decoded
//! with imap-codec (greeting, continuation, tagged status, untagged data); commands are encoded
//! by imap-codec (see [`super::encode`]), waiting for the server's `+` before each synchronizing
//! literal. Each message's raw bytes are kept, so what is passed on to a client (a backend's
//! `[ALERT]`, its tagged OK) is passed on unchanged, and the bytes read past the last message
//! (which belong to the relay) are handed back with the stream.

use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::fragmentizer::Fragmentizer;
use imap_codec::imap_types::response::{
    Code, CommandContinuationRequest, Data, GreetingKind, Response, Status, StatusKind,
};
use imap_codec::{GreetingCodec, ResponseCodec};
use tokio::io::AsyncWriteExt;

use crate::errors::{Blame, Blamed};
use crate::stream::{read_into, Stream, READ_CHUNK};

/// Longest message accepted (a response with its literals).
pub const MAX_MESSAGE: u32 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{phase}: no answer within {after:?}")]
    Timeout {
        phase: &'static str,
        after: Duration,
    },
    #[error("{phase}: the server closed the connection")]
    Closed { phase: &'static str },
    #[error("{phase}: {source}")]
    Io {
        phase: &'static str,
        source: std::io::Error,
    },
    #[error("{phase}: {message}")]
    Protocol {
        phase: &'static str,
        message: String,
    },
}

impl Blamed for ClientError {
    /// The server's: it stalled, closed, or answered something unexpected.
    fn blame(&self) -> Blame {
        Blame::Backend
    }
}

fn protocol(phase: &'static str, message: impl Into<String>) -> ClientError {
    ClientError::Protocol {
        phase,
        message: message.into(),
    }
}

/// A status response's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOf {
    Ok,
    No,
    Bad,
}

/// What a message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `+ ...`
    Continuation,
    /// `tag OK|NO|BAD [code] text`.
    Tagged {
        tag: String,
        status: StatusOf,
        /// The response code's name, upper-cased (`CAPABILITY`, `UNAVAILABLE`, ...).
        code: Option<String>,
        /// Capabilities, when the code is `[CAPABILITY ...]`.
        capabilities: Option<Vec<String>>,
    },
    /// `* CAPABILITY ...`
    Capabilities(Vec<String>),
    /// `* ID ...`
    Id,
    /// `* BYE ...`
    Bye,
    /// Any other untagged response (parsed or not: it is passed on as it came).
    Untagged,
}

/// One message from the server, decoded, with its bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    /// The message as it came, CRLF included.
    pub raw: Vec<u8>,
}

impl Message {
    /// The text after `tag STATUS ` of a tagged response, without CRLF (what a client is
    /// given after its own tag).
    pub fn status_text(&self) -> String {
        let line = String::from_utf8_lossy(&self.raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let mut words = line.splitn(3, ' ');
        let (_tag, _status) = (words.next(), words.next());
        words.next().unwrap_or("").to_string()
    }
}

/// The server's greeting.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub ok: bool,
    /// From a `[CAPABILITY ...]` code, when there is one.
    pub capabilities: Option<Vec<String>>,
    pub raw: Vec<u8>,
}

fn status_of(kind: StatusKind) -> StatusOf {
    match kind {
        StatusKind::Ok => StatusOf::Ok,
        StatusKind::No => StatusOf::No,
        StatusKind::Bad => StatusOf::Bad,
    }
}

/// The capabilities as the server wrote them (imap-codec's own rendering would change their
/// case, and a client must see the backend's list as it is): the words after `marker` in the
/// raw line, up to `]` or the line's end.
fn raw_capabilities(raw: &[u8], marker: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let upper = text.to_ascii_uppercase();
    let Some(start) = upper.find(marker).map(|i| i + marker.len()) else {
        return Vec::new();
    };
    let rest = &text[start..];
    let end = rest.find([']', '\r', '\n']).unwrap_or(rest.len());
    rest[..end]
        .split_ascii_whitespace()
        .map(String::from)
        .collect()
}

/// A code's name and, for `[CAPABILITY ...]`, its list (from the raw message).
fn code_parts(code: &Option<Code<'_>>, raw: &[u8]) -> (Option<String>, Option<Vec<String>>) {
    match code {
        None => (None, None),
        Some(Code::Capability(_)) => (
            Some("CAPABILITY".into()),
            Some(raw_capabilities(raw, "[CAPABILITY ")),
        ),
        Some(Code::Other(other)) => {
            let text = String::from_utf8_lossy(other.inner()).to_string();
            let name = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
            (Some(name), None)
        }
        Some(other) => {
            let text = format!("{other:?}");
            (
                Some(
                    text.split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase(),
                ),
                None,
            )
        }
    }
}

/// What a message's raw bytes are, decoded with imap-codec; untagged lines imap-codec cannot
/// decode are still untagged (and passed on as they came).
fn classify(raw: &[u8], phase: &'static str) -> Result<Kind, ClientError> {
    match ResponseCodec::default().decode(raw) {
        Ok((_, Response::CommandContinuationRequest(CommandContinuationRequest::Basic(_))))
        | Ok((_, Response::CommandContinuationRequest(CommandContinuationRequest::Base64(_)))) => {
            Ok(Kind::Continuation)
        }
        Ok((_, Response::Status(Status::Tagged(t)))) => {
            let (code, capabilities) = code_parts(&t.body.code, raw);
            Ok(Kind::Tagged {
                tag: t.tag.inner().to_string(),
                status: status_of(t.body.kind),
                code,
                capabilities,
            })
        }
        Ok((_, Response::Status(Status::Bye(_)))) => Ok(Kind::Bye),
        Ok((_, Response::Status(Status::Untagged(_)))) => Ok(Kind::Untagged),
        Ok((_, Response::Data(Data::Capability(_)))) => {
            Ok(Kind::Capabilities(raw_capabilities(raw, "CAPABILITY ")))
        }
        Ok((_, Response::Data(Data::Id { .. }))) => Ok(Kind::Id),
        Ok((_, Response::Data(_))) => Ok(Kind::Untagged),
        Err(_) if raw.starts_with(b"* ") => Ok(Kind::Untagged),
        Err(_) if raw.starts_with(b"+") => Ok(Kind::Continuation),
        Err(_) => Err(protocol(
            phase,
            format!("unexpected answer: {}", printable(raw)),
        )),
    }
}

/// At most 200 characters of server text, for logs.
pub fn printable(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_end()
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// An IMAP connection as a client.
pub struct Client {
    stream: Stream,
    frag: Fragmentizer,
    /// Bytes read and not yet part of a complete message (imap-codec holds them too).
    raw: Vec<u8>,
    /// Deadline of each read and write.
    timeout: Duration,
}

impl Client {
    pub fn new(stream: Stream, timeout: Duration) -> Client {
        Client {
            stream,
            frag: Fragmentizer::new(MAX_MESSAGE),
            raw: Vec::new(),
            timeout,
        }
    }

    /// The stream and the bytes read past the last message (they belong to whoever goes on).
    pub fn into_parts(self) -> (Stream, Vec<u8>) {
        (self.stream, self.raw)
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The next complete message.
    pub async fn message(&mut self, phase: &'static str) -> Result<Message, ClientError> {
        loop {
            match self.frag.progress() {
                Some(_) if self.frag.is_message_complete() => {
                    if self.frag.is_max_message_size_exceeded() {
                        return Err(protocol(phase, "answer too long"));
                    }
                    let raw = self.frag.message_bytes().to_vec();
                    self.raw.drain(..raw.len().min(self.raw.len()));
                    let kind = classify(&raw, phase)?;
                    return Ok(Message { kind, raw });
                }
                Some(_) => continue,
                None => self.fill(phase).await?,
            }
        }
    }

    /// The greeting (OK, PREAUTH or BYE).
    pub async fn greeting(&mut self) -> Result<Greeting, ClientError> {
        let phase = "greeting";
        let raw = loop {
            match self.frag.progress() {
                Some(_) if self.frag.is_message_complete() => {
                    if self.frag.is_max_message_size_exceeded() {
                        return Err(protocol(phase, "greeting too long"));
                    }
                    let raw = self.frag.message_bytes().to_vec();
                    self.raw.drain(..raw.len().min(self.raw.len()));
                    break raw;
                }
                Some(_) => continue,
                None => self.fill(phase).await?,
            }
        };
        let (_, greeting) = GreetingCodec::default()
            .decode(&raw)
            .map_err(|_| protocol(phase, format!("unexpected answer: {}", printable(&raw))))?;
        let (_, capabilities) = code_parts(&greeting.code, &raw);
        Ok(Greeting {
            ok: greeting.kind == GreetingKind::Ok,
            capabilities,
            raw,
        })
    }

    /// Sends a command made of `fragments` (each but the last ends with a synchronizing literal
    /// announcement, or is the first step of an AUTHENTICATE), waiting for a `+` between them,
    /// and reads up to the tagged answer. `untagged` sees every other message. A `+` after the
    /// last fragment is answered `*` (cancel): nothing more will be sent.
    pub async fn command(
        &mut self,
        tag: &str,
        fragments: &[Vec<u8>],
        phase: &'static str,
        untagged: impl FnMut(&Message),
    ) -> Result<Message, ClientError> {
        self.command_answering(tag, fragments, phase, b"*\r\n", untagged)
            .await
    }

    /// Like [`Client::command`], answering a continuation after the last fragment with
    /// `challenge_reply` (a SASL mechanism's error challenge wants one before its `NO`).
    pub async fn command_answering(
        &mut self,
        tag: &str,
        fragments: &[Vec<u8>],
        phase: &'static str,
        challenge_reply: &[u8],
        mut untagged: impl FnMut(&Message),
    ) -> Result<Message, ClientError> {
        for (i, fragment) in fragments.iter().enumerate() {
            let last = i + 1 == fragments.len();
            self.write(phase, fragment).await?;
            loop {
                let m = self.message(phase).await?;
                match &m.kind {
                    Kind::Tagged { tag: t, .. } if t == tag => return Ok(m),
                    Kind::Continuation if last => self.write(phase, challenge_reply).await?,
                    Kind::Continuation => break,
                    _ => untagged(&m),
                }
            }
        }
        Err(protocol(phase, "no answer"))
    }

    /// `CAPABILITY`: the server's list.
    pub async fn capability(
        &mut self,
        tag: &str,
        phase: &'static str,
    ) -> Result<Vec<String>, ClientError> {
        let mut found = None;
        let line = super::encode::simple(tag, "CAPABILITY");
        let answer = self
            .command(tag, &[line], phase, |m| {
                if let Kind::Capabilities(c) = &m.kind {
                    found = Some(c.clone());
                }
            })
            .await?;
        match (&answer.kind, found) {
            (
                Kind::Tagged {
                    status: StatusOf::Ok,
                    ..
                },
                Some(caps),
            ) => Ok(caps),
            _ => Err(protocol(phase, "no CAPABILITY answer")),
        }
    }

    /// Writes bytes (with the deadline), flushing them.
    pub async fn write(&mut self, phase: &'static str, bytes: &[u8]) -> Result<(), ClientError> {
        let after = self.timeout;
        let stream = &mut self.stream;
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(after, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ClientError::Io { phase, source }),
            Err(_) => Err(ClientError::Timeout { phase, after }),
        }
    }

    async fn fill(&mut self, phase: &'static str) -> Result<(), ClientError> {
        let after = self.timeout;
        let (frag, raw) = (&mut self.frag, &mut self.raw);
        // Read straight into the fragmentizer and the raw copy: no buffer in the waiting future
        // (see `read_into`).
        let read = read_into(&mut self.stream, READ_CHUNK, |bytes| {
            frag.enqueue_bytes(bytes);
            raw.extend_from_slice(bytes);
        });
        let n = match tokio::time::timeout(after, read).await {
            Ok(Ok(n)) => n,
            Ok(Err(source)) => return Err(ClientError::Io { phase, source }),
            Err(_) => return Err(ClientError::Timeout { phase, after }),
        };
        if n == 0 {
            return Err(ClientError::Closed { phase });
        }
        // Bounded: a message over MAX_MESSAGE fails as soon as the fragmentizer has seen it.
        if self.raw.len() > 2 * MAX_MESSAGE as usize + READ_CHUNK {
            return Err(protocol(phase, "answer too long"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
