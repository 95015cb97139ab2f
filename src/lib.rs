//! imapgate: an IMAP4 front end that decides, mailbox by mailbox, who may use IMAP4, and proxies
//! the sessions it lets through to each user's backend IMAP server.
//!
//! It plays the part of Exchange's "IMAP4 service" in front of "IMAP4 Backend service"s: it
//! answers clients before login, has the user's backend verify the credentials, checks the
//! mailbox's `ImapEnabled` flag (through a cache), and after that only relays bytes.
//!
//! # Layout
//! - [`server`]: the gate as a library object (bind, run, reload, shutdown); what tests drive.
//! - [`lifecycle`]: signals for the daemon (SIGHUP reload, SIGTERM/SIGINT shutdown).
//! - [`listener`]: accept loops.
//! - [`limits`]: connection limits and the failed-login penalty, as RAII guards.
//! - [`session`]: one connection: [`session::preauth`] (the front end before login) and
//!   [`session::relay`] (bytes both ways after login, large literals spliced by
//!   [`session::splice`]); [`session::sweeper`] watches all relayed sessions (idle timeout,
//!   byte metrics, protocol log rows).
//! - [`backend`]: the backend side: connect, TLS, log in on the user's behalf.
//! - [`directory`]: the mailbox directory, identity resolution and the policy cache.
//! - [`registry`]: open sessions and their shared entries (byte counts, kicks), for reload,
//!   the sweeper, `imapgate sessions` and `imapgate kick`.
//! - [`metrics`]: Prometheus endpoint; [`protocol_log`]: Exchange-style CSV protocol log.
//! - [`admin`]: control socket, safe edits of the mailboxes file, the operator's commands.
//! - [`state`]: the reloadable snapshot (config, directory, certificate, backends).
//! - [`permissions`]: strict modes for the files that decide who may use IMAP4.
//! - [`config`], [`tls`], [`credentials`], [`stream`]: supporting pieces.

pub mod admin;
pub mod backend;
pub mod config;
pub mod credentials;
pub mod directory;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod permissions;
pub mod protocol_log;
pub mod registry;
pub mod server;
pub mod session;
pub mod state;
pub mod stream;
pub mod tls;

pub use server::{Gate, GateHandle};
