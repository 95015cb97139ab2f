//! The IMAP4 service before login, as a state machine without I/O (as in imap-next): bytes
//! from the client go in with [`Dialogue::feed`], bytes for the client come out of
//! [`Dialogue::take_output`], and [`Dialogue::step`] says what the driver must do next (read,
//! run a login, start TLS, close, or hand over to the relay). Every decision about the client's
//! input is made here, and unit-tested by feeding bytes.
//!
//! Parsing is [`input::decode`] (imap-codec, bounded by `max_command_size`): a synchronizing
//! literal is weighed against the limit before `+` is sent, a LITERAL+ literal alone over the
//! limit ends the session, and a command line over the limit is discarded to its end and
//! answered `BAD [TOOBIG]`. After `STARTTLS`, whatever the client pipelined behind the command is
//! thrown away before the handshake, so injected plaintext never runs inside TLS.
//!
//! One state machine, kept in one file so its states and transitions read together; the
//! commands it answers itself are in `commands.rs`, its unit tests in `tests.rs`.

use std::time::Instant;

use super::input::{self, Decoded, Discard, Discarded, SaslDecoded};
use crate::config::LoginType;
use crate::credentials::{CredentialError, Credentials, TokenMechanism};

/// What the dialogue needs to know of the gate's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_command_size: usize,
    pub max_bad_commands: u32,
    pub max_failed_login_attempts: u32,
    pub login_type: LoginType,
    pub banner: String,
    /// STARTTLS is offered (a plain listener, with a certificate configured).
    pub starttls: bool,
    /// Bearer-token mechanisms offered (those the backend of a not-yet-known user takes).
    pub token_mechanisms: Vec<TokenMechanism>,
}

/// Which command carried the credentials, for the failure text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Login,
    Authenticate,
    /// AUTHENTICATE OAUTHBEARER or XOAUTH2: a failure is an error challenge first.
    Token(TokenMechanism),
}

impl Mechanism {
    fn failed(self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN failed.",
            Mechanism::Authenticate | Mechanism::Token(_) => "AUTHENTICATE failed.",
        }
    }
}

/// The error challenge of a refused token (RFC 7628 section 3.2.2; XOAUTH2's own form), base64.
fn token_error_challenge(mechanism: TokenMechanism) -> &'static str {
    match mechanism {
        // {"status":"invalid_token","schemes":"bearer"}
        TokenMechanism::OAuthBearer => {
            "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciJ9"
        }
        // {"status":"401","schemes":"bearer"}
        TokenMechanism::XOAuth2 => "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=",
    }
}

/// What the driver must do next. In every case it first sends [`Dialogue::take_output`].
#[derive(Debug)]
pub enum Step {
    /// Read at most `room` bytes from the client and [`Dialogue::feed`] them.
    Read { room: usize },
    /// Run the login and give its answer to [`Dialogue::answer`].
    Login {
        credentials: Result<Credentials, CredentialError>,
    },
    /// Do the TLS handshake, then call [`Dialogue::tls_started`].
    StartTls,
    /// Close the connection.
    Close,
    /// The client is logged in: relay. What it sent behind its login is
    /// [`Dialogue::take_pending`].
    LoggedIn,
}

/// The answer to a login, as the client is to hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Logged in: the backend's untagged lines, then `tag OK <ok_text>`.
    LoggedIn {
        prelude: Vec<u8>,
        ok_text: String,
    },
    AuthFailed,
    Disabled {
        message: String,
    },
    Limit,
    Unavailable,
}

impl Answer {
    fn outcome(&self) -> &'static str {
        match self {
            Answer::LoggedIn { .. } => "ok",
            Answer::AuthFailed => "auth_failed",
            Answer::Disabled { .. } => "disabled",
            Answer::Limit => "limit",
            Answer::Unavailable => "unavailable",
        }
    }
}

/// One command before login, for the protocol log.
#[derive(Debug, Clone)]
pub struct Record {
    pub command: &'static str,
    /// Never a password or SASL message.
    pub parameters: String,
    pub user: String,
    pub request: usize,
    pub reply: usize,
    pub started: Instant,
    /// The login outcome, when the command was a login.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A login is with the driver.
    LoggingIn,
    StartTls,
    Closing,
    LoggedIn,
}

/// An AUTHENTICATE waiting for the client's next response line.
#[derive(Debug, Clone)]
enum Sasl {
    /// PLAIN, after its empty `+`: the whole message.
    Plain { tag: String },
    /// LOGIN, after `+ VXNlcm5hbWU6` ("Username:"): the user name.
    LoginUser { tag: String },
    /// LOGIN, after `+ UGFzc3dvcmQ6` ("Password:"): the password.
    LoginPassword { tag: String, user: Vec<u8> },
    /// OAUTHBEARER or XOAUTH2 after an empty `+`: the message with the token.
    Token {
        tag: String,
        mechanism: TokenMechanism,
    },
    /// A refused token's error challenge was sent: the client's (dummy) response, then `NO`.
    TokenRefused { tag: String },
}

impl Sasl {
    fn tag(&self) -> &str {
        match self {
            Sasl::Plain { tag }
            | Sasl::LoginUser { tag }
            | Sasl::LoginPassword { tag, .. }
            | Sasl::Token { tag, .. }
            | Sasl::TokenRefused { tag } => tag,
        }
    }
}

/// AUTHENTICATE LOGIN's prompts (RFC-less but universal: base64 of "Username:" and "Password:").
pub(super) const LOGIN_USER_PROMPT: &[u8] = b"+ VXNlcm5hbWU6\r\n";
pub(super) const LOGIN_PASSWORD_PROMPT: &[u8] = b"+ UGFzc3dvcmQ6\r\n";

/// What a discarded command gets when it ends.
#[derive(Debug)]
struct Discarding {
    discard: Discard,
    /// Synchronizing literals in what is fed next were answered `+`.
    sync_answered: bool,
    /// The answer once the command ended.
    reply: String,
}

pub struct Dialogue {
    settings: Settings,
    tls: bool,
    state: State,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Bytes queued for the client since the start: a command's reply size is the difference.
    queued: usize,
    /// Buffer length at which the synchronizing literal we said `+` to is complete.
    literal_until: Option<usize>,
    discarding: Option<Discarding>,
    /// An AUTHENTICATE waiting for a response line.
    sasl: Option<Sasl>,
    login: Option<(String, Mechanism, Result<Credentials, CredentialError>)>,
    client_id: Vec<(String, Option<String>)>,
    bad_commands: u32,
    failed_logins: u32,
    current: Option<(Record, usize)>,
    records: Vec<Record>,
    user: String,
    discarded_before_tls: usize,
    /// The client has sent something.
    fed: bool,
}

impl Dialogue {
    /// A new dialogue, its greeting queued.
    pub fn new(settings: Settings, tls: bool) -> Dialogue {
        let mut d = Dialogue {
            settings,
            tls,
            state: State::Open,
            buf: Vec::new(),
            out: Vec::new(),
            queued: 0,
            literal_until: None,
            discarding: None,
            sasl: None,
            login: None,
            client_id: Vec::new(),
            bad_commands: 0,
            failed_logins: 0,
            current: None,
            records: Vec::new(),
            user: String::new(),
            discarded_before_tls: 0,
            fed: false,
        };
        let greeting = format!(
            "* OK [CAPABILITY {}] {}\r\n",
            d.capabilities(),
            d.settings.banner
        );
        d.queue(greeting.as_bytes());
        d
    }

    /// Bytes from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        // A PROXY protocol header from an address not in proxy_protocol_from: a client trying
        // to choose the address the gate sees, or a balancer the configuration does not name.
        if !self.fed && super::proxy_header::looks_like_header(bytes) {
            self.bye(b"* BYE PROXY protocol header from an address not trusted to send one.\r\n");
        }
        self.fed |= !bytes.is_empty();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes for the client, to be sent before acting on the step.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Commands answered since the last call, for the protocol log.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// What the client sent behind its login command (it goes to the backend first).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The client's ID parameters, bounded as RFC 2971 allows.
    pub fn client_id(&self) -> &[(String, Option<String>)] {
        &self.client_id
    }

    /// The user name of the last login attempt, for logs.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Bytes thrown away at the last STARTTLS (pipelined plaintext).
    pub fn discarded_before_tls(&self) -> usize {
        self.discarded_before_tls
    }

    /// The TLS handshake after STARTTLS is done.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.state = State::Open;
    }

    /// The pre-login deadline passed.
    pub fn timed_out(&mut self) {
        self.bye(b"* BYE Timed out waiting for login.\r\n");
    }

    /// The gate is shutting down.
    pub fn shutting_down(&mut self) {
        self.bye(b"* BYE [UNAVAILABLE] Server shutting down.\r\n");
    }

    fn bye(&mut self, line: &[u8]) {
        self.finish_record();
        self.queue(line);
        self.state = State::Closing;
    }

    fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.queued += bytes.len();
    }

    fn room(&self) -> usize {
        self.settings
            .max_command_size
            .saturating_sub(self.buf.len())
            .max(1)
    }

    /// What to do now.
    pub fn step(&mut self) -> Step {
        loop {
            match self.state {
                State::Closing => return Step::Close,
                State::LoggedIn => return Step::LoggedIn,
                State::StartTls => return Step::StartTls,
                State::LoggingIn => match self.login.as_mut() {
                    Some((_, _, credentials)) => {
                        let credentials =
                            std::mem::replace(credentials, Err(CredentialError::MalformedPlain));
                        return Step::Login { credentials };
                    }
                    // Asked again before the answer: nothing new to do.
                    None => return Step::Close,
                },
                State::Open => {}
            }
            if let Some(step) = self.progress() {
                return step;
            }
        }
    }

    /// One step of reading the buffer; `None` when the state changed or a command was handled.
    fn progress(&mut self) -> Option<Step> {
        let max = self.settings.max_command_size;
        if let Some(d) = self.discarding.as_mut() {
            match d.discard.feed(&self.buf, d.sync_answered) {
                Discarded::NeedMore => {
                    self.buf.clear();
                    d.sync_answered = false;
                    return Some(Step::Read { room: max });
                }
                Discarded::Ended { consumed } => {
                    self.buf.drain(..consumed);
                    let reply = std::mem::take(&mut d.reply);
                    self.discarding = None;
                    self.bad(reply.as_bytes());
                    return None;
                }
                Discarded::Unsyncable => {
                    self.discarding = None;
                    self.bye(b"* BYE [TOOBIG] Command exceeds the size limit.\r\n");
                    return None;
                }
            }
        }
        if let Some(sasl) = self.sasl.clone() {
            return self.sasl_response(sasl);
        }
        if let Some(until) = self.literal_until {
            if self.buf.len() < until {
                return Some(Step::Read { room: self.room() });
            }
            self.literal_until = None;
        }
        match input::decode(&self.buf, max) {
            Decoded::Command { command, consumed } => {
                self.buf.drain(..consumed);
                self.command(*command, consumed);
            }
            Decoded::NeedMore => return Some(Step::Read { room: self.room() }),
            Decoded::Continue { until } => {
                self.literal_until = Some(until);
                self.queue(b"+ Ready for literal data\r\n");
            }
            Decoded::LiteralTooBig { tag } => {
                self.buf.clear();
                self.bad(
                    format!("{tag} BAD [TOOBIG] Command exceeds the size limit.\r\n").as_bytes(),
                );
            }
            Decoded::Overlong { tag } => {
                let tag = tag.unwrap_or_else(|| "*".into());
                self.discarding = Some(Discarding {
                    discard: Discard::command(max),
                    sync_answered: true,
                    reply: format!("{tag} BAD [TOOBIG] Command exceeds the size limit.\r\n"),
                });
            }
            Decoded::TooLong => {
                self.bye(b"* BYE [TOOBIG] Command exceeds the size limit.\r\n");
            }
            Decoded::Bad { tag, consumed } => {
                self.buf.drain(..consumed);
                let tag = tag.as_deref().unwrap_or("*");
                self.bad(format!("{tag} BAD Command not understood.\r\n").as_bytes());
            }
            Decoded::BadLiteral { tag } => {
                let tag = tag.as_deref().unwrap_or("*");
                self.queue(format!("{tag} BAD Command not understood.\r\n").as_bytes());
                self.bye(
                    b"* BYE Cannot resynchronize after an invalid command with a literal.\r\n",
                );
            }
        }
        None
    }

    /// A response line to an AUTHENTICATE continuation.
    fn sasl_response(&mut self, sasl: Sasl) -> Option<Step> {
        let tag = sasl.tag();
        match input::decode_sasl(&self.buf, self.settings.max_command_size) {
            SaslDecoded::Message { message, consumed } => {
                self.buf.drain(..consumed);
                self.sasl = None;
                match sasl {
                    Sasl::Plain { tag } => {
                        let credentials = Credentials::from_sasl_plain(&message);
                        self.start_login(tag, Mechanism::Authenticate, credentials);
                    }
                    Sasl::LoginUser { tag } => {
                        self.queue(LOGIN_PASSWORD_PROMPT);
                        self.sasl = Some(Sasl::LoginPassword { tag, user: message });
                    }
                    Sasl::LoginPassword { tag, user } => {
                        let credentials = Credentials::password(&user, &message);
                        self.start_login(tag, Mechanism::Authenticate, credentials);
                    }
                    Sasl::Token { tag, mechanism } => {
                        let credentials = token_credentials(mechanism, &message);
                        self.start_login(tag, Mechanism::Token(mechanism), credentials);
                    }
                    Sasl::TokenRefused { tag } => self.refused(&tag, "AUTHENTICATE failed."),
                }
            }
            // After a refused token's challenge, whatever the client answers ends it the same.
            SaslDecoded::Cancel { consumed } | SaslDecoded::Bad { consumed }
                if matches!(sasl, Sasl::TokenRefused { .. }) =>
            {
                self.buf.drain(..consumed);
                self.sasl = None;
                let tag = tag.to_string();
                self.refused(&tag, "AUTHENTICATE failed.");
            }
            SaslDecoded::Cancel { consumed } => {
                self.buf.drain(..consumed);
                self.sasl = None;
                self.queue(format!("{tag} BAD AUTHENTICATE cancelled.\r\n").as_bytes());
                self.finish_record();
            }
            SaslDecoded::NeedMore => return Some(Step::Read { room: self.room() }),
            SaslDecoded::TooLong => {
                self.sasl = None;
                self.discarding = Some(Discarding {
                    discard: Discard::line(),
                    sync_answered: false,
                    reply: format!("{tag} BAD [TOOBIG] Command exceeds the size limit.\r\n"),
                });
            }
            SaslDecoded::Bad { consumed } => {
                self.buf.drain(..consumed);
                self.sasl = None;
                self.bad(format!("{tag} BAD Invalid base64 in AUTHENTICATE.\r\n").as_bytes());
            }
        }
        None
    }

    /// A failed login's `NO [AUTHENTICATIONFAILED]`; too many on one connection end it.
    pub(super) fn refused(&mut self, tag: &str, text: &str) {
        self.failed_logins += 1;
        self.queue(format!("{tag} NO [AUTHENTICATIONFAILED] {text}\r\n").as_bytes());
        if self.failed_logins >= self.settings.max_failed_login_attempts {
            self.bye(b"* BYE Too many failed logins.\r\n");
        } else {
            self.finish_record();
        }
    }

    /// A refused token: its error challenge; the `NO` follows the client's response.
    pub(super) fn token_refused(&mut self, tag: String, mechanism: TokenMechanism) {
        self.queue(format!("+ {}\r\n", token_error_challenge(mechanism)).as_bytes());
        self.sasl = Some(Sasl::TokenRefused { tag });
    }

    /// Answers a bad command; too many in a row end the session.
    fn bad(&mut self, reply: &[u8]) {
        self.bad_commands += 1;
        self.queue(reply);
        if self.bad_commands >= self.settings.max_bad_commands {
            self.bye(b"* BYE Too many invalid commands.\r\n");
        } else {
            self.finish_record();
        }
    }

    /// The command in progress is answered: its record is complete.
    fn finish_record(&mut self) {
        if let Some((mut record, queued_before)) = self.current.take() {
            record.reply = self.queued - queued_before;
            self.records.push(record);
        }
    }

    /// Capabilities before login, which depend on the listener, TLS and `login_type`.
    pub fn capabilities(&self) -> String {
        let mut caps = vec!["IMAP4rev1", "LITERAL+", "ID"];
        if self.settings.starttls && !self.tls {
            caps.push("STARTTLS");
        }
        if self.authenticate_allowed() {
            caps.extend(["SASL-IR", "AUTH=PLAIN", "AUTH=LOGIN"]);
            for m in &self.settings.token_mechanisms {
                caps.push(match m {
                    TokenMechanism::OAuthBearer => "AUTH=OAUTHBEARER",
                    TokenMechanism::XOAuth2 => "AUTH=XOAUTH2",
                });
            }
        }
        if !self.login_allowed() {
            caps.push("LOGINDISABLED");
        }
        caps.join(" ")
    }

    fn login_allowed(&self) -> bool {
        self.tls || self.settings.login_type == LoginType::PlainTextLogin
    }

    fn authenticate_allowed(&self) -> bool {
        self.tls || self.settings.login_type != LoginType::SecureLogin
    }
}

mod commands;

#[cfg(test)]
mod tests;

/// The credentials of an OAUTHBEARER or XOAUTH2 message.
pub(super) fn token_credentials(
    mechanism: TokenMechanism,
    message: &[u8],
) -> Result<Credentials, CredentialError> {
    match mechanism {
        TokenMechanism::OAuthBearer => Credentials::from_oauthbearer(message),
        TokenMechanism::XOAuth2 => Credentials::from_xoauth2(message),
    }
}
