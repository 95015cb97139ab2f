//! The operator's commands: `mailbox set`, `mailbox get`, `reload`, `sessions`, `kick`.
//! Each returns the process exit code; what it prints is meant for people, or JSON for scripts.

use std::path::Path;

use anyhow::Context;

use super::audit;
use super::control::{self, ControlError, ReloadReport};
use super::show::{enabled_word, print_block, print_table, InForce, Report};
use crate::config::Config;
use std::sync::Arc;

use crate::config::DirectorySource;
use crate::directory::{
    find_identity, Directory, DirectoryError, DirectoryStats, Filter, MailboxView, Page,
};
use crate::registry::SessionView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn socket(config: &Config) -> anyhow::Result<&Path> {
    config.admin.control_socket.as_deref().with_context(|| {
        format!(
            "{}: no [admin] control_socket configured",
            config.path.display()
        )
    })
}

fn backend_names(config: &Config) -> Vec<&str> {
    config.backends.keys().map(String::as_str).collect()
}

/// Asks the running gate to reload; prints the outcome. Exit 1 when the gate refused the new
/// configuration or could not be reached.
pub async fn reload(config: &Config) -> anyhow::Result<i32> {
    let Some(socket) = config.admin.control_socket.as_deref() else {
        return reload_by_signal(config);
    };
    match control::request::<ReloadReport>(socket, "RELOAD").await {
        Ok(r) => {
            println!(
                "reloaded: {} mailboxes in force, {} session(s) of disabled mailboxes closed",
                r.mailboxes, r.sessions_closed
            );
            Ok(0)
        }
        Err(ControlError::Refused(reason)) => {
            eprintln!("reload refused; the previous configuration stays in force: {reason}");
            Ok(1)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// Without a control socket, the unit's `ExecReload` still works: systemd gives the daemon's
/// pid in `MAINPID`, and SIGHUP reloads (the outcome is then only in the log).
fn reload_by_signal(config: &Config) -> anyhow::Result<i32> {
    let pid = std::env::var("MAINPID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    let Some(pid) = pid else {
        eprintln!(
            "{}: no [admin] control_socket configured; reload with `systemctl reload imapgate` or SIGHUP",
            config.path.display()
        );
        return Ok(1);
    };
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("cannot signal the gate (pid {})", pid.as_raw_nonzero()))?;
    println!(
        "no control socket configured: sent SIGHUP to the gate (pid {}); its log has the outcome",
        pid.as_raw_nonzero()
    );
    Ok(0)
}

pub async fn mailbox_set(
    config: &Config,
    identity: &str,
    enabled: bool,
    create: bool,
    no_reload: bool,
) -> anyhow::Result<i32> {
    let audit_log = config.admin.audit_log.as_deref();
    let record = |mailbox: &str, old: &str, outcome: &str| {
        let entry = audit::Entry::now(
            &audit::current_user(),
            "set-imap4",
            mailbox,
            old,
            enabled_word(enabled),
            outcome,
        );
        audit::record(audit_log, entry);
    };
    // Through the directory (the file source edits its file safely).
    let outcome = match open_directory(config) {
        Ok(directory) => directory.set_imap_enabled(identity, enabled, create).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            record(
                identity,
                "",
                &format!("failed: {}", one_line(&e.to_string())),
            );
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let label = outcome.mailbox.label().to_string();
    let old = match (outcome.created, outcome.changed) {
        (true, _) => {
            println!(
                "created mailbox {label} with IMAP4: {}",
                enabled_word(enabled)
            );
            ""
        }
        (false, true) => {
            println!("{label}: IMAP4 set to {}", enabled_word(enabled));
            enabled_word(!enabled)
        }
        (false, false) => {
            println!(
                "{label}: IMAP4 already {} in {}",
                enabled_word(enabled),
                source_name(config)
            );
            enabled_word(enabled)
        }
    };
    let (code, in_force) = put_in_force(config, no_reload).await;
    let written = if outcome.created {
        "created"
    } else if outcome.changed {
        "written"
    } else {
        "unchanged"
    };
    record(&label, old, &format!("{written}; {in_force}"));
    Ok(code)
}

/// Reloads the running gate after a change of the file; the exit code and what it did, for the
/// audit log.
async fn put_in_force(config: &Config, no_reload: bool) -> (i32, String) {
    if no_reload {
        println!("not reloaded (--no-reload): run `imapgate reload` or `systemctl reload imapgate` to put it in force");
        return (0, "not reloaded (--no-reload)".into());
    }
    let Some(socket) = config.admin.control_socket.as_deref() else {
        println!(
            "no control socket configured: run `systemctl reload imapgate` to put it in force"
        );
        return (0, "not reloaded (no control socket)".into());
    };
    match control::request::<ReloadReport>(socket, "RELOAD").await {
        Ok(r) => {
            println!(
                "reloaded: in force now ({} session(s) of disabled mailboxes closed)",
                r.sessions_closed
            );
            (
                0,
                format!("in force now; {} session(s) closed", r.sessions_closed),
            )
        }
        Err(ControlError::Unreachable { source, .. }) if not_running(&source) => {
            println!("imapgate is not running: the change applies when it starts");
            (0, "the gate is not running".into())
        }
        Err(e) => {
            eprintln!("the file was changed, but it is not in force yet: {e}");
            (1, format!("not in force: {}", one_line(&e.to_string())))
        }
    }
}

/// The directory the configuration names (the file, or LDAP).
pub(super) fn open_directory(config: &Config) -> Result<Arc<dyn Directory>, DirectoryError> {
    crate::directory::open(
        &config.directory,
        &backend_names(config),
        DirectoryStats::default(),
    )
}

fn is_ldap(config: &Config) -> bool {
    config.directory.source == DirectorySource::Ldap
}

fn source_name(config: &Config) -> &'static str {
    if is_ldap(config) {
        "the LDAP directory"
    } else {
        "the file"
    }
}

/// Every mailbox the directory on disk has.
async fn on_disk(config: &Config) -> Result<Vec<MailboxView>, DirectoryError> {
    let directory = open_directory(config)?;
    Ok(directory.list(&Filter::all(), Page::ALL).await?.mailboxes)
}

/// No gate behind the socket path (as opposed to one we may not talk to).
fn not_running(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

pub async fn mailbox_get(
    config: &Config,
    identity: Option<&str>,
    filter: Option<bool>,
    format: Format,
) -> anyhow::Result<i32> {
    if is_ldap(config) {
        return mailbox_get_from_ldap(config, identity, filter, format).await;
    }
    let running: Option<Vec<MailboxView>> = match config.admin.control_socket.as_deref() {
        Some(socket) => match control::request(socket, "MAILBOXES").await {
            Ok(v) => Some(v),
            Err(ControlError::Unreachable { source, .. }) if not_running(&source) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    // A broken file does not hide what the running gate enforces (it keeps the directory it
    // had): that is shown, with where the file is broken.
    let (disk, broken) = match on_disk(config).await {
        Ok(d) => (d, false),
        Err(e) => match &running {
            Some(r) => {
                eprintln!(
                    "warning: the mailboxes file on disk is broken ({}); shown: what the running gate enforces. \
                     Fix the file: a reload would be refused.",
                    one_line(&e.to_string())
                );
                (r.clone(), true)
            }
            None => return Err(e.into()),
        },
    };
    let selected: Vec<usize> = match identity {
        Some(id) => {
            let m = find_identity(&disk, id);
            if m.is_empty() {
                let source = if broken {
                    "the running gate's directory".to_string()
                } else {
                    config.directory.mailboxes.display().to_string()
                };
                eprintln!("no mailbox matches {id:?} in {source}");
                return Ok(1);
            }
            m
        }
        None => (0..disk.len()).collect(),
    };
    let reports: Vec<Report> = selected
        .into_iter()
        .map(|i| {
            let mailbox = disk[i].clone();
            let in_force = running.as_ref().map(|r| {
                let found = r.iter().find(|v| same_mailbox(v, &mailbox));
                InForce {
                    imap_enabled: found.map(|v| v.imap_enabled),
                    backend: found.map(|v| v.backend.clone()),
                    differs_from_disk: found != Some(&mailbox),
                    disk_broken: broken,
                }
            });
            Report {
                mailbox,
                in_force,
                origin: None,
            }
        })
        .filter(|r| filter.is_none_or(|want| r.effective() == want))
        .collect();
    print_reports(&reports, format, identity.is_some(), running.is_some())?;
    Ok(0)
}

/// `mailbox get` against LDAP: the directory is what the gate enforces (there is no file that
/// could differ), read with a server-side filter and paged results.
async fn mailbox_get_from_ldap(
    config: &Config,
    identity: Option<&str>,
    filter: Option<bool>,
    format: Format,
) -> anyhow::Result<i32> {
    let directory = open_directory(config)?;
    let wanted = Filter {
        identity: identity.map(String::from),
        imap_enabled: filter,
        search: None,
    };
    let listing = directory.list(&wanted, Page::ALL).await?;
    if let (Some(id), true) = (identity, listing.mailboxes.is_empty()) {
        eprintln!("no mailbox matches {id:?} in the LDAP directory");
        return Ok(1);
    }
    let reports: Vec<Report> = listing
        .mailboxes
        .into_iter()
        .map(|mailbox| Report {
            mailbox,
            in_force: None,
            origin: Some("the LDAP directory (what the gate enforces)"),
        })
        .collect();
    print_reports(&reports, format, identity.is_some(), true)?;
    Ok(0)
}

/// Reports as JSON, as one block each (one mailbox asked for), or as a table.
fn print_reports(
    reports: &[Report],
    format: Format,
    one: bool,
    in_force_known: bool,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(reports)?),
        Format::Table if one => {
            for (i, r) in reports.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_block(r, in_force_known);
            }
        }
        Format::Table => print_table(reports, in_force_known),
    }
    Ok(())
}

/// The same mailbox in two versions of the directory: same first login name.
fn same_mailbox(a: &MailboxView, b: &MailboxView) -> bool {
    let key = |v: &MailboxView| {
        (
            v.email.as_ref().map(|s| s.to_lowercase()),
            v.upn.as_ref().map(|s| s.to_lowercase()),
            v.alias.as_ref().map(|s| s.to_lowercase()),
            v.domain_account.as_ref().map(|s| s.to_lowercase()),
        )
    };
    key(a) == key(b)
}

pub async fn sessions(config: &Config, format: Format, fleet: bool) -> anyhow::Result<i32> {
    let list: Vec<(Option<String>, SessionView)> = if fleet {
        let all: Vec<crate::fleet::bus::FleetSession> =
            control::request(socket(config)?, "FLEET-SESSIONS").await?;
        if format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&all)?);
            return Ok(0);
        }
        all.into_iter().map(|f| (Some(f.node), f.session)).collect()
    } else {
        let list: Vec<SessionView> = control::request(socket(config)?, "SESSIONS").await?;
        if format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(0);
        }
        list.into_iter().map(|s| (None, s)).collect()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let gate = |node: &Option<String>| match node {
        Some(n) => format!("{n:<12}  "),
        None => String::new(),
    };
    println!(
        "{}{:<8}  {:<28}  {:<20}  {:<22}  {:<10}  {:>10}  {:>12}  {:>12}",
        if fleet {
            format!("{:<12}  ", "Gate")
        } else {
            String::new()
        },
        "Id",
        "User",
        "Mailbox",
        "Client",
        "Backend",
        "Since",
        "FromClient",
        "FromBackend"
    );
    for (node, s) in &list {
        println!(
            "{}{:<8}  {:<28}  {:<20}  {:<22}  {:<10}  {:>9}s  {:>12}  {:>12}",
            gate(node),
            s.id,
            s.user,
            s.mailbox.as_deref().unwrap_or("-"),
            s.client,
            s.backend,
            now.saturating_sub(s.since),
            s.bytes_from_client,
            s.bytes_from_backend
        );
    }
    println!("{} session(s)", list.len());
    Ok(0)
}

pub async fn backends(config: &Config, format: Format) -> anyhow::Result<i32> {
    let list: Vec<crate::backend::health::AddressView> =
        control::request(socket(config)?, "BACKENDS").await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Format::Table => {
            println!(
                "{:<12}  {:<28}  {:<5}  {:>10}  {:>8}  LastError",
                "Backend", "Address", "State", "Since", "Failures"
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for a in &list {
                println!(
                    "{:<12}  {:<28}  {:<5}  {:>9}s  {:>8}  {}",
                    a.backend,
                    a.address,
                    if a.up { "up" } else { "down" },
                    now.saturating_sub(a.since),
                    a.failures,
                    a.last_error.as_deref().map(one_line).unwrap_or_default()
                );
            }
        }
    }
    // Exit 1 when an address is down, for scripts and monitoring.
    Ok(i32::from(list.iter().any(|a| !a.up)))
}

pub async fn kick(config: &Config, identity: &str, fleet: bool) -> anyhow::Result<i32> {
    #[derive(serde::Deserialize)]
    struct Closed {
        closed: usize,
    }
    if identity.contains(['\r', '\n']) {
        anyhow::bail!("an identity cannot contain a line break");
    }
    if fleet {
        let by_gate: std::collections::BTreeMap<String, usize> =
            control::request(socket(config)?, &format!("FLEET-KICK {identity}")).await?;
        for (gate, closed) in &by_gate {
            println!("{gate}: {closed} session(s) closed");
        }
        println!(
            "{} session(s) closed on {} gate(s)",
            by_gate.values().sum::<usize>(),
            by_gate.len()
        );
        return Ok(0);
    }
    let r: Closed = control::request(socket(config)?, &format!("KICK {identity}")).await?;
    println!("{} session(s) closed", r.closed);
    Ok(0)
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}
