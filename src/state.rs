//! Everything a reload replaces, as one immutable snapshot: configuration, directory with its
//! policy cache, the client-facing certificate and the backends. Sessions load the current
//! snapshot with one atomic read; a reload builds the next one aside and swaps it in whole, so no
//! session ever sees half of a reload.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::backend::Backend;
use crate::config::{Config, ConfigError};
use crate::directory::{CachedDirectory, DirectoryError, DirectoryStats};
use crate::tls::{self, TlsError};

/// Why a configuration could not be put in force; the running one stays.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("backends.{name}: {source}")]
    Backend { name: String, source: TlsError },
    #[error(transparent)]
    Permission(#[from] crate::permissions::PermissionError),
    #[error("[oauth]: {0}")]
    OAuth(String),
    /// Reading the files failed in an unexpected way (the loading task panicked).
    #[error("loading the configuration failed: {0}")]
    Internal(String),
}

pub struct State {
    pub config: Arc<Config>,
    /// The directory behind its cache: every lookup of the login path goes here.
    pub policies: CachedDirectory,
    /// Present when a certificate is configured: STARTTLS and implicit TLS.
    pub acceptor: Option<TlsAcceptor>,
    /// The admin center's, when `[admin_web]` is configured (reloaded like the IMAP one).
    pub admin_acceptor: Option<TlsAcceptor>,
    pub backends: HashMap<String, Arc<Backend>>,
    /// `[oauth] mode = "introspect"`: the token checker (a new one, with an empty cache, per
    /// reload).
    pub introspector: crate::oauth::Shared,
}

impl State {
    /// The bearer-token mechanisms offered before login: those of the backend a name not yet
    /// known goes to (the directory's default).
    pub fn token_mechanisms(&self) -> Vec<crate::credentials::TokenMechanism> {
        if self.config.oauth.is_none() {
            return Vec::new();
        }
        let (_, backend) = self.policies.source().defaults();
        self.backends
            .get(&*backend)
            .map(|b| b.token_mechanisms())
            .unwrap_or_default()
    }

    /// Reads and checks the configuration file and everything it names.
    pub fn load(config_path: &Path) -> Result<State, LoadError> {
        Self::load_with(config_path, DirectoryStats::default())
    }

    /// Like [`State::load`], counting cache hits and misses into `stats`.
    pub fn load_with(config_path: &Path, stats: DirectoryStats) -> Result<State, LoadError> {
        let config = Config::load(config_path)?;
        Self::from_config(config, stats)
    }

    pub fn from_config(config: Config, stats: DirectoryStats) -> Result<State, LoadError> {
        crate::permissions::check(&config)?;
        let names: Vec<&str> = config.backends.keys().map(String::as_str).collect();
        let directory = crate::directory::open(&config.directory, &names, stats.clone())?;
        let acceptor = match (&config.imap4.certificate, &config.imap4.private_key) {
            (Some(cert), Some(key)) => {
                Some(tls::acceptor(cert, key, &config.imap4.sni_certificates)?)
            }
            _ => None,
        };
        let admin_acceptor = match &config.admin_web {
            Some(web) => match web.tls_files(&config.imap4) {
                Some((cert, key)) => Some(tls::acceptor(cert, key, &[])?),
                None => None,
            },
            None => None,
        };
        let mut backends = HashMap::new();
        for (name, b) in &config.backends {
            let backend = Backend::new(name, b.clone()).map_err(|source| LoadError::Backend {
                name: name.clone(),
                source,
            })?;
            backends.insert(name.clone(), Arc::new(backend));
        }
        let policies = CachedDirectory::new(directory, &config.directory, stats);
        let introspector = match &config.oauth {
            Some(o) if o.mode == crate::config::OAuthMode::Introspect => Some(Arc::new(
                crate::oauth::Introspector::new(o).map_err(LoadError::OAuth)?,
            )),
            _ => None,
        };
        Ok(State {
            config: Arc::new(config),
            policies,
            acceptor,
            admin_acceptor,
            backends,
            introspector,
        })
    }
}
