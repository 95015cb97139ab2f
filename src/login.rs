//! The Login service: everything a login does, in one place, after the pre-login dialogue has
//! read the credentials.
//!
//! One address's slot (a few logins at a time), its failed-login penalty, the credentials'
//! checks, the directory (through its cache), the backend login on the user's behalf, the
//! `ImapEnabled` check, the mailbox's session limit, and the registration of the session. It
//! knows nothing of sockets towards the client: it answers with an [`Outcome`] that the dialogue
//! turns into words. Its seams are the [`Credentials`] enum, the [`crate::directory::Directory`]
//! behind the state's cache, and the [`SessionLimiter`].
//!
//! Nobody without the password learns whether a mailbox exists or is disabled: a name the
//! directory does not let in costs the same backend round trip as a wrong password (a decoy
//! login, the client's password never sent), and only a password the backend accepted gets to
//! hear `CONTACTADMIN` or `LIMIT`.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use async_trait::async_trait;

use crate::backend::{BackendError, BackendSession, ClientInfo, LoginResult};
use crate::credentials::{CredentialError, Credentials};
use crate::errors::{Blame, Blamed};
use crate::limits::{Connections, LoginSlot, Penalty, SessionLimiter, SessionPermit};
use crate::metrics::Metrics;
use crate::protocol_log::SessionLog;
use crate::registry::{session_id, Registration, Registry, SessionInfo};
use crate::state::State;

/// Who is logging in, from where.
#[derive(Debug, Clone)]
pub struct Client {
    /// The session's number (its id in logs is [`session_id`]).
    pub id: u64,
    pub peer: SocketAddr,
    /// The gate's address the client reached.
    pub local: SocketAddr,
    /// `imap` or `imaps`.
    pub listener: &'static str,
    /// The client's ID parameters, already bounded.
    pub id_parameters: Vec<(String, Option<String>)>,
    pub log: Option<Arc<SessionLog>>,
}

/// The answer to a login.
pub enum Outcome {
    LoggedIn(Box<LoggedIn>),
    Refused(Refusal),
}

/// Why a login was refused; each has one answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong credentials, a name the directory does not let in, or unusable credentials: the
    /// same `AUTHENTICATIONFAILED`, counted as a failure of the address.
    AuthFailed,
    /// The backend accepted the password, but IMAP4 is disabled for the mailbox.
    Disabled { message: String },
    /// The backend accepted the password, but the mailbox has its share of sessions.
    Limit,
    /// Nobody could check the credentials (backend down or misbehaving, or the gate's own
    /// set-up): no penalty, the client may try again.
    Unavailable,
}

impl Outcome {
    /// The outcome's name in logs, metrics and the protocol log.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::LoggedIn(_) => "ok",
            Outcome::Refused(r) => r.name(),
        }
    }
}

impl Refusal {
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::AuthFailed => "auth_failed",
            Refusal::Disabled { .. } => "disabled",
            Refusal::Limit => "limit",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// A session logged in on its backend, counted and registered: what the relay needs.
pub struct LoggedIn {
    pub backend: BackendSession,
    /// Keeps the session in the registry until the relay ends.
    pub registration: Registration,
    /// Counts the session against `max_connections_per_user` until the relay ends.
    pub permit: SessionPermit,
    /// The name the client logged in with.
    pub user: String,
}

/// Where the credentials are checked: the configured backends (the gate's), or a stand-in.
#[async_trait]
pub trait Backends: Send + Sync {
    /// Logs in on the backend named `backend` of `state`.
    async fn login(
        &self,
        state: &State,
        backend: &str,
        creds: &Credentials,
        client: &ClientInfo,
    ) -> Result<LoginResult, BackendError>;
}

/// The backends of the configuration in force.
pub struct Configured {
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl Backends for Configured {
    async fn login(
        &self,
        state: &State,
        backend: &str,
        creds: &Credentials,
        client: &ClientInfo,
    ) -> Result<LoginResult, BackendError> {
        // Cannot be missing with a validated directory; answered as an outage, not a panic.
        let b = state.backends.get(backend).ok_or_else(|| {
            BackendError::Configuration(format!("backend {backend:?} is not configured"))
        })?;
        b.login(creds, client, &self.metrics).await
    }
}

pub struct Login {
    state: Arc<ArcSwap<State>>,
    backends: Arc<dyn Backends>,
    sessions: Arc<dyn SessionLimiter>,
    connections: Arc<Connections>,
    penalty: Penalty,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// `[fleet]`: the penalty counted for every gate.
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl Login {
    /// Shares the failed-login penalty with the fleet.
    pub fn with_fleet(mut self, fleet: Arc<crate::fleet::Fleet>) -> Login {
        self.fleet = Some(fleet);
        self
    }

    pub fn new(
        state: Arc<ArcSwap<State>>,
        backends: Arc<dyn Backends>,
        sessions: Arc<dyn SessionLimiter>,
        connections: Arc<Connections>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Login {
        Login {
            state,
            backends,
            sessions,
            connections,
            penalty: Penalty::default(),
            fleet: None,
            registry,
            metrics,
        }
    }

    /// The failed-login penalty, for `imapgate test-login` (through the control socket).
    pub fn penalty(&self) -> &Penalty {
        &self.penalty
    }

    /// The session limiter (usage figures).
    pub fn sessions(&self) -> &Arc<dyn SessionLimiter> {
        &self.sessions
    }

    /// Logs `client` in with `credentials`. Cancel-safe: dropped midway (the client's deadline,
    /// a shutdown), it releases whatever it held.
    pub async fn login(
        &self,
        credentials: Result<Credentials, CredentialError>,
        client: &Client,
    ) -> Outcome {
        let state = self.state.load_full();
        // One address, a few logins at a time: the penalty below then sees the failures of the
        // logins before it, however many connections the address opened.
        let _slot = self.slot(&state, client).await;
        self.penalty_wait(&state, client).await;
        let outcome = self.attempt(&state, credentials, client).await;
        let name = outcome.name();
        self.metrics.login(name);
        if let Outcome::Refused(Refusal::AuthFailed) = outcome {
            // Counted before the answer is sent.
            self.penalty.failed(client.peer.ip());
            if let Some(fleet) = &self.fleet {
                fleet.penalty_failed(client.peer.ip());
            }
        }
        outcome
    }

    async fn attempt(
        &self,
        state: &State,
        credentials: Result<Credentials, CredentialError>,
        client: &Client,
    ) -> Outcome {
        let creds = match credentials {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(outcome = "auth_failed", blame = %Blame::Client, reason = %e, "login refused before the backend");
                return Outcome::Refused(Refusal::AuthFailed);
            }
        };
        #[cfg(feature = "fault-injection")]
        if creds.user() == "fault-injection-panic" {
            panic!("fault injection: this session panics");
        }
        let creds = match self.token_checked(state, creds).await {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        let policy = match state.policies.resolve(creds.user()).await {
            Ok(Some(p)) => p,
            Ok(None) => return self.refuse_unknown(state, creds.user(), client).await,
            Err(e) => {
                self.unavailable(&e, "directory");
                return Outcome::Refused(Refusal::Unavailable);
            }
        };
        let backend = &policy.backend;
        // The backend hears the mailbox's own login, never another spelling of it.
        let backend_creds = creds.for_user(&policy.backend_login);
        let started = std::time::Instant::now();
        let result = self
            .backends
            .login(state, backend, &backend_creds, &client_info(client))
            .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let user = creds.user();
        let session = match result {
            Err(e) => {
                tracing::warn!(outcome = "unavailable", blame = %e.blame(), user, backend = %backend, elapsed_ms, error = %e, "backend unavailable");
                self.metrics.error(e.blame(), "login");
                return Outcome::Refused(Refusal::Unavailable);
            }
            Ok(LoginResult::Rejected) => {
                tracing::info!(outcome = "auth_failed", blame = %Blame::Client, user, backend = %backend, elapsed_ms, "login failed");
                return Outcome::Refused(Refusal::AuthFailed);
            }
            Ok(LoginResult::LoggedIn(session)) => session,
        };
        let mailbox = policy.mailbox.as_deref().unwrap_or("-");
        // Register first, then decide with the directory in force now: a reload during the
        // backend login either came before this lookup or finds the session registered.
        let registration = self.registry.register(
            SessionInfo {
                id: client.id,
                user: user.to_string(),
                mailbox: policy.mailbox.as_deref().map(String::from),
                mailbox_key: policy.mailbox_key.to_string(),
                backend_login: policy.backend_login.to_string(),
                client: client.peer,
                server: client.local,
                listener: client.listener,
                backend: backend.to_string(),
                since: std::time::SystemTime::now(),
            },
            client.log.clone(),
        );
        let current = self.state.load_full();
        let enabled = match current.policies.resolve(user).await {
            Ok(now) => now.is_some_and(|p| p.imap_enabled),
            Err(e) => {
                self.unavailable(&e, "directory");
                drop(registration);
                session.logout().await;
                return Outcome::Refused(Refusal::Unavailable);
            }
        };
        if !enabled {
            tracing::info!(outcome = "disabled", user, mailbox, backend = %backend, elapsed_ms, "IMAP4 is disabled for this mailbox");
            drop(registration);
            session.logout().await;
            let message = current.config.imap4.disabled_message.clone();
            return Outcome::Refused(Refusal::Disabled { message });
        }
        let limit = current.config.imap4.max_connections_per_user;
        let permit = match self.sessions.acquire(&policy.mailbox_key, limit).await {
            Ok(p) => p,
            Err(_) => {
                tracing::info!(outcome = "limit", user, mailbox, backend = %backend, limit, "too many sessions for this mailbox");
                drop(registration);
                session.logout().await;
                return Outcome::Refused(Refusal::Limit);
            }
        };
        tracing::Span::current().record("user", user);
        tracing::info!(outcome = "ok", mailbox, backend = %backend, elapsed_ms, "logged in");
        Outcome::LoggedIn(Box::new(LoggedIn {
            backend: session,
            registration,
            permit,
            user: user.to_string(),
        }))
    }

    /// A name the directory does not let in: the same answer, after the same backend round trip,
    /// as a wrong password. The default backend is asked to log in as the name typed (characters
    /// that mean something to it replaced) with a random password, which it refuses as it
    /// refuses a wrong one (with its own failure delay); the client's password never reaches it.
    async fn refuse_unknown(&self, state: &State, user: &str, client: &Client) -> Outcome {
        let policies = &state.policies;
        let reason = if policies.has_refused_character(user) {
            "the name has a character backends give a meaning to"
        } else {
            "the name is not in the directory"
        };
        let (_, backend) = policies.source().defaults();
        let decoy_user: String = user
            .chars()
            .map(|c| if policies.is_refused(c) { '_' } else { c })
            .collect();
        let decoy = Credentials::decoy(decoy_user);
        match self
            .backends
            .login(state, &backend, &decoy, &client_info(client))
            .await
        {
            // As a known name would meet the same outage.
            Err(e) => {
                tracing::warn!(outcome = "unavailable", blame = %e.blame(), backend = %backend, error = %e, "backend unavailable");
                self.metrics.error(e.blame(), "login");
                return Outcome::Refused(Refusal::Unavailable);
            }
            Ok(LoginResult::LoggedIn(session)) => session.logout().await,
            Ok(LoginResult::Rejected) => {}
        }
        tracing::info!(outcome = "auth_failed", blame = %Blame::Client, reason, "login refused before the backend saw the password");
        Outcome::Refused(Refusal::AuthFailed)
    }

    /// A bearer token under `[oauth] mode = "introspect"`: checked at the endpoint before
    /// anything else, and the user it names must be the token's (the same mailbox); a message
    /// naming no user takes the token's. Other credentials pass unchanged.
    async fn token_checked(
        &self,
        state: &State,
        creds: Credentials,
    ) -> Result<Credentials, Outcome> {
        let refuse = |reason: &str| {
            tracing::info!(outcome = "auth_failed", blame = %Blame::Client, reason, "token refused before the backend");
            Outcome::Refused(Refusal::AuthFailed)
        };
        if creds.token_mechanism().is_none() {
            return Ok(creds);
        }
        let Some(introspector) = &state.introspector else {
            if creds.user().is_empty() {
                return Err(refuse("the token message names no user"));
            }
            return Ok(creds);
        };
        let user = match introspector.check(creds.secret()).await {
            Ok(crate::oauth::Verdict::Active { user }) => user,
            Ok(crate::oauth::Verdict::Refused) => {
                return Err(refuse(
                    "the token is not active, has expired, or names no user",
                ))
            }
            Err(e) => {
                self.unavailable(&e, "token introspection");
                return Err(Outcome::Refused(Refusal::Unavailable));
            }
        };
        let named = creds.user();
        if named.is_empty() || named.eq_ignore_ascii_case(&user) {
            return Ok(creds.for_user(&user));
        }
        // Two spellings of one mailbox (an alias and an address, say) are the same user.
        let same = match (
            state.policies.resolve(named).await,
            state.policies.resolve(&user).await,
        ) {
            (Ok(Some(a)), Ok(Some(b))) => a.mailbox_key == b.mailbox_key,
            (Err(e), _) | (_, Err(e)) => {
                self.unavailable(&e, "directory");
                return Err(Outcome::Refused(Refusal::Unavailable));
            }
            _ => false,
        };
        if same {
            Ok(creds)
        } else {
            Err(refuse(
                "the token belongs to another user than the one named",
            ))
        }
    }

    fn unavailable(&self, e: &dyn std::fmt::Display, what: &str) {
        tracing::error!(outcome = "unavailable", blame = %Blame::Gate, error = %e, "{what} unavailable");
        self.metrics.error(Blame::Gate, "login");
    }

    /// One of the address's `max_logins_in_progress_from_single_ip` login slots (trusted
    /// networks have no such limit).
    async fn slot(&self, state: &State, client: &Client) -> Option<LoginSlot> {
        let imap4 = &state.config.imap4;
        let ip = client.peer.ip();
        if imap4.trusted_networks.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        let max = imap4.max_logins_in_progress_from_single_ip;
        Some(self.connections.login_slot(ip, max).await)
    }

    /// Waits out the failed-login penalty of the client's address (none for trusted networks),
    /// before anything else: every outcome of this login pays it alike.
    async fn penalty_wait(&self, state: &State, client: &Client) {
        let imap4 = &state.config.imap4;
        let ip = client.peer.ip();
        if imap4.trusted_networks.iter().any(|n| n.contains(&ip)) {
            return;
        }
        let mut failures = self.penalty.failures(ip);
        if let Some(fleet) = &self.fleet {
            // The fleet's count, when Redis answers in time: failures at every gate.
            if let Some(everywhere) = fleet.penalty_failures(ip).await {
                failures = failures.max(everywhere);
            }
        }
        let delay =
            Penalty::delay_for(failures, imap4.auth_penalty_initial, imap4.auth_penalty_max);
        if delay.is_zero() {
            return;
        }
        tracing::info!(
            address = %ip,
            seconds = delay.as_secs_f64(),
            failures,
            "failed-login penalty: this login waits"
        );
        self.metrics.penalty_waits.inc();
        self.metrics.penalty_seconds.inc_by(delay.as_secs_f64());
        tokio::time::sleep(delay).await;
    }
}

fn client_info(client: &Client) -> ClientInfo {
    ClientInfo {
        peer: Some(client.peer),
        local: Some(client.local),
        session_id: session_id(client.id),
        id: client.id_parameters.clone(),
    }
}

#[cfg(test)]
mod tests;
