//! State shared by all shards: read-mostly, published, or atomic. Nothing
//! here is locked on the request path.
//!
//! By job: [`publish`] builds and publishes the snapshot every shard reads;
//! [`catalogs`] keeps the upstreams' fetched tool catalogs; [`upstreams`]
//! what shard clients of each upstream are built from; [`identity`] the
//! sources of caller identity (fetched JWKS, sub-token key and
//! revocations); [`pins`] tool pinning; [`reload`] re-reading the files.
//! Writers take the catalogs lock first: it orders every publication.

mod catalogs;
mod identity;
mod pins;
mod publish;
mod reload;
mod upstreams;

pub use catalogs::CatalogSet;
pub use identity::JwksError;
pub use pins::ApproveError;
pub use reload::ReloadError;
pub use upstreams::{stored_parts, ClientParts, StoredParts};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use toolgate_control::State;
use toolgate_core::config::ValidConfig;
use toolgate_core::subtoken::Verifier;
use toolgate_decision::pins::Pins;
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
    /// Per shard: woken when a snapshot is published, so a shard picks it
    /// up at once through its executor's cross-thread wake rather than
    /// waiting on its own timer.
    pub published: Box<[futures_util::task::AtomicWaker]>,
    /// The decision snapshot.
    pub snapshot: Arc<Published<Snapshot>>,
    /// Fetched catalogs by upstream name (written off the request path);
    /// its lock orders every publication.
    catalogs: Mutex<CatalogSet>,
    /// Credentials and TLS of the upstreams written through the admin API,
    /// by name, read when they were written.
    stored_upstreams: Mutex<HashMap<String, Arc<StoredParts>>>,
    /// Sessions ended by DELETE.
    pub terminated: Arc<Published<Terminated>>,
    /// Cancellations on their way to the shard running the call.
    pub cancels: crate::inflight::Cancels,
    /// Key of session ids.
    pub session_key: SessionKey,
    /// Connection limits and timeouts.
    pub conn: ConnConfig,
    /// Requests refused because the audit ring was full.
    pub audit_refusals: AtomicU64,
    /// Prometheus counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The configuration file's upstream credentials, by upstream name.
    pub credentials: toolgate_upstream::credential::Credentials,
    /// The configuration file's `openapi` upstreams' tool surfaces, by name.
    pub openapi: HashMap<String, toolgate_upstream::openapi::LiveSurface>,
    /// The processes of the `stdio` upstreams, by name (started at boot;
    /// their settings need a restart to change).
    pub stdio: HashMap<String, Arc<toolgate_upstream::stdio::Pool>>,
    /// The end-user assertion signer (`[identity_assertions]`); its keys
    /// are read again on reload.
    pub assertions: Option<Arc<Published<toolgate_upstream::assertion::Signer>>>,
    /// The listener's TLS configuration, when `[server.tls]` is set; its
    /// certificate, key and client CA are re-read on reload.
    pub tls: Option<Arc<Published<TlsAcceptor>>>,
    /// The admin listener's TLS configuration, when `[admin.tls]` is set;
    /// re-read on reload like the agent listener's.
    pub admin_tls: Option<Arc<Published<TlsAcceptor>>>,
    /// Token endpoints of the configuration file's `token_exchange`
    /// upstreams, by name (read at start; changes need a restart, like
    /// every upstream setting).
    pub exchanges: HashMap<String, Arc<toolgate_upstream::exchange::Endpoint>>,
    /// Users' connected accounts (`[connected_accounts]`): read at start,
    /// refreshed on shard 0.
    pub accounts: Option<Arc<crate::accounts::Accounts>>,
    /// TLS toward each `https://` upstream of the configuration file, by name.
    pub upstream_tls: HashMap<String, toolgate_net::tls::ClientTls>,
    /// TLS toward an `https://` judge.
    pub judge_tls: Option<toolgate_net::tls::ClientTls>,
    /// The sub-token verifier (key and the revocation file's ids) that
    /// snapshots carry, with the control state's revocations added.
    subtokens: Mutex<Option<Arc<Verifier>>>,
    /// The JWKS last fetched from `auth.jwt.jwks_url`.
    jwks: Mutex<Option<String>>,
    /// A token named an unknown `kid`: fetch the JWKS again (rate-limited).
    pub jwks_wanted: AtomicBool,
    /// Whether a JWKS fetch has completed (either way), for readiness.
    pub jwks_attempted: AtomicBool,
    /// TLS toward an `https://` JWKS URL.
    pub jwks_tls: Option<toolgate_net::tls::ClientTls>,
    /// OAuth client-credentials grants, taken by shard 0 to run.
    pub oauth: Mutex<Vec<toolgate_upstream::oauth::OAuthClient>>,
    /// Grants not yet tried once (readiness).
    pub oauth_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Approved tool definition digests, when `[tool_pins]` is configured.
    pins: Mutex<Option<Pins>>,
    /// Per-agent rate limits (`rate_limit`), by agent id.
    pub rate_limits: Arc<Published<crate::ratelimit::Limits>>,
    /// `[limits]` rules over the process's counters (kept across reloads).
    pub limits: Arc<Published<toolgate_limits::Limits>>,
    /// The counters, the key under which their keys are hashed, and the
    /// quota sharing through Redis (`limits.backend = "redis"`).
    limit_counters: (
        Arc<toolgate_limits::Table>,
        std::hash::RandomState,
        Option<Arc<toolgate_limits::Sharing>>,
    ),
    /// Every session's state for `context.session`, made when a snapshot
    /// first has policies that read it (sized by `[sessions]` at start).
    pub sessions: std::sync::OnceLock<Arc<toolgate_decision::session::Sessions>>,
    /// The Redis sync of shared sessions (`sessions.backend = "redis"`).
    pub session_sync: std::sync::OnceLock<Arc<crate::session_sync::SessionSync>>,
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
    /// The effective configuration: the file with the control state laid
    /// over it (see [`State::overlay`]).
    pub fn effective(&self) -> ValidConfig {
        self.control.overlay(&self.file).0
    }

    /// The effective configuration `cfg` (from [`Sources::effective`]) and
    /// the policies, compiled into a snapshot over `catalogs` (index-aligned
    /// with `cfg`'s upstreams). Errors: why the policies do not parse.
    pub fn compile(
        &self,
        cfg: &ValidConfig,
        catalogs: &[Option<Arc<Catalog>>],
    ) -> Result<Snapshot, Vec<String>> {
        let bundle =
            toolgate_decision::policy::from_sources(&self.control.policy_sources(&self.policies))
                .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        Ok(Snapshot::build(cfg, catalogs).with_policies(cfg, Arc::new(bundle)))
    }
}

/// What the configuration names beyond itself, read and checked at start:
/// secrets, TLS material, the sub-token key, OAuth grants, tool pins.
pub struct Loaded {
    /// Upstream credentials, by upstream name.
    pub credentials: toolgate_upstream::credential::Credentials,
    /// The tool surfaces of `openapi` upstreams, by upstream name.
    pub openapi: HashMap<String, toolgate_upstream::openapi::LiveSurface>,
    /// The processes of `stdio` upstreams, by upstream name.
    pub stdio: HashMap<String, Arc<toolgate_upstream::stdio::Pool>>,
    /// The end-user assertion signer, with `[identity_assertions]`.
    pub assertions: Option<toolgate_upstream::assertion::Signer>,
    /// Token endpoints of `token_exchange` upstreams, by upstream name.
    pub exchanges: HashMap<String, Arc<toolgate_upstream::exchange::Endpoint>>,
    /// Users' connected accounts, with `[connected_accounts]`.
    pub accounts: Option<Arc<crate::accounts::Accounts>>,
    /// Certificates, keys and CA bundles.
    pub tls: toolgate_net::tls::TlsSetup,
    /// The sub-token verifier, with `[auth.subtokens]`.
    pub subtokens: Option<Arc<Verifier>>,
    /// OAuth client-credentials grants for upstream credentials.
    pub oauth: Vec<toolgate_upstream::oauth::OAuthClient>,
    /// Approved tool definition digests, with `[tool_pins]`.
    pub pins: Option<Pins>,
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
    /// state) and what it loaded, with session ids keyed by `session_key`.
    /// Errors: the policies do not compile.
    pub fn new(
        config: ValidConfig,
        policies: Vec<(PathBuf, String)>,
        control: State,
        session_key: [u8; 32],
        loaded: Loaded,
    ) -> Result<Arc<Self>, Vec<String>> {
        let Loaded {
            credentials,
            openapi,
            stdio,
            assertions,
            exchanges,
            accounts,
            tls,
            subtokens,
            oauth,
            pins,
        } = loaded;
        let sources = Sources {
            file: config.clone(),
            policies,
            control: Arc::new(control),
        };
        let (eff, skipped) = sources.control.overlay(&sources.file);
        for why in skipped {
            tracing::warn!("control state: {why}; left out");
        }
        let mut stored = HashMap::new();
        upstreams::sync_stored(&mut stored, &sources.control, &eff);
        let n = eff.upstreams.len();
        let snapshot = Published::new(sources.compile(&eff, &vec![None; n])?.with_subtokens(
            identity::with_control_revocations(subtokens.clone(), &sources.control),
        ));
        let rate_limits = Published::new(crate::ratelimit::build(&eff, &HashMap::new()));
        let table = toolgate_limits::Limits::table(&eff.config.limits);
        let sharing = match &config.limits_redis {
            Some(setup) => Some(Arc::new(
                toolgate_limits::shared::start(setup.clone(), Arc::clone(&table))
                    .map_err(|e| vec![format!("starting the Redis quota sync: {e}")])?,
            )),
            None => None,
        };
        let limit_counters = (table, std::hash::RandomState::new(), sharing);
        let limits = Published::new(toolgate_limits::Limits::new(
            &eff.config.limits,
            Arc::clone(&limit_counters.0),
            limit_counters.1.clone(),
            limit_counters.2.clone(),
        ));
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
        let shared = Arc::new(Self {
            current: Mutex::new(sources),
            seen: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            published: (0..shards)
                .map(|_| futures_util::task::AtomicWaker::new())
                .collect(),
            snapshot,
            catalogs: Mutex::new(CatalogSet::default()),
            stored_upstreams: Mutex::new(stored),
            terminated: Published::new(HashMap::new()),
            cancels: crate::inflight::Cancels::new(shards),
            session_key: SessionKey::new(session_key),
            conn,
            audit_refusals: AtomicU64::new(0),
            metrics: Arc::new(crate::metrics::Metrics::new(shards)),
            credentials,
            openapi,
            stdio,
            assertions: assertions.map(Published::new),
            exchanges,
            accounts,
            tls: tls.server.map(|t| Published::new(TlsAcceptor::from(t))),
            admin_tls: tls.admin.map(|t| Published::new(TlsAcceptor::from(t))),
            upstream_tls: tls.upstreams,
            judge_tls: tls.judge,
            subtokens: Mutex::new(subtokens),
            jwks: Mutex::new(None),
            jwks_wanted: AtomicBool::new(false),
            jwks_attempted: AtomicBool::new(false),
            jwks_tls: tls.jwks,
            oauth_pending: Arc::new(std::sync::atomic::AtomicUsize::new(oauth.len())),
            oauth: Mutex::new(oauth),
            pins: Mutex::new(pins),
            rate_limits,
            limits,
            limit_counters,
            sessions: std::sync::OnceLock::new(),
            session_sync: std::sync::OnceLock::new(),
            config,
        });
        if shared.snapshot.load().sessions_used {
            shared.make_sessions();
        }
        if let Some(sharing) = &shared.limit_counters.2 {
            shared.metrics.set_limits(Arc::clone(sharing));
        }
        Ok(shared)
    }

    /// Whether every upstream's catalog fetch has completed at least once.
    pub fn ready(&self) -> bool {
        let fetched = {
            let cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
            // A stdio upstream is toolgate's own process: ready once it
            // runs and its tools are known, not merely tried.
            self.config
                .upstreams
                .iter()
                .all(|u| match self.stdio.get(u.name()) {
                    Some(p) => p.health().up && cats.fetched(u.name()),
                    None => cats.attempted(u.name()),
                })
        };
        fetched
            && (self.config.jwks_url.is_none() || self.jwks_attempted.load(Ordering::Acquire))
            && self.oauth_pending.load(Ordering::Acquire) == 0
    }

    /// The stdio upstreams whose processes are crash-looping, in
    /// configuration order.
    pub fn unhealthy_stdio(&self) -> Vec<&str> {
        self.config
            .upstreams
            .iter()
            .filter(|u| {
                self.stdio
                    .get(u.name())
                    .is_some_and(|p| p.health().unhealthy)
            })
            .map(|u| u.name())
            .collect()
    }

    /// The sources the running snapshot is compiled from.
    pub fn sources(&self) -> Sources {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the control state and publishes the snapshot it makes;
    /// returns the new generation, or `None` when it does not compile with
    /// the current file (the running snapshot then stays).
    ///
    /// Only a newer revision replaces the running one: a replica's follower
    /// and its admin API may both bring the same or an older state, and an
    /// older one must never undo a change (a revoke) already published; then
    /// the running generation is returned.
    pub fn set_control(&self, control: Arc<State>) -> Option<u64> {
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if control.revision <= current.control.revision && current.control.revision > 0 {
                return Some(self.snapshot.generation());
            }
            current.control = control;
        }
        self.publish(&mut cats)
    }

    /// The session table, made once (off the request path), with its
    /// Redis sync when sessions are shared.
    pub(crate) fn make_sessions(&self) {
        let s = &self.config.config.sessions;
        let redis = self
            .config
            .limits_redis
            .as_ref()
            .filter(|_| s.backend == toolgate_core::config::LimitsBackend::Redis);
        let table = self.sessions.get_or_init(|| {
            let t = toolgate_decision::session::Sessions::new(
                s.max_sessions,
                s.idle_timeout_s,
                s.distinct.len(),
            );
            Arc::new(if redis.is_some() { t.shared() } else { t })
        });
        if let Some(setup) = redis {
            let distinct = s.distinct.iter().map(|d| Arc::from(d.as_str())).collect();
            if self.session_sync.get().is_none() {
                match crate::session_sync::start(
                    setup.clone(),
                    Arc::clone(table),
                    distinct,
                    s.idle_timeout_s,
                ) {
                    Ok(sync) => {
                        let _ = self.session_sync.set(Arc::new(sync));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the session sync: shared sessions are unknown")
                    }
                }
            }
        }
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
