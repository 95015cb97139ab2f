//! Administration: the control socket a running gate listens on ([`control`]), safe edits of the
//! mailboxes file ([`edit`]), and the `imapgate mailbox|reload|sessions|kick` commands ([`cli`]).
//!
//! The seed's procedure becomes one command and one check:
//! `imapgate mailbox set --identity "John Smith" --imap-enabled false` (edit, then reload the
//! running gate, which also closes that mailbox's open sessions) and
//! `imapgate mailbox get --identity "John Smith"` (ends with `IMAP4: Disabled`).

pub mod check;
pub mod cli;
pub mod control;
pub mod edit;
pub mod probe;
