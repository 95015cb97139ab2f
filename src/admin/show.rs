//! How `imapgate mailbox get` shows mailboxes: a block per mailbox ending in `IMAP4: Enabled`
//! or `IMAP4: Disabled` (as Exchange's admin center and `Get-CASMailbox` say it), or a table.

use serde::Serialize;

use crate::directory::MailboxView;

/// One mailbox as `mailbox get` reports it: on disk, and in force when a gate is reachable.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    #[serde(flatten)]
    pub(super) mailbox: MailboxView,
    /// What the running gate enforces; `None` when no gate was reachable.
    pub(super) in_force: Option<InForce>,
    /// Where the mailbox was read, when not the file (`the LDAP directory`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) origin: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub(super) struct InForce {
    /// `None` when the running gate's directory does not have this mailbox (defaults apply).
    pub(super) imap_enabled: Option<bool>,
    pub(super) backend: Option<String>,
    pub(super) differs_from_disk: bool,
    /// The file on disk does not parse: what is shown is the running gate's directory.
    pub(super) disk_broken: bool,
}

impl Report {
    /// The ImapEnabled that counts: in force when known, else the file's.
    pub(super) fn effective(&self) -> bool {
        self.in_force
            .as_ref()
            .and_then(|f| f.imap_enabled)
            .unwrap_or(self.mailbox.imap_enabled)
    }
}

pub(super) fn print_block(r: &Report, gate_running: bool) {
    let m = &r.mailbox;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    println!("Name              : {}", opt(&m.name));
    println!("Alias             : {}", opt(&m.alias));
    println!("EmailAddress      : {}", opt(&m.email));
    println!("UserPrincipalName : {}", opt(&m.upn));
    println!("DomainAccount     : {}", opt(&m.domain_account));
    println!("Guid              : {}", opt(&m.guid));
    println!("BackendLogin      : {}", opt(&m.login));
    println!("Backend           : {}", m.backend);
    match &r.in_force {
        Some(f) if f.differs_from_disk => {
            let disk = enabled_word(m.imap_enabled);
            let force = f
                .imap_enabled
                .map(enabled_word)
                .unwrap_or("not in the directory (defaults apply)");
            println!("Source            : the running gate");
            println!(
                "Note              : on disk differs from in force: the file says IMAP4 {disk}, the gate enforces {force}; run `imapgate reload`"
            );
        }
        Some(f) if f.disk_broken => {
            println!("Source            : the running gate (the file on disk is broken; see above)")
        }
        Some(_) => println!("Source            : the running gate (same as on disk)"),
        None if r.origin.is_some() => {
            println!("Source            : {}", r.origin.unwrap_or_default())
        }
        None if gate_running => {}
        None => println!("Source            : the file (no running gate reachable)"),
    }
    println!("IMAP4: {}", enabled_word(r.effective()));
}

pub(super) fn print_table(reports: &[Report], gate_running: bool) {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            let m = &r.mailbox;
            let mut enabled = if r.effective() { "True" } else { "False" }.to_string();
            if r.in_force.as_ref().is_some_and(|f| f.differs_from_disk) {
                enabled.push_str(" *");
            }
            [
                m.name.clone().unwrap_or_default(),
                m.alias.clone().unwrap_or_default(),
                m.email.clone().or(m.upn.clone()).unwrap_or_default(),
                m.backend.clone(),
                enabled,
            ]
        })
        .collect();
    let header = ["Name", "Alias", "Email", "Backend", "ImapEnabled"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&header.map(String::from)));
    println!("{}", line(&widths.map(|w| "-".repeat(w))));
    for row in &rows {
        println!("{}", line(row));
    }
    if reports
        .iter()
        .any(|r| r.in_force.as_ref().is_some_and(|f| f.differs_from_disk))
    {
        println!("* on disk differs from in force (shown: what the running gate enforces); run `imapgate reload`");
    }
    if reports
        .iter()
        .any(|r| r.in_force.as_ref().is_some_and(|f| f.disk_broken))
    {
        println!("(from the running gate: the file on disk is broken; see above)");
    }
    if !gate_running {
        println!("(from the file: no running gate reachable)");
    }
}

pub(super) fn enabled_word(enabled: bool) -> &'static str {
    if enabled {
        "Enabled"
    } else {
        "Disabled"
    }
}
