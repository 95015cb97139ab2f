//! [`GateHandle`]: reload, shutdown, and what the control socket and the signals ask of a
//! running gate.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{load, lock, GateHandle, PenaltyView, Phase, ReloadReport};
use crate::admin::control::{AdminWeb, ChangeReport, Controlled};
use crate::directory::{login_key, Filter, Listing, MailboxView, Page};
use crate::lifecycle;
use crate::limits::Usage;
use crate::metrics::{Metrics, ResultLabels};
use crate::registry::{Kick, Registry, SessionView};
use crate::session::Context;
use crate::state::{LoadError, State};

impl GateHandle {
    fn ctx(&self) -> &Arc<Context> {
        &self.root.ctx
    }

    /// Re-reads the configuration, directory and certificate; installs them only when all are
    /// valid, with an empty directory cache. On error nothing changes. Sessions of mailboxes
    /// the new directory disables are closed (unless `disconnect_disabled_on_reload = false`).
    pub async fn reload(&self) -> Result<ReloadReport, LoadError> {
        self.reload_and_tell(true).await
    }

    /// A reload; with `tell`, the other gates of the fleet are told (not when the reload
    /// follows their own change).
    async fn reload_and_tell(&self, tell: bool) -> Result<ReloadReport, LoadError> {
        let _one_at_a_time = self.root.reload_lock.lock().await;
        let ctx = self.ctx();
        let metrics = &ctx.metrics;
        let new = match load(&self.root.config_path, metrics).await {
            Ok(new) => new,
            Err(e) => {
                metrics
                    .reloads
                    .get_or_create(&ResultLabels { result: "refused" })
                    .inc();
                return Err(e);
            }
        };
        let old = ctx.state.load();
        if new.config.imap4.unencrypted_or_tls_bindings
            != old.config.imap4.unencrypted_or_tls_bindings
            || new.config.imap4.ssl_bindings != old.config.imap4.ssl_bindings
        {
            tracing::warn!("listener addresses changed in the configuration; they take effect at the next restart");
        }
        let new = Arc::new(new);
        ctx.state.store(new.clone());
        super::probe_backends(&new, metrics);
        self.follow_directory();
        let mailboxes = new
            .policies
            .source()
            .list(
                &Filter::all(),
                Page {
                    offset: 0,
                    limit: 0,
                },
            )
            .await
            .map(|l| l.total)
            .unwrap_or(0);
        let sessions_closed = if new.config.directory.disconnect_disabled_on_reload {
            self.close_disabled(&new, None).await
        } else {
            0
        };
        metrics
            .reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        metrics.mark_reload();
        metrics
            .sessions_closed_on_reload
            .inc_by(sessions_closed as u64);
        tracing::info!(
            mailboxes,
            sessions_closed,
            "reload complete: directory, certificate and backends in force, policy cache emptied"
        );
        if let (Some(fleet), true) = (&self.root.fleet, tell) {
            fleet.publish_change(None);
        }
        Ok(ReloadReport {
            mailboxes,
            sessions_closed,
        })
    }

    /// Closes the open sessions whose mailbox `state`'s directory no longer lets in (disabled,
    /// or gone when names outside the directory are refused); only those of `mailbox`, when
    /// given. Each distinct mailbox is asked of the directory once.
    async fn close_disabled(&self, state: &State, mailbox: Option<&str>) -> usize {
        let registry = &self.ctx().registry;
        let logins: HashSet<String> = registry
            .list_infos()
            .into_iter()
            .filter(|s| mailbox.is_none_or(|m| s.mailbox_key == m))
            .map(|s| s.backend_login)
            .collect();
        let mut refused = HashSet::new();
        for login in logins {
            match state.policies.resolve(&login).await {
                Ok(Some(p)) if p.imap_enabled => {}
                Ok(_) => {
                    refused.insert(login);
                }
                // A directory that cannot answer closes nothing: it did not say "disabled".
                Err(e) => {
                    tracing::warn!(error = %e, "directory unavailable while closing disabled sessions")
                }
            }
        }
        if refused.is_empty() {
            return 0;
        }
        registry.kick_where(Kick::Disabled, |s| refused.contains(&s.backend_login))
    }

    /// Follows the changes made through the directory in force: the cache forgets, and the
    /// sessions of a mailbox now disabled are closed at once (no reload needed).
    pub(super) fn follow_directory(&self) {
        let state = self.ctx().state.load_full();
        let mut changes = state.policies.source().watch();
        let handle = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let mailbox = match changes.recv().await {
                    Ok(change) => change.mailbox.map(|m| m.key()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                state.policies.clear();
                if state.config.directory.disconnect_disabled_on_reload {
                    let closed = handle.close_disabled(&state, mailbox.as_deref()).await;
                    tracing::info!(
                        mailbox = mailbox.as_deref().unwrap_or("(several)"),
                        sessions_closed = closed,
                        "directory change in force"
                    );
                }
            }
        });
        if let Some(old) = lock(&self.root.follower).replace(task) {
            old.abort();
        }
    }

    /// Turns IMAP4 on or off for the mailbox `identity` names, through the directory in force:
    /// written there, in force at once (the cache forgets), and the mailbox's open sessions
    /// closed when it is now disabled. The same path as `imapgate mailbox set` (the directory's
    /// `set_imap_enabled`), without a reload of everything else.
    pub async fn set_imap_enabled(
        &self,
        identity: &str,
        enabled: bool,
    ) -> Result<ChangeReport, String> {
        let state = self.state();
        let outcome = state
            .policies
            .source()
            .set_imap_enabled(identity, enabled, false)
            .await
            .map_err(|e| e.to_string())?;
        state.policies.clear();
        // Before any await: the sessions closed here are counted here, not by the task that
        // follows the directory's changes (which then finds them closed already).
        let key = outcome.mailbox.key();
        let sessions_closed = if !outcome.mailbox.imap_enabled
            && state.config.directory.disconnect_disabled_on_reload
        {
            self.registry()
                .kick_where(Kick::Disabled, |s| s.mailbox_key == key)
        } else {
            0
        };
        if let Some(fleet) = &self.root.fleet {
            fleet.publish_change(Some(&key));
        }
        Ok(ChangeReport {
            mailbox: outcome.mailbox,
            changed: outcome.changed,
            sessions_closed,
        })
    }

    /// Asks the gate to shut down; [`Gate::run`] returns when it is done.
    pub fn shutdown(&self) {
        self.ctx().phase.send_if_modified(|p| {
            if *p == Phase::Running {
                *p = Phase::Draining;
                true
            } else {
                false
            }
        });
    }

    /// Ends the shutdown grace period at once: relayed sessions are closed now.
    pub fn shutdown_now(&self) {
        self.shutdown();
        self.ctx().phase.send_replace(Phase::Closing);
    }

    /// The snapshot in force (for tests and the control path).
    pub fn state(&self) -> Arc<State> {
        self.ctx().state.load_full()
    }

    /// Sessions currently open.
    pub fn open_sessions(&self) -> usize {
        self.ctx().tracker.len()
    }

    /// Follows the gate's phase (running, draining, closing).
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.ctx().phase.subscribe()
    }

    /// The gate's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.ctx().metrics
    }

    /// Connection counters (all back to zero when no session is open).
    pub fn usage(&self) -> Usage {
        let (connections, addresses, addresses_before_login, addresses_logging_in) =
            self.ctx().connections.counts();
        Usage {
            connections,
            addresses,
            mailboxes: self.ctx().login.sessions().mailboxes(),
            addresses_before_login,
            addresses_logging_in,
        }
    }

    /// The failed-login penalty the gate applies to `ip` now.
    pub fn penalty_of(&self, ip: IpAddr) -> PenaltyView {
        let state = self.state();
        let imap4 = &state.config.imap4;
        let trusted = imap4.trusted_networks.iter().any(|n| n.contains(&ip));
        let penalty = self.ctx().login.penalty();
        let delay = if trusted {
            Duration::ZERO
        } else {
            penalty.delay(ip, imap4.auth_penalty_initial, imap4.auth_penalty_max)
        };
        PenaltyView {
            address: ip.to_string(),
            failures: penalty.failures(ip),
            delay_ms: delay.as_millis() as u64,
            trusted,
        }
    }

    /// The registry of logged-in sessions.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.ctx().registry
    }
}

#[async_trait]
impl crate::fleet::bus::Member for GateHandle {
    async fn changed(&self, mailbox: Option<String>) {
        let state = self.state();
        if state.config.directory.source == crate::config::DirectorySource::File {
            // The file changed where the other gate wrote it (shared storage or configuration
            // management): read it again, as a reload does.
            if let Err(e) = self.reload_and_tell(false).await {
                tracing::warn!(error = %e, "fleet change: the reload was refused; the directory in force stays");
            }
            return;
        }
        state.policies.clear();
        if state.config.directory.disconnect_disabled_on_reload {
            let closed = self.close_disabled(&state, mailbox.as_deref()).await;
            tracing::info!(
                mailbox = mailbox.as_deref().unwrap_or("(all)"),
                sessions_closed = closed,
                "fleet change in force"
            );
        }
    }

    fn sessions(&self) -> Vec<SessionView> {
        self.registry().list()
    }

    async fn kick(&self, identity: &str) -> usize {
        Controlled::kick(self, identity).await.unwrap_or(0)
    }
}

#[async_trait]
impl Controlled for GateHandle {
    async fn reload(&self) -> Result<ReloadReport, String> {
        let reload = async { GateHandle::reload(self).await.map_err(|e| e.to_string()) };
        lifecycle::reloading(reload, describe).await
    }

    async fn mailboxes(&self) -> Result<Vec<MailboxView>, String> {
        let state = self.state();
        let listing = state
            .policies
            .source()
            .list(&Filter::all(), Page::ALL)
            .await;
        listing.map(|l| l.mailboxes).map_err(|e| e.to_string())
    }

    fn sessions(&self) -> Vec<SessionView> {
        self.registry().list()
    }

    async fn fleet_sessions(&self) -> Result<Vec<crate::fleet::bus::FleetSession>, String> {
        use crate::fleet::bus::{FleetSession, Request};
        let fleet = self.root.fleet.as_ref().ok_or("no [fleet] configured")?;
        let answers = fleet.ask(Request::Sessions).await?;
        let mut all = Vec::new();
        for (node, text) in answers {
            let sessions: Vec<SessionView> =
                serde_json::from_str(&text).map_err(|e| format!("{node}: {e}"))?;
            all.extend(sessions.into_iter().map(|session| FleetSession {
                node: node.clone(),
                session,
            }));
        }
        Ok(all)
    }

    async fn fleet_kick(
        &self,
        identity: &str,
    ) -> Result<std::collections::BTreeMap<String, usize>, String> {
        use crate::fleet::bus::Request;
        let fleet = self.root.fleet.as_ref().ok_or("no [fleet] configured")?;
        let answers = fleet
            .ask(Request::Kick {
                identity: identity.to_string(),
            })
            .await?;
        Ok(answers
            .into_iter()
            .map(|(node, text)| (node, text.trim().parse().unwrap_or(0)))
            .collect())
    }

    fn backends(&self) -> Vec<crate::backend::health::AddressView> {
        let state = self.state();
        let mut names: Vec<&String> = state.backends.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| state.backends.get(n).map(|b| b.health.views(n)))
            .flatten()
            .collect()
    }

    async fn kick(&self, identity: &str) -> Result<usize, String> {
        let state = self.state();
        let filter = Filter {
            identity: Some(identity.to_string()),
            ..Filter::default()
        };
        let found = state
            .policies
            .source()
            .list(&filter, Page::ALL)
            .await
            .map_err(|e| e.to_string())?;
        let registry = self.registry();
        match found.mailboxes.as_slice() {
            // Sessions belong to mailboxes by key, whatever name their client typed.
            [one] => {
                let key = one.key();
                Ok(registry.kick_where(Kick::Admin, |s| s.mailbox_key == key))
            }
            [] => {
                // Not in the directory: only a login name of open sessions (which
                // `unknown_names = "defaults"` let in) is accepted; anything else is an
                // operator's typo, not "0 closed".
                let key = login_key(identity);
                let of_name = |s: &crate::registry::SessionInfo| {
                    s.mailbox.is_none() && login_key(&s.user) == key
                };
                if !registry.any(of_name) {
                    return Err(format!("no mailbox matches {identity:?}"));
                }
                Ok(registry.kick_where(Kick::Admin, of_name))
            }
            many => Err(format!(
                "{identity:?} matches {} mailboxes; use a unique identity (email, UPN, alias or GUID)",
                many.len()
            )),
        }
    }

    fn close_mailbox_sessions(&self, mailbox_key: &str) -> usize {
        self.registry()
            .kick_where(Kick::Admin, |s| s.mailbox_key == mailbox_key)
    }

    fn penalty(&self, ip: IpAddr) -> PenaltyView {
        self.penalty_of(ip)
    }

    async fn list(&self, filter: &Filter, page: Page) -> Result<Listing, String> {
        let state = self.state();
        let listing = state.policies.source().list(filter, page).await;
        listing.map_err(|e| e.to_string())
    }

    async fn set_imap_enabled(
        &self,
        identity: &str,
        enabled: bool,
    ) -> Result<ChangeReport, String> {
        GateHandle::set_imap_enabled(self, identity, enabled).await
    }

    fn admin_web(&self) -> Option<AdminWeb> {
        let state = self.state();
        let web = state.config.admin_web.as_ref()?;
        Some(AdminWeb {
            acceptor: state.admin_acceptor.clone()?,
            users_file: web.users_file.clone(),
            idle_timeout: web.session_idle_timeout,
            strict_modes: state.config.security.strict_modes,
        })
    }

    fn audit_log(&self) -> Option<std::path::PathBuf> {
        self.state().config.admin.audit_log.clone()
    }
}

fn describe(r: &ReloadReport) -> String {
    format!(
        "reloaded ({} mailboxes, {} sessions of disabled mailboxes closed)",
        r.mailboxes, r.sessions_closed
    )
}

#[async_trait]
impl lifecycle::Target for GateHandle {
    async fn reload(&self) -> Result<String, String> {
        GateHandle::reload(self)
            .await
            .map(|r| describe(&r))
            .map_err(|e| e.to_string())
    }

    fn shutdown(&self) {
        GateHandle::shutdown(self)
    }

    fn shutdown_now(&self) {
        GateHandle::shutdown_now(self)
    }

    fn status(&self) -> String {
        format!(
            "{} sessions open, {} logged in",
            self.open_sessions(),
            self.registry().len()
        )
    }
}
