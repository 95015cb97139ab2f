//! `imapgate check-config`: everything a start would refuse, without disturbing a running gate.
//!
//! The routine is edit, check, reload (as `nginx -t` on a running server), so the check never
//! needs the gate's ports: a listener address must parse and belong to this host (binding its
//! address on port 0 tells), and only `--bind` tries the real ports. Problems a start would
//! refuse make the check fail; things that only may go wrong (a backend name that does not
//! resolve now, a shutdown grace systemd will cut short) are warnings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::directory::{Filter, Page};
use crate::state::State;

/// The unit file this project ships, for its `TimeoutStopSec` when no unit is installed.
const SHIPPED_UNIT: &str = include_str!("../../systemd/imapgate.service");

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Each one would stop the gate from starting.
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// `N mailboxes, M backends` when the files load.
    pub summary: Option<String>,
}

/// Checks the configuration at `path`. With `bind`, the listeners' ports must be free too.
pub async fn check(path: &Path, bind: bool) -> Report {
    let mut report = Report::default();
    let state = match State::load(path) {
        Ok(s) => s,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let config = &state.config;
    for (name, b) in &config.backends {
        for address in b.address.iter() {
            if let Err(e) = address.to_socket_addrs() {
                report.warnings.push(format!(
                    "backends.{name}.address {address:?} does not resolve now: {e}"
                ));
            }
        }
    }
    let imap4 = &config.imap4;
    let listeners = imap4
        .unencrypted_or_tls_bindings
        .iter()
        .chain(&imap4.ssl_bindings)
        .chain(config.metrics.listen.as_ref())
        .chain(config.admin_web.as_ref().map(|w| &w.listen));
    for &address in listeners {
        if let Err(problem) = check_listener(address, bind) {
            report.problems.push(problem);
        }
    }
    if let Some(fleet) = &config.fleet {
        let ping = async {
            let client = redis::Client::open(fleet.redis.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(3), ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => report.warnings.push(format!(
                "[fleet] redis {}: {e}; the gate would start and go on with local limits until it answers",
                fleet.redis
            )),
            Err(_) => report.warnings.push(format!(
                "[fleet] redis {}: no answer in 3 s; the gate would start and go on with local limits until it answers",
                fleet.redis
            )),
        }
    }
    if config.admin.control_socket.is_none() {
        report.warnings.push(
            "no [admin] control_socket: `imapgate reload` (the unit's ExecReload) can only send \
             SIGHUP and cannot wait for the outcome; `mailbox set`, `sessions` and `kick` need it"
                .into(),
        );
    }
    if let Some(web) = &config.admin_web {
        match super::users::load(&web.users_file) {
            Ok(admins) if admins.is_empty() => report.warnings.push(format!(
                "[admin_web] users_file {} has no administrator: nobody can sign in to the admin \
                 center (imapgate admin-user add NAME --role recipient-management)",
                web.users_file.display()
            )),
            Ok(_) => {}
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    if let Some(log) = &config.admin.audit_log {
        if log.parent().is_some_and(|d| !d.is_dir()) {
            report.warnings.push(format!(
                "[admin] audit_log {}: its directory does not exist; changes are then only in \
                 the gate's log",
                log.display()
            ));
        }
    }
    if config.directory.unknown_names == crate::directory::UnknownNames::Defaults {
        report.warnings.push(
            "[directory] unknown_names = \"defaults\": a name outside the directory logs in with \
             [defaults], sent to the backend as typed. That is only as safe as the match between \
             the directory's names and the backend's own name handling (Dovecot's \
             auth_username_format, master users): a spelling the backend accepts and the \
             directory does not know escapes a disabled mailbox and its limits"
                .into(),
        );
    }
    // The daemon raises its open-file limit to the hard one before it counts.
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let budget = crate::limits::descriptor_budget(hard, threads);
    if let (Some(configured), Some(budget)) = (imap4.max_connections, budget) {
        if configured > budget {
            report.warnings.push(format!(
                "imap4.max_connections = {configured} is more than the open-file limit ({hard}) \
                 allows at two descriptors per relayed session: the gate will use {budget} \
                 (raise LimitNOFILE)"
            ));
        }
    }
    if let Some(w) = shutdown_warning(imap4.shutdown_grace, unit_stop_timeout()) {
        report.warnings.push(w);
    }
    if let (crate::config::DirectorySource::Ldap, Some(ldap)) =
        (config.directory.source, &config.directory.ldap)
    {
        // Bind and one search, on a connection of its own; the failing step is named.
        let backends: Vec<&str> = config.backends.keys().map(String::as_str).collect();
        let probed = match crate::directory::ldap::LdapDirectory::open(
            ldap,
            &backends,
            crate::directory::DirectoryStats::default(),
        ) {
            Ok(directory) => directory.probe().await,
            Err(e) => Err(e.to_string()),
        };
        match probed {
            Ok(what) => {
                report.summary = Some(format!(
                    "LDAP directory: {what}; {} backends",
                    state.backends.len()
                ))
            }
            Err(e) => report.problems.push(format!("[directory.ldap]: {e}")),
        }
        return report;
    }
    let mailboxes = state
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
        .map(|l| l.total);
    match mailboxes {
        Ok(n) => report.summary = Some(format!("{n} mailboxes, {} backends", state.backends.len())),
        Err(e) => report.problems.push(e.to_string()),
    }
    report
}

/// An address the gate would listen on: it must be one of this host's (binding it on port 0
/// tells, and leaves a running gate's port alone); with `bind`, its port must be free too.
fn check_listener(address: SocketAddr, bind: bool) -> Result<(), String> {
    let probe = if bind && address.port() != 0 {
        address
    } else {
        SocketAddr::new(address.ip(), 0)
    };
    crate::listener::bind_std(probe).map_err(|e| {
        if probe.port() == 0 {
            format!(
                "cannot listen on {address}: {} is not an address of this host ({e})",
                address.ip()
            )
        } else {
            format!("cannot listen on {address}: {e}")
        }
    })
}

/// How long systemd waits for the gate to stop, and where that figure comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopTimeout {
    /// `None`: no limit (`infinity`).
    pub after: Option<Duration>,
    pub source: &'static str,
}

/// The installed unit's `TimeoutStopSec` when systemd knows the unit, else the shipped unit's.
pub fn unit_stop_timeout() -> StopTimeout {
    let installed = std::process::Command::new("systemctl")
        .args([
            "show",
            "imapgate.service",
            "--property=LoadState,TimeoutStopUSec",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if let Some(text) = installed {
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        if value("LoadState") == Some("loaded") {
            if let Some(v) = value("TimeoutStopUSec") {
                return StopTimeout {
                    after: parse_systemd_duration(v),
                    source: "the installed unit",
                };
            }
        }
    }
    let shipped = SHIPPED_UNIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
        .and_then(parse_systemd_duration);
    StopTimeout {
        after: shipped,
        source: "systemd/imapgate.service as shipped",
    }
}

/// `30`, `30s`, `1min 30s`, `infinity`.
fn parse_systemd_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v == "infinity" {
        return None;
    }
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok()
}

/// Time the gate needs after the grace period to close what is left (see `Gate::run`).
const CLOSING: Duration = Duration::from_secs(5);

fn shutdown_warning(grace: Duration, stop: StopTimeout) -> Option<String> {
    let limit = stop.after?;
    (grace + CLOSING > limit).then(|| {
        format!(
            "imap4.shutdown_grace ({}) plus {} s to close sessions exceeds TimeoutStopSec ({}, from {}): \
             systemd will kill the gate before relayed sessions are closed cleanly",
            humantime::format_duration(grace),
            CLOSING.as_secs(),
            humantime::format_duration(limit),
            stop.source
        )
    })
}

/// The command: prints the report, returns the exit code.
pub async fn run(path: &Path, bind: bool) -> i32 {
    let report = check(path, bind).await;
    for w in &report.warnings {
        eprintln!("{}: warning: {w}", path.display());
    }
    for p in &report.problems {
        eprintln!("{}: {p}", path.display());
    }
    match (&report.summary, report.problems.is_empty()) {
        (Some(summary), true) => {
            println!("{}: OK ({summary})", path.display());
            0
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_durations_and_the_shipped_timeout() {
        assert_eq!(parse_systemd_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_systemd_duration("1min 30s"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_systemd_duration("infinity"), None);
        let shipped = StopTimeout {
            after: Some(Duration::from_secs(30)),
            source: "x",
        };
        assert!(shutdown_warning(Duration::from_secs(10), shipped.clone()).is_none());
        let w = shutdown_warning(Duration::from_secs(60), shipped).expect("warning");
        assert!(w.contains("TimeoutStopSec (30s"), "{w}");
    }
}
