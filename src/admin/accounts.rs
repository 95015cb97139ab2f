//! The admin center's operator commands: `imapgate admin-user add|remove|list` (the users file
//! of `[admin_web]`) and `imapgate audit [--identity ID]` (the audit log of `[admin]`).

use std::path::Path;

use anyhow::Context;

use super::audit::{self, Entry};
use super::cli::Format;
use super::users::{self, Role};
use crate::config::Config;
use crate::directory::{Filter, MailboxView, Page};

fn users_file(config: &Config) -> anyhow::Result<&Path> {
    config
        .admin_web
        .as_ref()
        .map(|w| w.users_file.as_path())
        .with_context(|| {
            format!(
                "{}: no [admin_web] section; add one (listen = \"127.0.0.1:8443\") to use the admin center",
                config.path.display()
            )
        })
}

pub fn add(
    config: &Config,
    name: &str,
    role: Role,
    password_file: Option<&Path>,
) -> anyhow::Result<i32> {
    let path = users_file(config)?;
    let password = match password_file {
        Some(file) => super::read_password(Some(file), "")?,
        None => {
            let first = super::read_password(None, &format!("Password for {name}: "))?;
            let again = super::read_password(None, "The same password again: ")?;
            if first.expose() != again.expose() {
                eprintln!("the two passwords differ; nothing changed");
                return Ok(1);
            }
            first
        }
    };
    let outcome = users::add(path, name, role, password.expose());
    let (code, what) = match &outcome {
        Ok(()) => {
            println!(
                "administrator {name} added to {} with the role {} ({}); the admin center accepts them now",
                path.display(),
                role.as_str(),
                role.title()
            );
            (0, "added".to_string())
        }
        Err(e) => {
            eprintln!("{e}");
            (1, format!("failed: {e}"))
        }
    };
    record(
        config,
        "admin-user add",
        "",
        &format!("{name} ({})", role.as_str()),
        &what,
    );
    Ok(code)
}

pub fn remove(config: &Config, name: &str) -> anyhow::Result<i32> {
    let path = users_file(config)?;
    let (code, what) = match users::remove(path, name) {
        Ok(()) => {
            println!(
                "administrator {name} removed from {}; their admin center sessions end at their next click",
                path.display()
            );
            (0, "removed".to_string())
        }
        Err(e) => {
            eprintln!("{e}");
            (1, format!("failed: {e}"))
        }
    };
    record(config, "admin-user remove", name, "", &what);
    Ok(code)
}

fn record(config: &Config, what: &str, old: &str, new: &str, outcome: &str) {
    let entry = Entry::now(&audit::current_user(), what, "", old, new, outcome);
    audit::record(config.admin.audit_log.as_deref(), entry);
}

pub fn list(config: &Config, format: Format) -> anyhow::Result<i32> {
    let path = users_file(config)?;
    let admins = users::load(path)?;
    match format {
        Format::Json => {
            let rows: Vec<_> = admins
                .iter()
                .map(|a| serde_json::json!({ "name": a.name, "role": a.role.as_str() }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            println!("{:<24}  {:<22}  Role group", "Name", "Role");
            for a in &admins {
                println!(
                    "{:<24}  {:<22}  {}",
                    a.name,
                    a.role.as_str(),
                    a.role.title()
                );
            }
            println!("{} administrator(s) in {}", admins.len(), path.display());
        }
    }
    Ok(0)
}

/// `imapgate audit`: the audit log, oldest first; with an identity, only that mailbox's lines
/// (under any of its names).
pub async fn show(config: &Config, identity: Option<&str>, format: Format) -> anyhow::Result<i32> {
    let Some(path) = config.admin.audit_log.as_deref() else {
        anyhow::bail!(
            "{}: no [admin] audit_log configured; changes are only in the gate's log",
            config.path.display()
        );
    };
    let entries = audit::read(path).with_context(|| format!("{}", path.display()))?;
    let entries: Vec<Entry> = match identity {
        Some(id) => {
            let known = named(config, id).await;
            entries
                .into_iter()
                .filter(|e| {
                    e.mailbox.eq_ignore_ascii_case(id)
                        || known
                            .iter()
                            .any(|m| !e.mailbox.is_empty() && m.matches(&e.mailbox))
                })
                .collect()
        }
        None => entries,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Table => {
            for e in &entries {
                let change = match (e.old.as_str(), e.new.as_str()) {
                    ("", "") => String::new(),
                    ("", new) => format!(" -> {new}"),
                    (old, new) => format!(" {old} -> {new}"),
                };
                let mailbox = if e.mailbox.is_empty() {
                    String::new()
                } else {
                    format!(" {}", e.mailbox)
                };
                println!(
                    "{}  {}  {}{mailbox}{change}: {}",
                    e.time, e.who, e.what, e.outcome
                );
            }
            println!(
                "{} entr{} in {}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                path.display()
            );
        }
    }
    Ok(0)
}

/// The mailboxes on disk `identity` names (none when the directory cannot be read).
async fn named(config: &Config, identity: &str) -> Vec<MailboxView> {
    let Ok(directory) = super::cli::open_directory(config) else {
        return Vec::new();
    };
    let filter = Filter {
        identity: Some(identity.to_string()),
        ..Filter::default()
    };
    directory
        .list(&filter, Page::ALL)
        .await
        .map(|l| l.mailboxes)
        .unwrap_or_default()
}
