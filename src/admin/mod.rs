//! Administration: the control socket a running gate listens on ([`control`]), the
//! `imapgate mailbox|reload|sessions|kick` commands ([`cli`], which change mailboxes through the
//! directory), `check-config` ([`check`]), `test-login` ([`probe`]), and the admin center in the
//! browser ([`web`]) with its administrators ([`users`], `imapgate admin-user`) and the audit log
//! every change is written to ([`audit`], `imapgate audit`; both commands in [`accounts`]).
//!
//! The seed's procedure becomes one command and one check:
//! `imapgate mailbox set --identity "John Smith" --imap-enabled false` (edit, then reload the
//! running gate, which also closes that mailbox's open sessions) and
//! `imapgate mailbox get --identity "John Smith"` (ends with `IMAP4: Disabled`).

pub mod accounts;
pub mod audit;
pub mod check;
pub mod cli;
pub mod control;
pub mod manual;
pub mod probe;
mod show;
pub mod users;
pub mod web;

/// A password from the first line of `file`, or typed at a prompt (not echoed).
pub(crate) fn read_password(
    file: Option<&std::path::Path>,
    prompt: &str,
) -> anyhow::Result<crate::credentials::Secret> {
    use anyhow::Context;
    let bytes = match file {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
            first.strip_suffix(b"\r").unwrap_or(first).to_vec()
        }
        None => rpassword::prompt_password(prompt)?.into_bytes(),
    };
    Ok(crate::credentials::Secret::new(bytes))
}
