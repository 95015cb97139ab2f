//! Administration: the control socket a running gate listens on ([`control`]), the
//! `imapgate mailbox|reload|sessions|kick` commands ([`cli`], which change mailboxes through the
//! directory), `check-config` ([`check`]) and `test-login` ([`probe`]).
//!
//! The seed's procedure becomes one command and one check:
//! `imapgate mailbox set --identity "John Smith" --imap-enabled false` (edit, then reload the
//! running gate, which also closes that mailbox's open sessions) and
//! `imapgate mailbox get --identity "John Smith"` (ends with `IMAP4: Disabled`).

pub mod check;
pub mod cli;
pub mod control;
pub mod audit;
pub mod probe;
pub mod users;
mod show;
