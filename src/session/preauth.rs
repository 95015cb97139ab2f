//! The I/O around the pre-login [`Dialogue`]: reads what it asks for within the client's deadline,
//! writes what it queues, runs the [`crate::login`] service when it asks for a login, does the
//! TLS handshake after STARTTLS, and writes a protocol log row per command. Every wait here ends
//! at the pre-login deadline (shortened when the gate is under pressure) or at a shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::dialogue::{Answer, Dialogue, Record, Settings, Step};
use super::{Context, ListenerKind};
use crate::backend::BackendSession;
use crate::errors::Blame;
use crate::limits::{Pressure, SessionPermit};
use crate::login::{self, Outcome, Refusal};
use crate::phase::Phase;
use crate::protocol_log::{Entry, SessionLog};
use crate::registry::Registration;
use crate::stream::{read_into, Stream};

/// Deadline for writing one answer to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A session whose user is logged in on the backend, with the client already told.
pub struct LoggedIn {
    pub client: Stream,
    /// Bytes the client pipelined after its login command; they go to the backend first.
    pub client_pending: Vec<u8>,
    pub backend: BackendSession,
    /// Keeps the session in the registry until the relay ends; its entry carries the byte
    /// counters, the kick and the protocol log.
    pub registration: Registration,
    /// Counts the session against `max_connections_per_user` until the relay ends.
    pub permit: SessionPermit,
}

/// Why reading stopped.
enum Stop {
    /// The client went away or its connection failed.
    Gone(std::io::Error),
    Timeout,
    Shutdown,
}

pub struct PreAuth {
    id: u64,
    client: Stream,
    local: SocketAddr,
    kind: ListenerKind,
    peer: SocketAddr,
    ctx: Arc<Context>,
    dialogue: Dialogue,
    log: Option<Arc<SessionLog>>,
    phase: watch::Receiver<Phase>,
    deadline: Instant,
    started: Instant,
    /// The gate's pressure: a new episode shortens the deadline (once).
    pressure: watch::Receiver<Pressure>,
    squeezed: bool,
}

impl PreAuth {
    pub fn new(
        id: u64,
        client: Stream,
        local: SocketAddr,
        kind: ListenerKind,
        peer: SocketAddr,
        ctx: Arc<Context>,
        under_pressure: bool,
    ) -> PreAuth {
        let state = ctx.state.load();
        let imap4 = &state.config.imap4;
        let settings = Settings {
            max_command_size: imap4.max_command_size,
            max_bad_commands: imap4.max_bad_commands,
            max_failed_login_attempts: imap4.max_failed_login_attempts,
            login_type: imap4.login_type,
            banner: imap4.banner.clone(),
            starttls: kind == ListenerKind::Plain && state.acceptor.is_some(),
            token_mechanisms: state.token_mechanisms(),
        };
        let timeout = imap4.preauthenticated_connection_timeout;
        drop(state);
        let log = SessionLog::open(
            &ctx.protocol_log,
            crate::registry::session_id(id),
            local,
            peer,
        );
        let mut preauth = PreAuth {
            id,
            dialogue: Dialogue::new(settings, client.is_tls()),
            client,
            local,
            kind,
            peer,
            log,
            phase: ctx.phase.subscribe(),
            pressure: ctx.connections.pressure(),
            squeezed: false,
            deadline: Instant::now() + timeout,
            started: Instant::now(),
            ctx,
        };
        if under_pressure {
            preauth.squeeze();
        }
        preauth
    }

    /// Runs the dialogue to a login, or to its end.
    pub async fn run(mut self) -> Option<Box<LoggedIn>> {
        let mut logged_in: Option<login::LoggedIn> = None;
        loop {
            let step = self.dialogue.step();
            let output = self.dialogue.take_output();
            if !output.is_empty() {
                if let Err(e) = self.send(&output).await {
                    tracing::debug!(blame = %Blame::Client, error = %e, "client gone");
                    return None;
                }
            }
            self.write_records();
            match step {
                Step::Read { room } => match self.fill(room).await {
                    Ok(()) => {}
                    Err(Stop::Timeout) => self.dialogue.timed_out(),
                    Err(Stop::Shutdown) => self.dialogue.shutting_down(),
                    Err(Stop::Gone(e)) => {
                        tracing::debug!(blame = %Blame::Client, error = %e, "client gone");
                        return None;
                    }
                },
                Step::Login { credentials } => {
                    let client = login::Client {
                        id: self.id,
                        peer: self.peer,
                        local: self.local,
                        listener: self.kind.name(),
                        id_parameters: self.dialogue.client_id().to_vec(),
                        log: self.log.clone(),
                    };
                    // The client's own deadline and a shutdown still apply while the login works.
                    let outcome = tokio::select! {
                        o = self.ctx.login.login(credentials, &client) => o,
                        _ = tokio::time::sleep_until(self.deadline) => {
                            self.dialogue.timed_out();
                            continue;
                        }
                        _ = self.phase.wait_for(|p| *p != Phase::Running) => {
                            self.dialogue.shutting_down();
                            continue;
                        }
                    };
                    let answer = match outcome {
                        Outcome::LoggedIn(mut l) => {
                            let answer = Answer::LoggedIn {
                                prelude: std::mem::take(&mut l.backend.prelude),
                                ok_text: std::mem::take(&mut l.backend.ok_text),
                            };
                            logged_in = Some(*l);
                            answer
                        }
                        Outcome::Refused(Refusal::AuthFailed) => Answer::AuthFailed,
                        Outcome::Refused(Refusal::Disabled { message }) => {
                            Answer::Disabled { message }
                        }
                        Outcome::Refused(Refusal::Limit) => Answer::Limit,
                        Outcome::Refused(Refusal::Unavailable) => Answer::Unavailable,
                    };
                    self.dialogue.answer(answer);
                }
                Step::StartTls => {
                    if self.dialogue.discarded_before_tls() > 0 {
                        tracing::info!(
                            bytes = self.dialogue.discarded_before_tls(),
                            "discarded plaintext pipelined after STARTTLS"
                        );
                    }
                    if !self.starttls().await {
                        return None;
                    }
                    self.dialogue.tls_started();
                }
                Step::Close => {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.client.shutdown()).await;
                    return None;
                }
                Step::LoggedIn => {
                    let l = logged_in.take()?;
                    return Some(Box::new(LoggedIn {
                        client: self.client.detach(),
                        client_pending: self.dialogue.take_pending(),
                        backend: l.backend,
                        registration: l.registration,
                        permit: l.permit,
                    }));
                }
            }
        }
    }

    /// One protocol log row per command answered.
    fn write_records(&mut self) {
        for record in self.dialogue.take_records() {
            if record.outcome == "privacy_required" {
                self.ctx.metrics.login(record.outcome);
                tracing::info!(outcome = record.outcome, "login refused before TLS");
            }
            if let Some(log) = &self.log {
                log.row(entry(record));
            }
        }
    }

    async fn starttls(&mut self) -> bool {
        let state = self.ctx.state.load_full();
        let Some(acceptor) = state.acceptor.clone() else {
            return false;
        };
        let Stream::Plain(tcp) = self.client.detach() else {
            return false;
        };
        let timeout = state.config.imap4.tls_handshake_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.client = Stream::ServerTls(Box::new(tls));
                tracing::debug!("STARTTLS complete");
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(blame = %Blame::Client, error = %e, "STARTTLS handshake failed");
                false
            }
            Err(_) => {
                tracing::debug!(blame = %Blame::Client, "STARTTLS handshake timed out");
                false
            }
        }
    }

    /// Reads at most `room` bytes into the dialogue, within the deadline.
    async fn fill(&mut self, room: usize) -> Result<(), Stop> {
        let mut pressure_changed = None;
        let (client, dialogue) = (&mut self.client, &mut self.dialogue);
        let n = tokio::select! {
            // Bytes are fed only when the read completes, and then this branch is the one taken.
            r = read_into(client, room, |bytes| dialogue.feed(bytes)) => r.map_err(Stop::Gone)?,
            _ = tokio::time::sleep_until(self.deadline) => return Err(Stop::Timeout),
            _ = self.phase.wait_for(|p| *p != Phase::Running) => return Err(Stop::Shutdown),
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
            return Err(Stop::Gone(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// The gate is under pressure: a client waiting to log in gets
    /// `preauthenticated_connection_timeout_under_pressure` from its connect, not more.
    fn squeeze(&mut self) {
        self.squeezed = true;
        let shorter = self
            .ctx
            .state
            .load()
            .config
            .imap4
            .preauthenticated_connection_timeout_under_pressure;
        let squeezed = self.started + shorter;
        if squeezed < self.deadline {
            self.deadline = squeezed;
            tracing::debug!("the gate is under pressure: pre-login deadline shortened");
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let write = async {
            self.client.write_all(bytes).await?;
            self.client.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

fn entry(record: Record) -> Entry {
    Entry {
        user: record.user,
        duration_ms: record.started.elapsed().as_millis() as u64,
        rq_size: record.request as u64,
        rp_size: record.reply as u64,
        command: record.command.to_string(),
        parameters: record.parameters,
        context: record.outcome.to_string(),
    }
}
