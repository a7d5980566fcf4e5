//! State shared by all shards: read-mostly, published, or atomic. Nothing
//! here is locked on the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use toolgate_core::config::ValidConfig;
use toolgate_decision::{Catalog, Published, Snapshot};

use crate::http::head::Limits;
use crate::http::server::ConnConfig;
use crate::session::{Nonce, SessionKey};

/// Longest a handshake-era session lives, seconds.
pub const SESSION_MAX_AGE: u64 = 24 * 3600;

/// Terminated sessions: nonce → creation time (pruned after [`SESSION_MAX_AGE`]).
pub type Terminated = HashMap<Nonce, u64>;

/// Everything the shards share.
pub struct Shared {
    /// The validated configuration.
    pub config: ValidConfig,
    /// The decision snapshot.
    pub snapshot: Arc<Published<Snapshot>>,
    /// Fetched catalogs, index-aligned with upstreams (written off the request path).
    pub catalogs: Mutex<Vec<Option<Arc<Catalog>>>>,
    /// Per upstream: whether a catalog fetch has completed (either way).
    pub attempted: Vec<AtomicBool>,
    /// Sessions ended by DELETE.
    pub terminated: Arc<Published<Terminated>>,
    /// Key of session ids.
    pub session_key: SessionKey,
    /// Connection limits and timeouts.
    pub conn: ConnConfig,
    /// Requests refused because the audit ring was full.
    pub audit_refusals: AtomicU64,
}

impl Shared {
    /// Shared state for `config`, with session ids keyed by `session_key`.
    pub fn new(config: ValidConfig, session_key: [u8; 32]) -> Arc<Self> {
        let n = config.config.upstreams.len();
        let snapshot = Published::new(Snapshot::build(&config, &vec![None; n]));
        let s = &config.config.server;
        let conn = ConnConfig {
            limits: Limits {
                max_header_bytes: s.max_header_bytes,
                max_headers: s.max_headers,
                max_body_bytes: s.max_body_bytes,
            },
            header_timeout: Duration::from_millis(s.header_timeout_ms),
            body_timeout: Duration::from_millis(s.body_timeout_ms),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
        };
        Arc::new(Self {
            snapshot,
            catalogs: Mutex::new(vec![None; n]),
            attempted: (0..n).map(|_| AtomicBool::new(false)).collect(),
            terminated: Published::new(HashMap::new()),
            session_key: SessionKey::new(session_key),
            conn,
            audit_refusals: AtomicU64::new(0),
            config,
        })
    }

    /// Whether every upstream's catalog fetch has completed at least once.
    pub fn ready(&self) -> bool {
        self.attempted.iter().all(|a| a.load(Ordering::Acquire))
    }

    /// Stores upstream `idx`'s catalog (or its failure) and publishes a new snapshot.
    pub fn set_catalog(&self, idx: usize, catalog: Option<Catalog>) {
        {
            let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = catalog {
                cats[idx] = Some(Arc::new(c));
            }
            self.snapshot.publish(Snapshot::build(&self.config, &cats));
        }
        self.attempted[idx].store(true, Ordering::Release);
    }

    /// Ends a session; prunes entries too old to verify anyway.
    pub fn terminate(&self, nonce: Nonce, now: u64) {
        self.terminated.update(|t| {
            let mut t: Terminated = t
                .iter()
                .filter(|(_, &c)| now.saturating_sub(c) <= SESSION_MAX_AGE)
                .map(|(k, v)| (*k, *v))
                .collect();
            t.insert(nonce, now);
            t
        });
    }
}
