//! Identity resolution through moka, in front of any [`Directory`], as Exchange caches
//! per-mailbox settings: the login path asks here, never the source directly.
//!
//! - One lookup per name at a time: concurrent logins of one name wait for the same lookup.
//! - Mailboxes found stay `cache_ttl`; names that resolve to nothing are remembered
//!   `negative_cache_ttl` in a cache of their own, smaller and separate, so names tried without a
//!   password spare the source but never push a real mailbox out.
//! - A cache belongs to one directory instance: a reload installs a new one (empty), and a change
//!   made through the directory empties it.

use std::sync::Arc;
use std::time::Duration;

use super::{login_key, Directory, DirectoryError, DirectoryStats, NameForm, Policy, UnknownNames};
use crate::config::DirectoryConfig;

type Key = (NameForm, String);

/// The lookup failed in a way that is not an answer (the source is unreachable, say).
#[derive(Debug)]
enum Lookup {
    NotFound,
    Failed(DirectoryError),
}

pub struct CachedDirectory {
    source: Arc<dyn Directory>,
    found: moka::future::Cache<Key, Arc<Policy>>,
    missing: moka::future::Cache<Key, ()>,
    unknown: UnknownNames,
    /// Characters that mean something to backends (Dovecot's master-user separator `*`): a
    /// name with one of them is refused before any backend sees it.
    refused: Vec<char>,
    stats: DirectoryStats,
}

/// How many names that resolve to nothing are remembered at most.
const MISSING_CAPACITY: u64 = 10_000;

impl CachedDirectory {
    pub fn new(
        source: Arc<dyn Directory>,
        config: &DirectoryConfig,
        stats: DirectoryStats,
    ) -> CachedDirectory {
        CachedDirectory {
            source,
            found: moka::future::Cache::builder()
                .max_capacity(config.cache_capacity)
                .time_to_live(config.cache_ttl)
                .build(),
            missing: moka::future::Cache::builder()
                .max_capacity(MISSING_CAPACITY.min(config.cache_capacity))
                .time_to_live(config.negative_cache_ttl.max(Duration::from_millis(1)))
                .build(),
            unknown: config.unknown_names,
            refused: config.refused_login_characters.chars().collect(),
            stats,
        }
    }

    /// The directory behind the cache.
    pub fn source(&self) -> &Arc<dyn Directory> {
        &self.source
    }

    /// True when `login` carries a character backends give a meaning to.
    pub fn has_refused_character(&self, login: &str) -> bool {
        login.contains(self.refused.as_slice())
    }

    /// True for a character backends give a meaning to.
    pub fn is_refused(&self, c: char) -> bool {
        self.refused.contains(&c)
    }

    /// The policy for `login`; `None` when the name may not log in at all (no such mailbox under
    /// `unknown_names = "refuse"`, or a refused character).
    pub async fn resolve(&self, login: &str) -> Result<Option<Arc<Policy>>, DirectoryError> {
        if self.has_refused_character(login) {
            return Ok(None);
        }
        let key = login_key(login);
        if let Some(hit) = self.found.get(&key).await {
            self.stats.hits.inc();
            return Ok(Some(hit));
        }
        let found = if self.missing.contains_key(&key) {
            self.stats.hits.inc();
            None
        } else {
            self.stats.misses.inc();
            let source = self.source.clone();
            let name = login.to_string();
            let looked_up = self
                .found
                .try_get_with(key.clone(), async move {
                    match source.resolve(&name).await {
                        Ok(Some(view)) => Ok(Arc::new(Policy::of(&view))),
                        Ok(None) => Err(Lookup::NotFound),
                        Err(e) => Err(Lookup::Failed(e)),
                    }
                })
                .await;
            // A miss is rare (once a name a TTL): keep the entry count exact for the metrics.
            self.found.run_pending_tasks().await;
            match looked_up {
                Ok(policy) => Some(policy),
                Err(e) => match &*e {
                    Lookup::NotFound => {
                        self.missing.insert(key, ()).await;
                        None
                    }
                    Lookup::Failed(e) => return Err(DirectoryError::Unavailable(e.to_string())),
                },
            }
        };
        Ok(match (found, self.unknown) {
            (Some(policy), _) => Some(policy),
            (None, UnknownNames::Refuse) => None,
            (None, UnknownNames::Defaults) => {
                let (enabled, backend) = self.source.defaults();
                Some(Arc::new(Policy::defaults(enabled, &backend, login)))
            }
        })
    }

    /// Forgets everything (the source changed).
    pub fn clear(&self) {
        self.found.invalidate_all();
        self.missing.invalidate_all();
    }

    /// Mailboxes in the cache (names that resolve to nothing are not counted).
    pub async fn cached(&self) -> u64 {
        self.found.run_pending_tasks().await;
        self.found.entry_count()
    }

    /// Mailboxes in the cache, from synchronous code (the metrics endpoint, tests): exact as of
    /// the last lookup that went to the source.
    pub fn cached_entries(&self) -> u64 {
        self.found.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::file::FileDirectory;

    fn config(unknown: UnknownNames) -> DirectoryConfig {
        DirectoryConfig {
            unknown_names: unknown,
            ..DirectoryConfig::default()
        }
    }

    fn directory(text: &str) -> (tempfile::TempDir, Arc<dyn Directory>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        let d = FileDirectory::open(&path, &["main"]).unwrap();
        (dir, Arc::new(d))
    }

    const FILE: &str = "[[mailbox]]\nname = \"Ann\"\nemail = \"ann@example.com\"\nlogin = \"u1\"\n";

    #[tokio::test]
    async fn found_names_are_cached_and_missing_ones_apart() {
        let (_dir, source) = directory(FILE);
        let stats = DirectoryStats::default();
        let c = CachedDirectory::new(source, &config(UnknownNames::Refuse), stats.clone());
        let p = c.resolve("ANN@example.com").await.unwrap().unwrap();
        assert_eq!((&*p.backend_login, &*p.mailbox_key), ("u1", "main/u1"));
        assert!(c.resolve("ann@example.com").await.unwrap().is_some());
        assert_eq!((stats.misses.get(), stats.hits.get()), (1, 1));
        for _ in 0..3 {
            assert!(c.resolve("nobody@example.com").await.unwrap().is_none());
        }
        // The missing name was looked up once, and takes no room among mailboxes.
        assert_eq!((stats.misses.get(), stats.hits.get()), (2, 3));
        assert_eq!(c.cached().await, 1);
        assert!(c.resolve("u1*master").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn defaults_for_unknown_names_when_asked() {
        let (_dir, source) = directory(FILE);
        let c = CachedDirectory::new(
            source,
            &config(UnknownNames::Defaults),
            DirectoryStats::default(),
        );
        let p = c.resolve("Nobody@x").await.unwrap().unwrap();
        assert_eq!(
            (p.mailbox.as_deref(), &*p.backend_login),
            (None, "Nobody@x")
        );
        assert!(
            c.resolve("a*b").await.unwrap().is_none(),
            "refused characters still refuse"
        );
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_go_to_the_source_once() {
        let (_dir, source) = directory(FILE);
        let stats = DirectoryStats::default();
        let c = Arc::new(CachedDirectory::new(
            source,
            &config(UnknownNames::Refuse),
            stats.clone(),
        ));
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.resolve("u1").await.unwrap().is_some() })
            })
            .collect();
        for l in lookups {
            assert!(l.await.unwrap());
        }
        assert_eq!(c.cached().await, 1);
    }
}
