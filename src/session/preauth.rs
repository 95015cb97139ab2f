//! The IMAP4 service before login: the gate itself answers the client, parsing each command with
//! imap-codec from a buffer bounded by `max_command_size`.
//!
//! Literals: a synchronizing literal is checked against the limit before `+` is sent; a LITERAL+
//! literal is refused at once when it alone exceeds the limit, and otherwise counts against the
//! same bounded buffer as it arrives. After `STARTTLS`, whatever the client pipelined behind the
//! command is thrown away before the handshake, so injected plaintext never runs inside TLS.
//!
//! Login: the user's backend checks the credentials; only after it accepted them does the gate
//! look at `ImapEnabled`, so a reply never tells someone without the password whether a mailbox
//! exists or is disabled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::input::{self, Decoded, Discard, Discarded, SaslDecoded};
use crate::backend::{BackendSession, ClientInfo, LoginResult};
use crate::config::LoginType;
use crate::credentials::{CredentialError, Credentials};
use crate::limits::UserGuard;
use crate::listener::ListenerKind;
use crate::protocol_log::Row;
use crate::registry::{Registration, SessionInfo};
use crate::server::{Phase, Shared};
use crate::state::State;
use crate::stream::Stream;

/// Deadline for writing one answer to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How the pre-login phase ended.
pub enum PreAuthEnd {
    /// The client left, was refused or timed out; nothing more to do.
    Closed,
    LoggedIn(Box<LoggedIn>),
}

/// A session whose user is logged in on the backend, with the client already told.
pub struct LoggedIn {
    pub client: Stream,
    /// Bytes the client pipelined after its login command; they go to the backend first.
    pub client_pending: Vec<u8>,
    pub backend: BackendSession,
    /// Keeps the session in the registry until the relay ends; its entry carries the byte
    /// counters, the kick and what the protocol log's rows need.
    pub registration: Registration,
    /// Counts the session against `max_connections_per_user` until the relay ends.
    pub user_guard: UserGuard,
}

/// Why the dialogue stopped early.
enum End {
    /// Connection closed or failed; nothing can be sent.
    Gone,
    /// The pre-login deadline passed.
    Timeout,
    /// The gate is shutting down.
    Shutdown,
    /// The session ends after a `* BYE` already sent.
    Bye,
}

/// What the reader produced.
enum Input {
    Command(Box<Command<'static>>, usize),
    /// An unparseable line; the tag when one could be read.
    Bad(Option<String>),
    /// A command over the size limit (a synchronizing literal refused before its `+`, or a line
    /// discarded to its end) was dropped.
    TooBig(String),
}

/// Which command carried the credentials, for the failure text.
#[derive(Clone, Copy)]
enum Mechanism {
    Login,
    Authenticate,
}

impl Mechanism {
    fn failed(self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN failed.",
            Mechanism::Authenticate => "AUTHENTICATE failed.",
        }
    }
}

pub struct PreAuth {
    id: u64,
    client: Stream,
    /// The gate's address of this connection, for the protocol log.
    local: SocketAddr,
    /// Protocol log: rows so far, bytes answered so far, login outcome of the current command.
    seq: u64,
    sent: u64,
    outcome: &'static str,
    user: String,
    kind: ListenerKind,
    peer: SocketAddr,
    session_id: String,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    buf: Vec<u8>,
    /// Buffer length at which the synchronizing literal we said `+` to is complete.
    literal_until: Option<usize>,
    deadline: Instant,
    started: Instant,
    /// The gate's pressure: a new episode shortens the deadline (once).
    pressure: watch::Receiver<crate::limits::Pressure>,
    squeezed: bool,
    client_id: Vec<(String, Option<String>)>,
    bad_commands: u32,
    failed_logins: u32,
}

impl PreAuth {
    pub fn new(
        id: u64,
        client: Stream,
        local: SocketAddr,
        kind: ListenerKind,
        peer: SocketAddr,
        shared: Arc<Shared>,
        under_pressure: bool,
    ) -> PreAuth {
        let timeout = shared
            .state
            .load()
            .config
            .imap4
            .preauthenticated_connection_timeout;
        let pressure = shared.limits.pressure();
        let mut preauth = PreAuth {
            id,
            client,
            local,
            seq: 0,
            sent: 0,
            outcome: "",
            user: String::new(),
            kind,
            peer,
            session_id: crate::registry::session_id(id),
            phase: shared.phase.subscribe(),
            pressure,
            squeezed: false,
            shared,
            buf: Vec::new(),
            literal_until: None,
            deadline: Instant::now() + timeout,
            started: Instant::now(),
            client_id: Vec::new(),
            bad_commands: 0,
            failed_logins: 0,
        };
        if under_pressure {
            preauth.squeeze();
        }
        preauth
    }

    pub async fn run(mut self) -> PreAuthEnd {
        match self.dialogue().await {
            Ok(logged_in) => PreAuthEnd::LoggedIn(Box::new(logged_in)),
            Err(end) => {
                let bye: Option<&[u8]> = match end {
                    End::Gone | End::Bye => None,
                    End::Timeout => Some(b"* BYE Timed out waiting for login.\r\n"),
                    End::Shutdown => Some(b"* BYE [UNAVAILABLE] Server shutting down.\r\n"),
                };
                if let Some(bye) = bye {
                    let _ = self.send(bye).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), self.client.shutdown()).await;
                PreAuthEnd::Closed
            }
        }
    }

    fn state(&self) -> Arc<State> {
        self.shared.state.load_full()
    }

    async fn dialogue(&mut self) -> Result<LoggedIn, End> {
        let state = self.state();
        let greeting = format!(
            "* OK [CAPABILITY {}] {}\r\n",
            self.capabilities(&state),
            state.config.imap4.banner
        );
        self.send(greeting.as_bytes()).await?;
        loop {
            let (command, consumed) = match self.next_input().await? {
                Input::Command(c, consumed) => (c, consumed),
                Input::Bad(tag) => {
                    let tag = tag.as_deref().unwrap_or("*");
                    self.bad(&format!("{tag} BAD Command not understood.\r\n"))
                        .await?;
                    continue;
                }
                Input::TooBig(tag) => {
                    self.bad(&format!(
                        "{tag} BAD [TOOBIG] Command exceeds the size limit.\r\n"
                    ))
                    .await?;
                    continue;
                }
            };
            let started = std::time::Instant::now();
            let sent_before = self.sent;
            let (name, parameters) = describe(&command);
            let result = self.handle(command).await;
            self.log_row(name, parameters, consumed, sent_before, started);
            if let Some(done) = result? {
                return Ok(done);
            }
        }
    }

    /// Answers one command; `Some` once the user is logged in.
    async fn handle(&mut self, command: Box<Command<'static>>) -> Result<Option<LoggedIn>, End> {
        let tag = command.tag.inner().to_string();
        let state = self.state();
        match command.body {
            CommandBody::Capability => {
                self.bad_commands = 0;
                let reply = format!(
                    "* CAPABILITY {}\r\n{tag} OK CAPABILITY completed.\r\n",
                    self.capabilities(&state)
                );
                self.send(reply.as_bytes()).await?;
            }
            CommandBody::Noop => {
                self.bad_commands = 0;
                self.send(format!("{tag} OK NOOP completed.\r\n").as_bytes())
                    .await?;
            }
            CommandBody::Logout => {
                let reply = format!("* BYE Logging out.\r\n{tag} OK LOGOUT completed.\r\n");
                self.send(reply.as_bytes()).await?;
                return Err(End::Bye);
            }
            CommandBody::StartTLS => {
                self.bad_commands = 0;
                self.starttls(&tag, &state).await?;
            }
            CommandBody::Id { parameters } => {
                self.bad_commands = 0;
                self.client_id = input::id_parameters(parameters.unwrap_or_default());
                let reply = format!(
                    "* ID (\"name\" \"imapgate\" \"version\" \"{}\")\r\n{tag} OK ID completed.\r\n",
                    env!("CARGO_PKG_VERSION")
                );
                self.send(reply.as_bytes()).await?;
            }
            CommandBody::Login { username, password } => {
                self.bad_commands = 0;
                if !self.login_allowed(&state) {
                    return self.privacy_required(&tag).await;
                }
                let creds = Credentials::new(username.as_ref(), password.declassify().as_ref());
                return self.login(&tag, creds, Mechanism::Login, &state).await;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                self.bad_commands = 0;
                if mechanism != AuthMechanism::Plain {
                    let reply =
                        format!("{tag} NO [CANNOT] Unsupported authentication mechanism.\r\n");
                    self.send(reply.as_bytes()).await?;
                    return Ok(None);
                }
                if !self.authenticate_allowed(&state) {
                    return self.privacy_required(&tag).await;
                }
                let message = match initial_response {
                    Some(ir) => ir.declassify().to_vec(),
                    None => match self.sasl_continuation(&tag).await? {
                        Some(m) => m,
                        None => return Ok(None),
                    },
                };
                let creds = Credentials::from_sasl_plain(&message);
                return self
                    .login(&tag, creds, Mechanism::Authenticate, &state)
                    .await;
            }
            _ => {
                self.bad(&format!("{tag} BAD Command is not valid before login.\r\n"))
                    .await?;
            }
        }
        Ok(None)
    }

    /// Capabilities before login, which depend on the listener, TLS and `login_type`.
    fn capabilities(&self, state: &State) -> String {
        let mut caps = vec!["IMAP4rev1", "LITERAL+", "ID"];
        if self.kind == ListenerKind::Plain && !self.client.is_tls() && state.acceptor.is_some() {
            caps.push("STARTTLS");
        }
        if self.authenticate_allowed(state) {
            caps.extend(["SASL-IR", "AUTH=PLAIN"]);
        }
        if !self.login_allowed(state) {
            caps.push("LOGINDISABLED");
        }
        caps.join(" ")
    }

    fn login_allowed(&self, state: &State) -> bool {
        self.client.is_tls() || state.config.imap4.login_type == LoginType::PlainTextLogin
    }

    fn authenticate_allowed(&self, state: &State) -> bool {
        self.client.is_tls() || state.config.imap4.login_type != LoginType::SecureLogin
    }

    async fn privacy_required(&mut self, tag: &str) -> Result<Option<LoggedIn>, End> {
        let reply = format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port first.\r\n");
        self.send(reply.as_bytes()).await?;
        self.record_outcome("privacy_required");
        tracing::info!(outcome = "privacy_required", "login refused before TLS");
        Ok(None)
    }

    async fn starttls(&mut self, tag: &str, state: &State) -> Result<(), End> {
        let acceptor = match (&state.acceptor, self.kind, self.client.is_tls()) {
            (Some(a), ListenerKind::Plain, false) => a.clone(),
            _ => {
                let reply = format!("{tag} BAD STARTTLS is not available here.\r\n");
                return self.send(reply.as_bytes()).await;
            }
        };
        self.send(format!("{tag} OK Begin TLS negotiation now.\r\n").as_bytes())
            .await?;
        if !self.buf.is_empty() {
            tracing::info!(
                bytes = self.buf.len(),
                "discarded plaintext pipelined after STARTTLS"
            );
            self.buf.clear();
        }
        self.literal_until = None;
        let Stream::Plain(tcp) = self.client.detach() else {
            return Err(End::Gone);
        };
        let timeout = state.config.imap4.tls_handshake_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.client = Stream::ServerTls(Box::new(tls));
                tracing::debug!("STARTTLS complete");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "STARTTLS handshake failed");
                Err(End::Gone)
            }
            Err(_) => {
                tracing::debug!("STARTTLS handshake timed out");
                Err(End::Gone)
            }
        }
    }

    /// Reads the client's SASL PLAIN response after an empty `+`. `None` when cancelled or
    /// malformed (the client was answered).
    async fn sasl_continuation(&mut self, tag: &str) -> Result<Option<Vec<u8>>, End> {
        self.send(b"+ \r\n").await?;
        loop {
            match input::decode_sasl(&self.buf, self.max_command_size()) {
                SaslDecoded::Message { message, consumed } => {
                    self.buf.drain(..consumed);
                    return Ok(Some(message));
                }
                SaslDecoded::Cancel { consumed } => {
                    self.buf.drain(..consumed);
                    let reply = format!("{tag} BAD AUTHENTICATE cancelled.\r\n");
                    self.send(reply.as_bytes()).await?;
                    return Ok(None);
                }
                SaslDecoded::NeedMore => self.fill().await?,
                SaslDecoded::TooLong => {
                    self.discard(Discard::line()).await?;
                    self.bad(&format!(
                        "{tag} BAD [TOOBIG] Command exceeds the size limit.\r\n"
                    ))
                    .await?;
                    return Ok(None);
                }
                SaslDecoded::Bad { consumed } => {
                    self.buf.drain(..consumed);
                    self.bad(&format!("{tag} BAD Invalid base64 in AUTHENTICATE.\r\n"))
                        .await?;
                    return Ok(None);
                }
            }
        }
    }

    /// Has the backend check the credentials, then applies the mailbox's policy.
    async fn login(
        &mut self,
        tag: &str,
        creds: Result<Credentials, CredentialError>,
        mechanism: Mechanism,
        state: &State,
    ) -> Result<Option<LoggedIn>, End> {
        // One address, a few logins at a time: the penalty below then sees the failures of
        // the logins before it, however many connections the address opened.
        let _slot = self.login_slot(state).await?;
        self.penalty_wait(state).await?;
        let creds = match creds {
            Ok(c) => c,
            Err(e) => {
                self.record_outcome("auth_failed");
                tracing::info!(outcome = "auth_failed", reason = %e, "login refused before the backend");
                return self.login_failed(tag, mechanism).await;
            }
        };
        self.user = creds.user.clone();
        #[cfg(feature = "fault-injection")]
        if creds.user == "fault-injection-panic" {
            panic!("fault injection: this session panics");
        }
        let Some(policy) = state.policies.resolve(&creds.user) else {
            return self
                .refuse_unknown(tag, &creds.user, mechanism, state)
                .await;
        };
        let Some(backend) = state.backends.get(&*policy.backend).cloned() else {
            // Cannot happen with a validated directory; answered as an outage, not a panic.
            tracing::error!(backend = %policy.backend, "mailbox names an unknown backend");
            return self.unavailable(tag).await;
        };
        // The backend hears the mailbox's own login, never another spelling of it.
        let backend_creds = Credentials {
            user: policy.backend_login.to_string(),
            password: creds.password.clone(),
        };
        let client = ClientInfo {
            peer: Some(self.peer),
            session_id: self.session_id.clone(),
            id: self.client_id.clone(),
        };
        let started = std::time::Instant::now();
        // The client's own deadline and a shutdown still apply while the backend works.
        let result = tokio::select! {
            r = backend.login(&backend_creds, &client, &self.shared.metrics) => r,
            _ = tokio::time::sleep_until(self.deadline) => return Err(End::Timeout),
            _ = self.phase.wait_for(|p| *p != Phase::Running) => return Err(End::Shutdown),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let user = creds.user.as_str();
        let mailbox = policy.mailbox.as_deref().unwrap_or("-");
        match result {
            Err(e) => {
                self.record_outcome("unavailable");
                tracing::warn!(outcome = "unavailable", user, backend = %backend.name, elapsed_ms, error = %e, "backend unavailable");
                self.unavailable(tag).await
            }
            Ok(LoginResult::Rejected) => {
                self.record_outcome("auth_failed");
                tracing::info!(outcome = "auth_failed", user, backend = %backend.name, elapsed_ms, "login failed");
                self.login_failed(tag, mechanism).await
            }
            Ok(LoginResult::LoggedIn(mut session)) => {
                // Register first, then decide with the directory in force now: a reload during the
                // backend login either came before this lookup or finds the session registered.
                let registration = self.shared.registry.register(
                    SessionInfo {
                        id: self.id,
                        user: creds.user.clone(),
                        mailbox: policy.mailbox.as_deref().map(String::from),
                        mailbox_key: policy.mailbox_key.to_string(),
                        backend_login: policy.backend_login.to_string(),
                        client: self.peer,
                        server: self.local,
                        listener: self.kind.name(),
                        backend: backend.name.to_string(),
                        since: std::time::SystemTime::now(),
                    },
                    // This login's own row comes next.
                    self.seq + 2,
                );
                let current = self.state();
                let now = current.policies.resolve(user);
                if !now.is_some_and(|p| p.imap_enabled) {
                    tracing::info!(outcome = "disabled", user, mailbox, backend = %backend.name, elapsed_ms, "IMAP4 is disabled for this mailbox");
                    let reply = format!(
                        "{tag} NO [CONTACTADMIN] {}\r\n",
                        current.config.imap4.disabled_message
                    );
                    return self
                        .refuse_logged_in(session, registration, "disabled", reply)
                        .await;
                }
                let limit = current.config.imap4.max_connections_per_user;
                let key = policy.mailbox_key.to_string();
                let Ok(user_guard) = self.shared.limits.login(key, limit) else {
                    tracing::info!(outcome = "limit", user, mailbox, backend = %backend.name, limit, "too many sessions for this mailbox");
                    let reply =
                        format!("{tag} NO [LIMIT] Too many connections for this mailbox.\r\n");
                    return self
                        .refuse_logged_in(session, registration, "limit", reply)
                        .await;
                };
                tracing::Span::current().record("user", user);
                self.record_outcome("ok");
                tracing::info!(outcome = "ok", mailbox, backend = %backend.name, elapsed_ms, "logged in");
                let mut reply = std::mem::take(&mut session.prelude);
                reply.extend_from_slice(format!("{tag} OK {}\r\n", session.ok_text).as_bytes());
                self.send(&reply).await?;
                Ok(Some(LoggedIn {
                    client: self.client.detach(),
                    client_pending: std::mem::take(&mut self.buf),
                    backend: session,
                    registration,
                    user_guard,
                }))
            }
        }
    }

    /// A name the directory does not let in: the same answer, after the same backend round trip,
    /// as a wrong password. The backend is asked to log in as the name typed (characters that
    /// mean something to it replaced) with a random password, which it refuses as it refuses a
    /// wrong one (with its own failure delay); the client's password never reaches it.
    async fn refuse_unknown(
        &mut self,
        tag: &str,
        user: &str,
        mechanism: Mechanism,
        state: &State,
    ) -> Result<Option<LoggedIn>, End> {
        let policies = &state.policies;
        let reason = if policies.has_refused_character(user) {
            "the name has a character backends give a meaning to"
        } else {
            "the name is not in the directory"
        };
        let default = &policies.directory().default_backend;
        let Some(backend) = state.backends.get(&**default).cloned() else {
            tracing::error!(backend = %default, "the default backend is not configured");
            return self.unavailable(tag).await;
        };
        let decoy_user: String = user
            .chars()
            .map(|c| if policies.is_refused(c) { '_' } else { c })
            .collect();
        let decoy = Credentials {
            user: decoy_user,
            password: crate::credentials::Password::random(),
        };
        let client = ClientInfo {
            peer: Some(self.peer),
            session_id: self.session_id.clone(),
            id: self.client_id.clone(),
        };
        let result = tokio::select! {
            r = backend.login(&decoy, &client, &self.shared.metrics) => r,
            _ = tokio::time::sleep_until(self.deadline) => return Err(End::Timeout),
            _ = self.phase.wait_for(|p| *p != Phase::Running) => return Err(End::Shutdown),
        };
        match result {
            // As a known name would meet the same outage.
            Err(e) => {
                self.record_outcome("unavailable");
                tracing::warn!(outcome = "unavailable", backend = %backend.name, error = %e, "backend unavailable");
                return self.unavailable(tag).await;
            }
            Ok(LoginResult::LoggedIn(session)) => session.logout().await,
            Ok(LoginResult::Rejected) => {}
        }
        self.record_outcome("auth_failed");
        tracing::info!(
            outcome = "auth_failed",
            reason,
            "login refused before the backend saw the password"
        );
        self.login_failed(tag, mechanism).await
    }

    /// Counts a login outcome and keeps it for the protocol log row of this command.
    fn record_outcome(&mut self, outcome: &'static str) {
        self.outcome = outcome;
        self.shared.metrics.login(outcome);
    }

    /// One protocol log row for the command just answered.
    fn log_row(
        &mut self,
        command: &'static str,
        parameters: String,
        rq_size: usize,
        sent_before: u64,
        started: std::time::Instant,
    ) {
        if !self.shared.protocol_log.enabled() {
            return;
        }
        self.seq += 1;
        self.shared.protocol_log.log(Row {
            time: std::time::SystemTime::now(),
            session: self.session_id.clone(),
            seq: self.seq,
            server: self.local,
            client: self.peer,
            user: self.user.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
            rq_size: rq_size as u64,
            rp_size: self.sent - sent_before,
            command: command.to_string(),
            parameters,
            context: std::mem::take(&mut self.outcome).to_string(),
        });
    }

    /// Waits for one of the address's `max_logins_in_progress_from_single_ip` login slots
    /// (trusted networks have no such limit).
    async fn login_slot(&mut self, state: &State) -> Result<Option<crate::limits::LoginSlot>, End> {
        let imap4 = &state.config.imap4;
        let ip = self.peer.ip();
        if imap4.trusted_networks.iter().any(|n| n.contains(&ip)) {
            return Ok(None);
        }
        let max = imap4.max_logins_in_progress_from_single_ip;
        let limits = self.shared.limits.clone();
        tokio::select! {
            slot = limits.login_slot(ip, max) => Ok(Some(slot)),
            _ = tokio::time::sleep_until(self.deadline) => Err(End::Timeout),
            _ = self.phase.wait_for(|p| *p != Phase::Running) => Err(End::Shutdown),
        }
    }

    /// Waits out the failed-login penalty of the client's address (none for trusted networks),
    /// before anything else: every outcome of this login pays it alike.
    async fn penalty_wait(&mut self, state: &State) -> Result<(), End> {
        let imap4 = &state.config.imap4;
        let ip = self.peer.ip();
        if imap4.trusted_networks.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        let delay =
            self.shared
                .penalty
                .delay(ip, imap4.auth_penalty_initial, imap4.auth_penalty_max);
        if delay.is_zero() {
            return Ok(());
        }
        tracing::info!(
            address = %ip,
            seconds = delay.as_secs_f64(),
            failures = self.shared.penalty.failures(ip),
            "failed-login penalty: this login waits"
        );
        self.shared.metrics.penalty_waits.inc();
        self.shared
            .metrics
            .penalty_seconds
            .inc_by(delay.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = tokio::time::sleep_until(self.deadline) => Err(End::Timeout),
            _ = self.phase.wait_for(|p| *p != Phase::Running) => Err(End::Shutdown),
        }
    }

    /// The backend accepted the password but the gate says no: log the backend session out,
    /// forget the registration, answer.
    async fn refuse_logged_in(
        &mut self,
        session: BackendSession,
        registration: Registration,
        outcome: &'static str,
        reply: String,
    ) -> Result<Option<LoggedIn>, End> {
        drop(registration);
        session.logout().await;
        self.record_outcome(outcome);
        self.send(reply.as_bytes()).await?;
        Ok(None)
    }

    async fn unavailable(&mut self, tag: &str) -> Result<Option<LoggedIn>, End> {
        let reply = format!(
            "{tag} NO [UNAVAILABLE] The mailbox server is not available; try again later.\r\n"
        );
        self.send(reply.as_bytes()).await?;
        Ok(None)
    }

    async fn login_failed(
        &mut self,
        tag: &str,
        mechanism: Mechanism,
    ) -> Result<Option<LoggedIn>, End> {
        self.shared.penalty.failed(self.peer.ip());
        self.failed_logins += 1;
        let reply = format!("{tag} NO [AUTHENTICATIONFAILED] {}\r\n", mechanism.failed());
        self.send(reply.as_bytes()).await?;
        if self.failed_logins >= self.state().config.imap4.max_failed_login_attempts {
            self.send(b"* BYE Too many failed logins.\r\n").await?;
            return Err(End::Bye);
        }
        Ok(None)
    }

    /// Answers a bad command; too many in a row end the session.
    async fn bad(&mut self, reply: &str) -> Result<(), End> {
        self.bad_commands += 1;
        self.send(reply.as_bytes()).await?;
        if self.bad_commands >= self.state().config.imap4.max_bad_commands {
            self.send(b"* BYE Too many invalid commands.\r\n").await?;
            return Err(End::Bye);
        }
        Ok(())
    }

    fn max_command_size(&self) -> usize {
        self.shared.state.load().config.imap4.max_command_size
    }

    /// The next command, reading as needed; sends `+` for synchronizing literals within the limit.
    async fn next_input(&mut self) -> Result<Input, End> {
        let max = self.max_command_size();
        loop {
            if let Some(until) = self.literal_until {
                if self.buf.len() < until {
                    self.fill().await?;
                    continue;
                }
                self.literal_until = None;
            }
            match input::decode(&self.buf, max) {
                Decoded::Command { command, consumed } => {
                    self.buf.drain(..consumed);
                    return Ok(Input::Command(command, consumed));
                }
                Decoded::NeedMore => self.fill().await?,
                Decoded::Continue { until } => {
                    self.literal_until = Some(until);
                    self.send(b"+ Ready for literal data\r\n").await?;
                }
                Decoded::LiteralTooBig { tag } => {
                    self.buf.clear();
                    return Ok(Input::TooBig(tag));
                }
                Decoded::TooLong => return self.too_long().await,
                Decoded::Overlong { tag } => {
                    self.discard(Discard::command(max)).await?;
                    return Ok(Input::TooBig(tag.unwrap_or_else(|| "*".into())));
                }
                Decoded::Bad { tag, consumed } => {
                    self.buf.drain(..consumed);
                    return Ok(Input::Bad(tag));
                }
                Decoded::BadLiteral { tag } => {
                    let tag = tag.as_deref().unwrap_or("*");
                    let reply = format!(
                        "{tag} BAD Command not understood.\r\n* BYE Cannot resynchronize after an invalid command with a literal.\r\n"
                    );
                    self.send(reply.as_bytes()).await?;
                    return Err(End::Bye);
                }
            }
        }
    }

    /// Throws away the rest of a command too long to keep (what is buffered first, then what
    /// arrives), leaving in the buffer what follows it. A LITERAL+ literal over the limit inside
    /// it ends the session: where the command ends can no longer be known.
    async fn discard(&mut self, mut discard: Discard) -> Result<(), End> {
        let mut sync_answered = true;
        loop {
            match discard.feed(&self.buf, sync_answered) {
                Discarded::NeedMore => self.buf.clear(),
                Discarded::Ended { consumed } => {
                    self.buf.drain(..consumed);
                    self.literal_until = None;
                    tracing::debug!("discarded a command over the size limit");
                    return Ok(());
                }
                Discarded::Unsyncable => return self.too_long().await,
            }
            sync_answered = false;
            self.fill().await?;
        }
    }

    async fn too_long<T>(&mut self) -> Result<T, End> {
        self.send(b"* BYE [TOOBIG] Command exceeds the size limit.\r\n")
            .await?;
        Err(End::Bye)
    }

    /// Reads more from the client, never past `max_command_size`, within the deadline.
    async fn fill(&mut self) -> Result<(), End> {
        let room = self
            .max_command_size()
            .saturating_sub(self.buf.len())
            .max(1);
        let mut chunk = [0u8; 4096];
        let want = room.min(chunk.len());
        let mut pressure_changed = None;
        let n = tokio::select! {
            r = self.client.read(&mut chunk[..want]) => r.map_err(|_| End::Gone)?,
            _ = tokio::time::sleep_until(self.deadline) => return Err(End::Timeout),
            _ = self.phase.wait_for(|p| *p != Phase::Running) => return Err(End::Shutdown),
            r = self.pressure.changed(), if !self.squeezed => {
                pressure_changed = Some(r.is_ok());
                0
            }
        };
        match pressure_changed {
            // A session not squeezed yet began while there was no pressure: any change since is
            // a new episode (even one over by now), and waiting clients get the short deadline.
            Some(true) => {
                self.squeeze();
                return Ok(());
            }
            // The gate is going away (its limits with it): nothing more to follow.
            Some(false) => {
                self.squeezed = true;
                return Ok(());
            }
            None => {}
        }
        if n == 0 {
            return Err(End::Gone);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The gate is under pressure: a client waiting to log in gets
    /// `preauthenticated_connection_timeout_under_pressure` from its connect, not more.
    fn squeeze(&mut self) {
        self.squeezed = true;
        let shorter = self
            .state()
            .config
            .imap4
            .preauthenticated_connection_timeout_under_pressure;
        let squeezed = self.started + shorter;
        if squeezed < self.deadline {
            self.deadline = squeezed;
            tracing::debug!("the gate is under pressure: pre-login deadline shortened");
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.sent += bytes.len() as u64;
        let write = async {
            self.client.write_all(bytes).await?;
            self.client.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }
}

/// A command's name and its protocol log parameters: never a password or SASL message.
fn describe(command: &Command<'_>) -> (&'static str, String) {
    let parameters = match &command.body {
        CommandBody::Login { username, .. } => {
            format!("{} *****", String::from_utf8_lossy(username.as_ref()))
        }
        CommandBody::Authenticate { mechanism, .. } => mechanism.to_string(),
        _ => String::new(),
    };
    (command.body.name(), parameters)
}
