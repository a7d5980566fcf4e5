//! State shared by all shards: read-mostly, published, or atomic. Nothing
//! here is locked on the request path.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use toolgate_control::{Kind, Spec, State, UpstreamCredentialSpec, UpstreamSpec};
use toolgate_core::config::{PinAction, ResolvedUpstream, ValidConfig};
use toolgate_core::secret::Secret;
use toolgate_core::subtoken::Verifier;
use toolgate_core::upstream_url::UpstreamUrl;
use toolgate_decision::catalog::CatalogError;
use toolgate_decision::pins::{PinStatus, Pins};
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
    /// Fetched catalogs by upstream name (written off the request path);
    /// its lock orders every publication.
    catalogs: Mutex<CatalogSet>,
    /// Credentials and TLS of the upstreams written through the admin API,
    /// by name, read when they were written.
    stored_upstreams: Mutex<HashMap<String, Arc<StoredParts>>>,
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
    /// The configuration file's upstream credentials, by upstream name.
    pub credentials: crate::credential::Credentials,
    /// The listener's TLS configuration, when `[server.tls]` is set; its
    /// certificate, key and client CA are re-read on reload.
    pub tls: Option<Arc<Published<TlsAcceptor>>>,
    /// The admin listener's TLS configuration, when `[admin.tls]` is set;
    /// re-read on reload like the agent listener's.
    pub admin_tls: Option<Arc<Published<TlsAcceptor>>>,
    /// TLS toward each `https://` upstream of the configuration file, by name.
    pub upstream_tls: HashMap<String, crate::tls::ClientTls>,
    /// TLS toward an `https://` judge.
    pub judge_tls: Option<crate::tls::ClientTls>,
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
    pub jwks_tls: Option<crate::tls::ClientTls>,
    /// OAuth client-credentials grants, taken by shard 0 to run.
    pub oauth: Mutex<Vec<crate::oauth::OAuthClient>>,
    /// Grants not yet tried once (readiness).
    pub oauth_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Approved tool definition digests, when `[tool_pins]` is configured.
    pins: Mutex<Option<Pins>>,
    /// Per-agent rate limits (`rate_limit`), by agent id.
    pub rate_limits: Arc<Published<crate::ratelimit::Limits>>,
}

/// An upstream written through the admin API, as shards build its client:
/// its credential and TLS, read once when the upstream was written (a new
/// document builds new parts, and every shard a new client).
pub struct StoredParts {
    /// The document the parts were built from.
    pub spec: UpstreamSpec,
    /// The credential source it named then (a named one may change).
    pub source: Option<UpstreamCredentialSpec>,
    /// The versions of the upstream and of the credential it names when
    /// these were read: any write of either reads them again (so writing a
    /// credential unchanged picks up a rotated file).
    pub written: (u64, u64),
    /// The credential header line, when it has a credential.
    pub credential: Option<Arc<Published<Secret>>>,
    /// TLS toward an `https://` URL.
    pub tls: Option<crate::tls::ClientTls>,
}

/// What a shard builds its client of an upstream from.
pub struct ClientParts {
    /// The credential header line, when it has a credential.
    pub credential: Option<Arc<Published<Secret>>>,
    /// TLS toward an `https://` URL.
    pub tls: Option<crate::tls::ClientTls>,
    /// For an upstream written through the admin API, the parts these
    /// come from (a client built from other parts is out of date).
    pub stored: Option<Arc<StoredParts>>,
}

/// Reads the credential and TLS material of `upstream` (of the effective
/// configuration), written through the admin API as `spec` naming
/// credential `source`. Errors: what cannot be read (never a secret value).
pub fn stored_parts(
    upstream: &ResolvedUpstream,
    spec: &UpstreamSpec,
    source: Option<UpstreamCredentialSpec>,
) -> Result<StoredParts, String> {
    let name = upstream.name();
    let credential = match &upstream.entry.credential {
        Some(c) => {
            let file = upstream.credential_file.as_deref();
            let secret = crate::credential::read(name, c, file).map_err(|e| e.to_string())?;
            Some(Published::new(secret))
        }
        None => None,
    };
    let tls = crate::tls::client_tls(&upstream.url, upstream.ca_file.as_deref())
        .map_err(|e| format!("upstream `{name}`: {e}"))?;
    Ok(StoredParts {
        spec: spec.clone(),
        source,
        written: (0, 0),
        credential,
        tls,
    })
}

/// Builds the parts of stored upstreams that are new or changed in
/// `control` (laid over the file as `eff`) and drops those deleted. One
/// that cannot be read is logged and given parts that refuse its calls.
fn sync_stored(map: &mut HashMap<String, Arc<StoredParts>>, control: &State, eff: &ValidConfig) {
    map.retain(|name, _| control.get(Kind::Upstreams, name).is_some());
    for (id, e) in control.list(Kind::Upstreams) {
        let Spec::Upstream(spec) = &e.spec else {
            continue;
        };
        let source = control.credential_of(spec);
        let written = (e.version, control.credential_version(spec));
        if map
            .get(id)
            .is_some_and(|p| &p.spec == spec && p.source == source && p.written == written)
        {
            continue;
        }
        map.remove(id);
        let Some((_, upstream)) = eff.upstream(id) else {
            continue;
        };
        match stored_parts(upstream, spec, source.clone()) {
            Ok(p) => {
                map.insert(id.to_owned(), Arc::new(StoredParts { written, ..p }));
            }
            Err(e) => {
                // Never the file's credential or plain text in its place:
                // an empty credential refuses every call before it is sent.
                tracing::error!(error = %e, "upstream written through the admin API cannot be used; its calls are refused until it is written again");
                map.insert(
                    id.to_owned(),
                    Arc::new(StoredParts {
                        spec: spec.clone(),
                        source,
                        written,
                        credential: Some(Published::new(Secret::new(Vec::new()))),
                        tls: None,
                    }),
                );
            }
        }
    }
}

/// One upstream's fetched catalog.
struct Fetched {
    /// The endpoint it was fetched from: a catalog of another URL is not
    /// this upstream's any more.
    url: UpstreamUrl,
    /// The `tools/list` result pages, kept so the catalog can be rendered
    /// again when the upstreams' names change.
    pages: Arc<Vec<Vec<u8>>>,
    /// The catalog as last rendered: for upstream index, with prefixes.
    built: Option<(usize, Vec<String>, Arc<Catalog>)>,
}

/// Fetched catalogs by upstream name, and which upstreams had a fetch
/// complete (either way).
#[derive(Default)]
pub struct CatalogSet {
    fetched: HashMap<String, Fetched>,
    attempted: HashSet<String>,
}

/// Every upstream's tool prefix, in order.
fn prefixes(cfg: &ValidConfig) -> Vec<String> {
    cfg.upstreams
        .iter()
        .map(|u| toolgate_control::state::prefix_of(&u.entry).to_owned())
        .collect()
}

impl CatalogSet {
    /// The catalogs index-aligned with `cfg`'s upstreams: each upstream's,
    /// when fetched from its current URL, rendered with `cfg`'s names
    /// (again only when its index or the prefixes changed).
    fn aligned(&mut self, cfg: &ValidConfig) -> Vec<Option<Arc<Catalog>>> {
        let names = prefixes(cfg);
        cfg.upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let f = self.fetched.get_mut(u.name())?;
                if f.url != u.url {
                    return None;
                }
                if let Some((at, with, c)) = &f.built {
                    if *at == i && *with == names {
                        return Some(Arc::clone(c));
                    }
                }
                let c = Arc::new(Catalog::from_pages(i, &cfg.namer, &f.pages).ok()?);
                f.built = Some((i, names.clone(), Arc::clone(&c)));
                Some(c)
            })
            .collect()
    }

    /// Forgets the catalogs of upstreams `cfg` no longer has.
    fn prune(&mut self, cfg: &ValidConfig) {
        let has = |n: &str| cfg.upstream(n).is_some();
        self.fetched.retain(|n, _| has(n));
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

/// The sub-token verifier with the control state's revocations (made
/// through the admin API) added to the revocation file's.
fn with_control_revocations(
    verifier: Option<Arc<Verifier>>,
    control: &State,
) -> Option<Arc<Verifier>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let revoked = control.revoked_subtokens(now);
    match verifier {
        Some(v) if !revoked.is_empty() => Some(Arc::new(v.with_revoked(revoked))),
        other => other,
    }
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
    pub credentials: crate::credential::Credentials,
    /// Certificates, keys and CA bundles.
    pub tls: crate::tls::TlsSetup,
    /// The sub-token verifier, with `[auth.subtokens]`.
    pub subtokens: Option<Arc<Verifier>>,
    /// OAuth client-credentials grants for upstream credentials.
    pub oauth: Vec<crate::oauth::OAuthClient>,
    /// Approved tool definition digests, with `[tool_pins]`.
    pub pins: Option<Pins>,
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
        sync_stored(&mut stored, &sources.control, &eff);
        let n = eff.upstreams.len();
        let snapshot = Published::new(sources.compile(&eff, &vec![None; n])?.with_subtokens(
            with_control_revocations(subtokens.clone(), &sources.control),
        ));
        let rate_limits = Published::new(crate::ratelimit::build(&eff, &HashMap::new()));
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
            catalogs: Mutex::new(CatalogSet::default()),
            stored_upstreams: Mutex::new(stored),
            terminated: Published::new(HashMap::new()),
            session_key: SessionKey::new(session_key),
            conn,
            audit_refusals: AtomicU64::new(0),
            metrics: Arc::new(crate::metrics::Metrics::new(shards)),
            credentials,
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
            config,
        }))
    }

    /// Whether every upstream's catalog fetch has completed at least once.
    pub fn ready(&self) -> bool {
        let fetched = {
            let cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
            self.config
                .upstreams
                .iter()
                .all(|u| cats.attempted.contains(u.name()))
        };
        fetched
            && (self.config.jwks_url.is_none() || self.jwks_attempted.load(Ordering::Acquire))
            && self.oauth_pending.load(Ordering::Acquire) == 0
    }
    /// Asks the JWKS task for a fetch (a token named an unknown key).
    pub fn want_jwks(&self) {
        if self.config.jwks_url.is_some() {
            self.jwks_wanted.store(true, Ordering::Release);
        }
    }
    /// Installs a JWKS fetched from `auth.jwt.jwks_url` and publishes it;
    /// returns whether it differed from the previous one. A JWKS that does
    /// not parse is refused and the previous keys stay.
    pub fn set_jwks(&self, text: String) -> Result<bool, String> {
        let rules = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file.jwt.as_ref().map(|v| v.rules().clone())
        };
        let Some(rules) = rules else {
            return Err("`[auth.jwt]` is no longer configured".into());
        };
        toolgate_core::jwt::Verifier::from_jwks(&text, rules).map_err(|e| e.to_string())?;
        {
            let mut cur = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
            if cur.as_deref() == Some(text.as_str()) {
                return Ok(false);
            }
            *cur = Some(text);
        }
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        self.publish(&mut cats);
        Ok(true)
    }
    /// Stores the `tools/list` pages fetched from upstream `name` at `url`
    /// (or, with `None`, that the fetch failed: a catalog fetched before
    /// stays) and publishes a new snapshot. A fetch from a URL the upstream
    /// no longer has is ignored. Returns the catalog built, or why the
    /// pages do not make one.
    pub fn set_catalog(
        &self,
        name: &str,
        url: &UpstreamUrl,
        pages: Option<Vec<Vec<u8>>>,
    ) -> Result<Option<Arc<Catalog>>, CatalogError> {
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        let first = cats.attempted.insert(name.to_owned());
        let Some(pages) = pages else {
            if first {
                self.publish(&mut cats);
            }
            return Ok(None);
        };
        let eff = self.sources().effective();
        let Some(i) = eff
            .upstreams
            .iter()
            .position(|u| u.name() == name && u.url == *url)
        else {
            return Ok(None);
        };
        let built = Catalog::from_pages(i, &eff.namer, &pages);
        let catalog = match built {
            Ok(c) => Arc::new(c),
            Err(e) => {
                if first {
                    self.publish(&mut cats);
                }
                return Err(e);
            }
        };
        self.check_pins(&catalog);
        cats.fetched.insert(
            name.to_owned(),
            Fetched {
                url: url.clone(),
                pages: Arc::new(pages),
                built: Some((i, prefixes(&eff), Arc::clone(&catalog))),
            },
        );
        self.publish(&mut cats);
        Ok(Some(catalog))
    }
    /// The fetched catalogs index-aligned with the upstreams of `cfg` (an
    /// effective configuration, the running one or a candidate).
    pub fn catalogs_for(&self, cfg: &ValidConfig) -> Vec<Option<Arc<Catalog>>> {
        self.catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .aligned(cfg)
    }
    /// What shard clients of upstream `name` are built from: its
    /// credential and TLS, and, for one written through the admin API, its
    /// parts (a client built from other parts is out of date).
    pub fn upstream_parts(&self, name: &str) -> ClientParts {
        let stored = self
            .stored_upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        if let Some(p) = stored {
            return ClientParts {
                credential: p.credential.clone(),
                tls: p.tls.clone(),
                stored: Some(p),
            };
        }
        let credential = self.credentials.get(name).cloned();
        let tls = self.upstream_tls.get(name).cloned();
        ClientParts {
            credential,
            tls,
            stored: None,
        }
    }
    /// Compares a fetched catalog with the pins: pins tools seen for the
    /// first time (with `pin_new`), and reports changed definitions.
    fn check_pins(&self, cat: &Catalog) {
        let pin_new = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file.config.tool_pins.as_ref().map(|t| t.pin_new)
        };
        let Some(pin_new) = pin_new else { return };
        let path = self.config.pins_file.clone();
        let mut guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pins) = guard.as_mut() else { return };
        let mut added = 0;
        for t in &cat.tools {
            let Some(name) = t.exposed.as_deref() else {
                continue;
            };
            match pins.status(name, &t.sha256) {
                PinStatus::Pinned => {}
                PinStatus::New if pin_new => {
                    pins.pin(name, &t.sha256);
                    added += 1;
                }
                PinStatus::New => {
                    tracing::warn!(tool = name, sha256 = %t.sha256, "new tool held back until approved (`toolgate tools approve`)");
                }
                PinStatus::Changed => {
                    tracing::error!(tool = name, pinned = pins.get(name).unwrap_or(""), now = %t.sha256, "tool definition changed since it was approved; review it and run `toolgate tools approve`");
                }
            }
        }
        if added > 0 {
            if let Some(path) = path {
                match pins.save(&path) {
                    Ok(()) => {
                        tracing::info!(tools = added, file = %path.display(), "pinned tools seen for the first time")
                    }
                    Err(e) => tracing::error!(error = %e, "cannot save tool pins"),
                }
            }
        }
    }
    /// The catalogs as the snapshot sees them: with `[tool_pins]`, changed
    /// (and, without `pin_new`, new) definitions quarantined.
    fn pinned(
        &self,
        cfg: &ValidConfig,
        catalogs: &[Option<Arc<Catalog>>],
    ) -> Vec<Option<Arc<Catalog>>> {
        let guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(pins), Some(t)) = (guard.as_ref(), cfg.config.tool_pins.as_ref()) else {
            return catalogs.to_vec();
        };
        let (pin_new, quarantine) = (t.pin_new, t.on_change == PinAction::Quarantine);
        catalogs
            .iter()
            .map(|c| {
                c.as_ref().map(|c| {
                    Arc::new(
                        c.with_quarantine(|name, digest| match pins.status(name, digest) {
                            PinStatus::Pinned => false,
                            PinStatus::Changed => quarantine,
                            PinStatus::New => !pin_new,
                        }),
                    )
                })
            })
            .collect()
    }
    /// Builds and publishes a snapshot from the current sources and
    /// `catalogs` (callers hold the catalogs lock, which orders every
    /// publication): tool pins decide quarantines, the sub-token verifier
    /// and keys fetched from `jwks_url` are added, rate limits follow the
    /// effective agents; logs policies that fail schema validation. Returns
    /// the new generation, or `None` when the sources do not compile (the
    /// running snapshot stays).
    fn publish(&self, cats: &mut CatalogSet) -> Option<u64> {
        let sources = self.sources();
        let (eff, skipped) = sources.control.overlay(&sources.file);
        for why in skipped {
            tracing::warn!("control state: {why}; left out");
        }
        // Clients are built from these parts: they are in place before a
        // shard can see the snapshot naming the upstream.
        sync_stored(
            &mut self
                .stored_upstreams
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            &sources.control,
            &eff,
        );
        cats.prune(&eff);
        let catalogs = &self.pinned(&eff, &cats.aligned(&eff));
        let snap = match sources.compile(&eff, catalogs) {
            Ok(s) => s,
            Err(errs) => {
                tracing::error!(
                    "policies do not compile, the running snapshot stays:\n{}",
                    errs.join("\n")
                );
                return None;
            }
        };
        let subtokens = self
            .subtokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut snap = snap.with_subtokens(with_control_revocations(subtokens, &sources.control));
        // Keys fetched from `jwks_url` replace the empty key set the
        // configuration starts with, under the configuration's current rules.
        if sources.file.jwks_url.is_some() {
            let fetched = self.jwks.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let (Some(text), Some(v)) = (fetched, &sources.file.jwt) {
                match toolgate_core::jwt::Verifier::from_jwks(&text, v.rules().clone()) {
                    Ok(v) => snap.jwt = Some(Arc::new(v)),
                    Err(e) => tracing::warn!(error = %e, "fetched JWKS no longer parses"),
                }
            }
        }
        if let Some(engine) = snap.engine.as_ref() {
            if catalogs.iter().all(Option::is_some) {
                for e in engine.bundle().validate(snap.cedar_schema()) {
                    tracing::warn!(error = %e, "policy does not validate against the tools' schema");
                }
            }
        }
        self.rate_limits
            .update(|previous| crate::ratelimit::build(&eff, previous));
        let generation = self.snapshot.publish(snap);
        tracing::debug!(generation, "snapshot published");
        Some(generation)
    }

    /// The sub-token verifier of `[auth.subtokens]` (its key and the
    /// revocation file's ids), for the admin API to mint with.
    pub fn subtoken_verifier(&self) -> Option<Arc<Verifier>> {
        self.subtokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    /// Re-reads the configuration file and policy files (and the TLS
    /// files, the sub-token key and revocations, the tool pins) and
    /// publishes a new snapshot. On any error the running snapshot stays and
    /// the errors are returned. Listener, shard and upstream settings need a
    /// restart.
    pub fn reload(&self) -> Result<u64, String> {
        let path = self
            .config
            .path
            .clone()
            .ok_or("no configuration file to reload")?;
        let cfg = toolgate_core::config::load(&path).map_err(|e| e.to_string())?;
        let same_upstreams = cfg.upstreams.iter().map(|u| (u.name(), &u.url)).eq(self
            .config
            .upstreams
            .iter()
            .map(|u| (u.name(), &u.url)));
        if !same_upstreams {
            return Err("upstreams changed: restart toolgate to apply upstream changes".into());
        }
        let (policies, errs) = toolgate_decision::policy::read_sources(&cfg.policy_files);
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        if !errs.is_empty() {
            return Err(errs.join("\n"));
        }
        let tls = match (&self.tls, &cfg.tls) {
            (Some(_), Some(files)) => Some(
                crate::tls::load_server_config(files).map_err(|e| format!("[server.tls]: {e}"))?,
            ),
            (None, None) => None,
            _ => return Err("`[server.tls]` added or removed: restart toolgate to apply".into()),
        };
        let admin_tls = match (&self.admin_tls, &cfg.admin_tls) {
            (Some(_), Some(files)) => Some(
                crate::tls::load_server_config(files).map_err(|e| format!("[admin.tls]: {e}"))?,
            ),
            (None, None) => None,
            _ => return Err("`[admin.tls]` added or removed: restart toolgate to apply".into()),
        };
        let subtokens = cfg
            .subtoken_dir
            .as_deref()
            .map(crate::subtokens::verifier)
            .transpose()
            .map_err(|e| format!("[auth.subtokens]: {e}"))?;
        let pins = self
            .config
            .pins_file
            .as_deref()
            .map(Pins::load)
            .transpose()
            .map_err(|e| e.to_string())?;
        let candidate = Sources {
            file: cfg,
            policies,
            control: self.sources().control,
        };
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        let eff = candidate.effective();
        candidate
            .compile(&eff, &cats.aligned(&eff))
            .map_err(|e| e.join("\n"))?;
        if let (Some(published), Some(tls)) = (&self.tls, tls) {
            published.publish(TlsAcceptor::from(tls));
        }
        if let (Some(published), Some(tls)) = (&self.admin_tls, admin_tls) {
            published.publish(TlsAcceptor::from(tls));
        }
        *self.subtokens.lock().unwrap_or_else(|p| p.into_inner()) = subtokens;
        if let Some(p) = pins {
            *self.pins.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
        }
        {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file = candidate.file;
            cur.policies = candidate.policies;
        }
        self.publish(&mut cats)
            .ok_or_else(|| "the configuration does not compile with the control state".to_owned())
    }

    /// Re-reads the sub-token revocation list alone and publishes it: a
    /// revocation must not wait on (or be blocked by) a configuration edit.
    /// Returns the new generation, or why the list could not be read (the
    /// previous list stays in force).
    pub fn reload_revocations(&self) -> Result<u64, String> {
        let dir = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file.subtoken_dir.clone()
        };
        let Some(dir) = dir else {
            return Ok(self.snapshot.generation());
        };
        let verifier = crate::subtokens::verifier(&dir).map_err(|e| e.to_string())?;
        *self.subtokens.lock().unwrap_or_else(|p| p.into_inner()) = Some(verifier);
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        self.publish(&mut cats);
        Ok(self.snapshot.generation())
    }
    /// Re-reads the tool pins file alone and publishes the snapshot with
    /// quarantines decided again (an approval takes effect at once).
    pub fn reload_pins(&self) -> Result<u64, String> {
        let Some(path) = self.config.pins_file.as_deref() else {
            return Ok(self.snapshot.generation());
        };
        let pins = Pins::load(path).map_err(|e| e.to_string())?;
        *self.pins.lock().unwrap_or_else(|p| p.into_inner()) = Some(pins);
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        self.publish(&mut cats);
        Ok(self.snapshot.generation())
    }
    /// The pinned digest of tool `exposed` and how `digest` compares with
    /// it; `None` when `[tool_pins]` is off.
    pub fn pin_status(&self, exposed: &str, digest: &str) -> Option<(Option<String>, PinStatus)> {
        let guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let pins = guard.as_ref()?;
        Some((
            pins.get(exposed).map(str::to_owned),
            pins.status(exposed, digest),
        ))
    }
    /// Approves tool `exposed`'s definition `digest`, as `toolgate tools
    /// approve` does: pins it, writes the pins file, and publishes the
    /// snapshot with quarantines decided again. Returns the digest pinned
    /// before and the new generation. Errors: pinning is off, or the file
    /// cannot be written (the pins stay as they were).
    pub fn approve_tool(
        &self,
        exposed: &str,
        digest: &str,
    ) -> Result<(Option<String>, u64), String> {
        let path = self
            .config
            .pins_file
            .clone()
            .ok_or("`[tool_pins]` is not configured")?;
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        let previous = {
            let mut guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
            let pins = guard.as_mut().ok_or("`[tool_pins]` is not configured")?;
            let previous = pins.get(exposed).map(str::to_owned);
            let mut next = pins.clone();
            next.pin(exposed, digest);
            next.save(&path).map_err(|e| e.to_string())?;
            *pins = next;
            previous
        };
        let generation = self
            .publish(&mut cats)
            .unwrap_or_else(|| self.snapshot.generation());
        Ok((previous, generation))
    }
    /// The sub-token revocation list, when sub-tokens are configured.
    pub fn revocation_file(&self) -> Option<std::path::PathBuf> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.file
            .subtoken_dir
            .as_deref()
            .map(crate::subtokens::revoked_path)
    }
    /// Files whose change triggers a reload: the configuration, its
    /// policies, the JWKS (so rotated IdP keys take effect) and the
    /// listeners' TLS files (so renewed certificates do).
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.file
            .path
            .iter()
            .cloned()
            .chain(cur.file.policy_files.iter().cloned())
            .chain(cur.file.jwks_file.iter().cloned())
            .chain(
                cur.file
                    .tls
                    .iter()
                    .chain(&cur.file.admin_tls)
                    .flat_map(|t| {
                        [
                            Some(t.cert.clone()),
                            Some(t.key.clone()),
                            t.client_ca.clone(),
                        ]
                        .into_iter()
                        .flatten()
                    }),
            )
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
