//! State shared by all shards: read-mostly, published, or atomic. Nothing
//! here is locked on the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::path::PathBuf;

use toolgate_control::State;
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
    /// The configuration the gateway started with (listener, shards, upstreams).
    pub config: ValidConfig,
    /// The latest configuration file, its policy texts, and the admin API's
    /// control state laid over them (agents, users, attachments and policies
    /// change at run time); written off the request path only.
    current: Mutex<Sources>,
    /// Per shard: the snapshot generation it runs (written by the shard when
    /// it picks one up; read by the admin API).
    pub seen: Box<[AtomicU64]>,
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
    /// Prometheus counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Upstream credentials, index-aligned with `config.upstreams`.
    pub credentials: crate::credential::Credentials,
}

/// What a snapshot is compiled from.
#[derive(Clone)]
pub struct Sources {
    /// The configuration file as last (re)loaded.
    pub file: ValidConfig,
    /// Its policy files: (path, text), in order.
    pub policies: Vec<(PathBuf, String)>,
    /// The control state written through the admin API.
    pub control: Arc<State>,
}

impl Sources {
    /// The effective configuration and policies, compiled into a snapshot
    /// over `catalogs`. Errors: why the policies do not parse.
    pub fn compile(&self, catalogs: &[Option<Arc<Catalog>>]) -> Result<Snapshot, Vec<String>> {
        let (cfg, skipped) = self.control.overlay(&self.file);
        for why in skipped {
            tracing::warn!("control state: {why}; the agent is left out");
        }
        let bundle =
            toolgate_decision::policy::from_sources(&self.control.policy_sources(&self.policies))
                .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        Ok(Snapshot::build(&cfg, catalogs).with_policies(&cfg, Arc::new(bundle)))
    }
}

/// Shards the configuration asks for: `server.shards`, else one per core.
pub fn shard_count(cfg: &ValidConfig) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cfg.config
        .server
        .shards
        .as_ref()
        .map(|s| *s.get_ref())
        .unwrap_or(cores)
}

impl Shared {
    /// Shared state for `config` (with its policy texts and the control
    /// state), with session ids keyed by `session_key`. Errors: the policies
    /// do not compile.
    pub fn new(
        config: ValidConfig,
        policies: Vec<(PathBuf, String)>,
        control: State,
        session_key: [u8; 32],
        credentials: crate::credential::Credentials,
    ) -> Result<Arc<Self>, Vec<String>> {
        let n = config.config.upstreams.len();
        let sources = Sources {
            file: config.clone(),
            policies,
            control: Arc::new(control),
        };
        let snapshot = Published::new(sources.compile(&vec![None; n])?);
        let shards = shard_count(&config);
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
        Ok(Arc::new(Self {
            current: Mutex::new(sources),
            seen: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            snapshot,
            catalogs: Mutex::new(vec![None; n]),
            attempted: (0..n).map(|_| AtomicBool::new(false)).collect(),
            terminated: Published::new(HashMap::new()),
            session_key: SessionKey::new(session_key),
            conn,
            audit_refusals: AtomicU64::new(0),
            metrics: Arc::new(crate::metrics::Metrics::new(shard_count(&config))),
            credentials,
            config,
        }))
    }

    /// Whether every upstream's catalog fetch has completed at least once.
    pub fn ready(&self) -> bool {
        self.attempted.iter().all(|a| a.load(Ordering::Acquire))
    }

    /// Stores upstream `idx`'s catalog (or its failure) and publishes a new snapshot.
    pub fn set_catalog(&self, idx: usize, catalog: Option<Catalog>) {
        let changed = catalog.is_some() || !self.attempted[idx].load(Ordering::Acquire);
        if changed {
            let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = catalog {
                cats[idx] = Some(Arc::new(c));
            }
            self.publish(&cats);
        }
        self.attempted[idx].store(true, Ordering::Release);
    }

    /// Builds and publishes a snapshot from the current sources and
    /// `catalogs` (callers hold the catalogs lock, which orders every
    /// publication); logs policies that fail schema validation. Returns the
    /// new generation, or `None` when the sources do not compile (the
    /// running snapshot stays).
    fn publish(&self, catalogs: &[Option<Arc<Catalog>>]) -> Option<u64> {
        let sources = self.sources();
        let snap = match sources.compile(catalogs) {
            Ok(s) => s,
            Err(errs) => {
                tracing::error!(
                    "policies do not compile, the running snapshot stays:\n{}",
                    errs.join("\n")
                );
                return None;
            }
        };
        if let Some(engine) = snap.engine.as_ref() {
            if catalogs.iter().all(Option::is_some) {
                for e in engine.bundle().validate(snap.cedar_schema()) {
                    tracing::warn!(error = %e, "policy does not validate against the tools' schema");
                }
            }
        }
        let generation = self.snapshot.publish(snap);
        tracing::debug!(generation, "snapshot published");
        Some(generation)
    }

    /// The sources the running snapshot is compiled from.
    pub fn sources(&self) -> Sources {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The fetched catalogs, index-aligned with upstreams.
    pub fn catalogs(&self) -> Vec<Option<Arc<Catalog>>> {
        self.catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the control state and publishes the snapshot it makes;
    /// returns the new generation, or `None` when it does not compile with
    /// the current file (the running snapshot then stays).
    pub fn set_control(&self, control: Arc<State>) -> Option<u64> {
        let cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .control = control;
        self.publish(&cats)
    }

    /// Re-reads the configuration file and policy files and publishes a new
    /// snapshot. On any error the running snapshot stays and the errors are
    /// returned. Listener, shard and upstream settings need a restart.
    pub fn reload(&self) -> Result<u64, String> {
        let path = self
            .config
            .path
            .clone()
            .ok_or("no configuration file to reload")?;
        let cfg = toolgate_core::config::load(&path).map_err(|e| e.to_string())?;
        let same_upstreams = cfg.upstream_urls == self.config.upstream_urls
            && cfg
                .config
                .upstreams
                .iter()
                .map(|u| u.name.get_ref())
                .eq(self
                    .config
                    .config
                    .upstreams
                    .iter()
                    .map(|u| u.name.get_ref()));
        if !same_upstreams {
            return Err("upstreams changed: restart toolgate to apply upstream changes".into());
        }
        let (policies, errs) = toolgate_decision::policy::read_sources(&cfg.policy_files);
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        if !errs.is_empty() {
            return Err(errs.join("\n"));
        }
        let candidate = Sources {
            file: cfg,
            policies,
            control: self.sources().control,
        };
        let cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        candidate.compile(&cats).map_err(|e| e.join("\n"))?;
        {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file = candidate.file;
            cur.policies = candidate.policies;
        }
        self.publish(&cats)
            .ok_or_else(|| "the configuration does not compile with the control state".to_owned())
    }

    /// Files whose change triggers a reload: the configuration, its
    /// policies and the JWKS (so rotated IdP keys take effect).
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.file
            .path
            .iter()
            .cloned()
            .chain(cur.file.policy_files.iter().cloned())
            .chain(cur.file.jwks_file.iter().cloned())
            .collect()
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
