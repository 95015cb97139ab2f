//! The protocol log (`[protocol_log]`), in Exchange's CSV layout:
//! `dateTime,sessionId,seqNumber,sIp,cIp,user,duration,rqsize,rpsize,command,parameters,context`.
//!
//! One row per command before login (a LOGIN's parameters are `user *****`; an AUTHENTICATE's are
//! its mechanism, never the SASL message), and for relayed sessions a `proxy` row at least every
//! 30 seconds and at close, with the backend and the bytes each way. Files roll over hourly
//! (`IMAP4_yyyyMMddHH.LOG`, UTC). Sessions hand rows to a writer thread through a bounded queue
//! and never wait: when the queue is full the row is dropped and counted
//! (`imapgate_protocol_log_dropped_rows`). Control characters in any field are written as
//! `\xNN`, so a row is always one line: a client cannot forge rows.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;

use crate::config::ProtocolLogConfig;

const FIELDS: &str =
    "dateTime,sessionId,seqNumber,sIp,cIp,user,duration,rqsize,rpsize,command,parameters,context";

/// One row. `duration` is in milliseconds.
#[derive(Debug, Clone)]
pub struct Row {
    pub time: SystemTime,
    pub session: String,
    pub seq: u64,
    pub server: SocketAddr,
    pub client: SocketAddr,
    pub user: String,
    pub duration_ms: u64,
    pub rq_size: u64,
    pub rp_size: u64,
    pub command: String,
    pub parameters: String,
    pub context: String,
}

/// One session's rows: its id and addresses, and the one row counter its pre-login commands,
/// its relay and the sweeper's `proxy` rows share, so the numbering lives in one place.
#[derive(Debug)]
pub struct SessionLog {
    log: ProtocolLog,
    session: String,
    server: SocketAddr,
    client: SocketAddr,
    seq: AtomicU64,
}

/// What one row says, besides what its session knows.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub user: String,
    pub duration_ms: u64,
    pub rq_size: u64,
    pub rp_size: u64,
    pub command: String,
    pub parameters: String,
    pub context: String,
}

impl SessionLog {
    /// A session's log, or `None` when the protocol log is off (nothing is kept then).
    pub fn open(
        log: &ProtocolLog,
        session: String,
        server: SocketAddr,
        client: SocketAddr,
    ) -> Option<std::sync::Arc<SessionLog>> {
        log.enabled().then(|| {
            std::sync::Arc::new(SessionLog {
                log: log.clone(),
                session,
                server,
                client,
                seq: AtomicU64::new(1),
            })
        })
    }

    /// Writes the session's next row.
    pub fn row(&self, entry: Entry) {
        self.log.log(Row {
            time: SystemTime::now(),
            session: self.session.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            server: self.server,
            client: self.client,
            user: entry.user,
            duration_ms: entry.duration_ms,
            rq_size: entry.rq_size,
            rp_size: entry.rp_size,
            command: entry.command,
            parameters: entry.parameters,
            context: entry.context,
        });
    }
}

/// The sessions' end of the log; cheap to clone, a no-op when the log is off.
#[derive(Clone, Debug)]
pub struct ProtocolLog {
    tx: Option<SyncSender<Row>>,
    dropped: Counter,
}

impl ProtocolLog {
    /// Starts the writer thread when the log is enabled.
    pub fn start(config: &ProtocolLogConfig, dropped: Counter) -> std::io::Result<ProtocolLog> {
        if !config.enabled {
            return Ok(ProtocolLog { tx: None, dropped });
        }
        std::fs::create_dir_all(&config.directory)?;
        let (tx, rx) = sync_channel::<Row>(config.queue);
        let directory = config.directory.clone();
        std::thread::Builder::new()
            .name("protocol-log".into())
            .spawn(move || {
                let mut writer = Writer {
                    directory,
                    hour: String::new(),
                    file: None,
                };
                // Rows reach the file within a second, even while they keep coming.
                let mut flushed = std::time::Instant::now();
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(row) => {
                            writer.write(&row);
                            if flushed.elapsed() >= Duration::from_secs(1) {
                                writer.flush();
                                flushed = std::time::Instant::now();
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            writer.flush();
                            flushed = std::time::Instant::now();
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            writer.flush();
                            return;
                        }
                    }
                }
            })?;
        Ok(ProtocolLog {
            tx: Some(tx),
            dropped,
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a row without ever waiting.
    pub fn log(&self, row: Row) {
        if let Some(tx) = &self.tx {
            match tx.try_send(row) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.inc();
                }
            }
        }
    }
}

/// Control characters as `\xNN`: one row is one line, whatever a client typed.
fn escape(field: &str) -> String {
    if !field.chars().any(char::is_control) {
        return field.to_string();
    }
    let mut out = String::with_capacity(field.len() + 8);
    for c in field.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

struct Writer {
    directory: PathBuf,
    /// `yyyyMMddHH` of the open file.
    hour: String,
    file: Option<BufWriter<File>>,
}

impl Writer {
    fn write(&mut self, row: &Row) {
        let stamp = humantime::format_rfc3339_millis(row.time).to_string();
        let hour: String = stamp
            .chars()
            .filter(char::is_ascii_digit)
            .take(10)
            .collect();
        if hour != self.hour || self.file.is_none() {
            self.flush();
            self.file = self.open(&hour);
            self.hour = hour;
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        // Text a client chose (a user name in a literal may hold CR LF) never starts a line.
        let record = [
            stamp,
            escape(&row.session),
            row.seq.to_string(),
            row.server.to_string(),
            row.client.to_string(),
            escape(&row.user),
            row.duration_ms.to_string(),
            row.rq_size.to_string(),
            row.rp_size.to_string(),
            escape(&row.command),
            escape(&row.parameters),
            escape(&row.context),
        ];
        if csv.write_record(&record).is_ok() {
            if let Ok(bytes) = csv.into_inner() {
                let _ = file.write_all(&bytes);
            }
        }
    }

    fn open(&self, hour: &str) -> Option<BufWriter<File>> {
        let path = self.directory.join(format!("IMAP4_{hour}.LOG"));
        let new = !path.exists();
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => {
                let mut w = BufWriter::new(f);
                if new {
                    let _ = writeln!(w, "#Software: imapgate {}", env!("CARGO_PKG_VERSION"));
                    let _ = writeln!(w, "#Log-type: IMAP4 Protocol Log");
                    let _ = writeln!(w, "#Fields: {FIELDS}");
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the protocol log");
                None
            }
        }
    }

    fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }
}
