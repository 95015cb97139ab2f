//! imapgate: an IMAP4 front end that decides, mailbox by mailbox, who may use IMAP4, and proxies
//! the sessions it lets through to each user's backend IMAP server.
//!
//! It plays the part of Exchange's "IMAP4 service" in front of "IMAP4 Backend service"s: it
//! answers clients before login, has the user's backend verify the credentials, checks the
//! mailbox's `ImapEnabled` flag (through a cache), and after that only relays bytes.
//!
//! # Layers
//!
//! Each room imports only from rooms on its own line or below it, never from above, and rooms
//! on one line do not import each other in a circle (`tests/layers.rs` checks both against this
//! list):
//!
//! 1. [`server`]: the composition root: builds every part from the configuration and hands each
//!    what it needs; the gate as a library object (bind, run, reload, shutdown) that tests drive.
//! 2. [`lifecycle`]: signals and sd_notify, acting on a trait the root implements; [`admin`]:
//!    the control socket (a trait the root implements), the operator's commands, check-config,
//!    test-login, the admin center in the browser (on the same trait), administrators, audit.
//! 3. [`listener`]: accept loops, connection limits per address, a session per connection.
//! 4. [`session`]: one connection: the pre-login [`session::dialogue`] (a state machine without
//!    I/O) and its driver [`session::preauth`], the [`session::relay`] (bytes both ways, large
//!    literals spliced by [`session::splice`]), the [`session::sweeper`] over all relays.
//! 5. [`login`]: the Login service: penalty, directory, backend login, `ImapEnabled`, limits,
//!    registration.
//! 6. [`state`]: the reloadable snapshot (configuration, directory and its cache, certificate,
//!    backends).
//! 7. [`backend`]: the IMAP client on imap-codec and the login on a user's behalf;
//!    [`directory`]: the directory trait, the mailboxes file, LDAP, the moka cache; [`limits`]:
//!    connection counts, the session limiter trait, the failed-login penalty; [`fleet`]: state
//!    shared with the other gates on Redis (the fleet's session limiter, penalty, changes);
//!    [`oauth`]: bearer tokens checked by RFC 7662 introspection.
//! 8. [`registry`]: open sessions (byte counts, kicks); [`metrics`]: Prometheus;
//!    [`protocol_log`]: Exchange-style CSV rows; [`tls`]; [`permissions`]: strict modes;
//!    [`memory`]: freed memory handed back after a burst.
//! 9. [`wire`], [`credentials`], [`errors`] (who is to blame), [`config`], [`phase`],
//!    [`stream`], [`files`] (locked, atomic edits): the floor.

pub mod admin;
pub mod backend;
pub mod config;
pub mod credentials;
pub mod directory;
pub mod errors;
pub mod files;
pub mod fleet;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod login;
pub mod memory;
pub mod metrics;
pub mod oauth;
pub mod permissions;
pub mod phase;
pub mod protocol_log;
pub mod registry;
pub mod server;
pub mod session;
pub mod state;
pub mod stream;
pub mod tls;
pub mod wire;

pub use server::{Gate, GateHandle};
