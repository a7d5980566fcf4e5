//! One shard's request handler and what it owns: the snapshot reader, the
//! audit ring producer, parsers, the decision and token caches, and its
//! clients of the upstreams of the running snapshot.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use toolgate_core::jsonrpc::JsonParser;
use toolgate_decision::policy::DecisionCache;
use toolgate_decision::{Reader, Snapshot, UpstreamInfo};
use toolgate_sinks::AuditProducer;

use super::{ack, args, judge, tokens};
use crate::shared::{Shared, StoredParts, Terminated};
use toolgate_upstream::Upstream;

/// Per-shard decision cache size.
const DECISION_CACHE_ENTRIES: usize = 16 * 1024;

/// One shard's request handler.
pub struct Gateway {
    pub(super) shard: u16,
    pub(super) shared: Arc<Shared>,
    pub(super) snapshot: RefCell<Reader<Snapshot>>,
    pub(super) terminated: RefCell<Reader<Terminated>>,
    pub(super) audit: RefCell<AuditProducer>,
    pub(super) acks: Rc<ack::Acks>,
    /// Writes this shard's records itself (`[audit] writer = "shards"`).
    pub(super) inline: Option<toolgate_sinks::InlineWriter>,
    pub(super) parser: RefCell<JsonParser>,
    /// Parses text content holding JSON while `parser` holds the result.
    pub(super) inner_parser: RefCell<JsonParser>,
    /// This shard's upstream clients, for the snapshot generation they
    /// were last checked against.
    upstreams: RefCell<Clients>,
    pub(super) nonce_counter: Cell<u64>,
    /// Requests relayed to agents' clients by this shard's calls so far
    /// (the last one's number in its id).
    pub(super) asked: Cell<u64>,
    pub(super) judge: Option<judge::Judge>,
    pub(super) decisions: RefCell<DecisionCache>,
    /// Verified bearer JWTs, so a token's signature is checked once.
    pub(super) tokens: tokens::TokenCache,
    /// Per-agent rate limits.
    pub(super) rate_limits: RefCell<Reader<crate::ratelimit::Limits>>,
    /// `[limits]` rules and counters.
    pub(super) limits: RefCell<Reader<toolgate_limits::Limits>>,
    /// Users' connected accounts as this shard reads them.
    pub(super) accounts: Option<RefCell<Reader<crate::accounts::Live>>>,
    /// The end-user assertion signer, with `[identity_assertions]`.
    pub(super) assertions: Option<RefCell<Reader<toolgate_upstream::assertion::Signer>>>,
    /// What records keep of call arguments (`[audit] arguments`).
    pub(super) args_audit: args::ArgsAudit,
    /// Output filters compiled for prompts and resources.
    pub(super) target_filters: RefCell<super::target::TargetFilters>,
    /// This shard's calls at their upstreams, for cancellations.
    pub(super) in_flight: crate::inflight::InFlight,
    /// Snapshot changes, for the agents listening for list changes.
    pub(super) changes: super::listen::Changes,
    /// Connections to connected-account providers' token endpoints, by
    /// upstream (made at a callback's first need, kept for the next).
    pub(super) connect_pools:
        RefCell<std::collections::HashMap<String, Rc<toolgate_net::client::Pool>>>,
}

/// A shard's clients of the upstreams of one snapshot, in the order of
/// its `upstreams`. A call takes the list it started with, so a change of
/// the upstreams (through the admin API) never moves a call in flight to
/// another client; the old clients go when their last call ends.
struct Clients {
    /// The snapshot generation the list was checked against.
    generation: u64,
    /// The clients.
    list: Rc<[Rc<Upstream>]>,
    /// Per client, the admin API parts it was built from (`None`: from the file).
    stored: Vec<Option<Arc<StoredParts>>>,
}

impl Clients {
    /// Clients for `snap`'s upstreams: one whose settings and parts are
    /// unchanged is kept, the others are built anew.
    fn build(shared: &Shared, snap: &Snapshot, generation: u64, old: Option<&Clients>) -> Clients {
        let mut list = Vec::with_capacity(snap.upstreams.len());
        let mut stored = Vec::with_capacity(snap.upstreams.len());
        for info in &snap.upstreams {
            let crate::shared::ClientParts {
                credential,
                tls,
                openapi,
                stdio,
                exchange,
                stored: parts,
            } = shared.upstream_parts(&info.name);
            let kept = old.and_then(|o| {
                o.list
                    .iter()
                    .zip(&o.stored)
                    .find(|(c, p)| c.info() == info && same_parts(p.as_ref(), parts.as_ref()))
            });
            let client = match kept {
                Some((c, _)) => Rc::clone(c),
                None => Rc::new(
                    Upstream::new(
                        info.clone(),
                        credential.map(|c| c.reader()),
                        toolgate_upstream::Backend::of(tls, openapi.as_ref(), stdio),
                    )
                    .with_exchange(exchange),
                ),
            };
            list.push(client);
            stored.push(parts);
        }
        Clients {
            generation,
            list: list.into(),
            stored,
        }
    }

    /// Whether these clients serve `snap`'s upstreams as they are now.
    fn serve(&self, shared: &Shared, snap: &Snapshot) -> bool {
        self.list.len() == snap.upstreams.len()
            && self
                .list
                .iter()
                .zip(&self.stored)
                .zip(&snap.upstreams)
                .all(|((c, p), info)| {
                    c.info() == info
                        && same_parts(
                            p.as_ref(),
                            shared.upstream_parts(&info.name).stored.as_ref(),
                        )
                })
    }
}

fn same_parts(a: Option<&Arc<StoredParts>>, b: Option<&Arc<StoredParts>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl Gateway {
    /// Lets this shard write its calls' audit records itself instead of
    /// waking the audit thread for them (`[audit] writer = "shards"`).
    pub fn with_inline_writer(mut self, writer: toolgate_sinks::InlineWriter) -> Self {
        self.audit.get_mut().set_wake_on_commit(false);
        self.inline = Some(writer);
        self
    }

    /// The handler of shard `shard`.
    pub fn new(shard: u16, shared: Arc<Shared>, audit: AuditProducer) -> Self {
        let mut snapshot = shared.snapshot.reader();
        let upstreams = Clients::build(&shared, &snapshot.current(), snapshot.generation(), None);
        let terminated = shared.terminated.reader();
        let judge = shared.config.judge_url.clone().map(|url| {
            let ms = shared
                .config
                .config
                .policies
                .judge
                .as_ref()
                .map(|j| j.timeout_ms)
                .unwrap_or(2000);
            judge::Judge::new(
                url,
                std::time::Duration::from_millis(ms),
                shared.judge_tls.clone(),
            )
        });
        Self {
            judge,
            args_audit: args::ArgsAudit::new(shared.config.config.audit.arguments),
            decisions: RefCell::new(DecisionCache::new(DECISION_CACHE_ENTRIES)),
            tokens: tokens::TokenCache::default(),
            rate_limits: RefCell::new(shared.rate_limits.reader()),
            limits: RefCell::new(shared.limits.reader()),
            assertions: shared.assertions.as_ref().map(|a| RefCell::new(a.reader())),
            accounts: shared
                .accounts
                .as_ref()
                .map(|a| RefCell::new(a.live().reader())),
            acks: Rc::new(ack::Acks::new(shard, audit.health())),
            inline: None,
            shard,
            snapshot: RefCell::new(snapshot),
            terminated: RefCell::new(terminated),
            audit: RefCell::new(audit),
            parser: RefCell::new(JsonParser::new()),
            inner_parser: RefCell::new(JsonParser::new()),
            upstreams: RefCell::new(upstreams),
            nonce_counter: Cell::new(0),
            asked: Cell::new(0),
            target_filters: RefCell::default(),
            in_flight: crate::inflight::InFlight::default(),
            changes: super::listen::Changes::default(),
            connect_pools: RefCell::default(),
            shared,
        }
    }

    /// Picks up the newest snapshot if one was published, and acknowledges
    /// the generation this shard now runs (read by the admin API, which
    /// answers a change once every shard runs it), with the upstream
    /// clients it needs built. Called between requests.
    pub fn refresh_snapshot(&self) {
        drop(self.current());
        let generation = self.upstreams.borrow().generation;
        if let Some(seen) = self.shared.seen.get(usize::from(self.shard)) {
            if seen.load(Ordering::Relaxed) != generation {
                seen.store(generation, Ordering::Release);
            }
        }
    }

    /// Cancels the calls under the keys other shards posted (the shard
    /// that received their cancellations), and hands on the answers they
    /// posted to this shard's requests toward agents' clients.
    pub fn take_posted(&self, posted: crate::inflight::Posted) {
        for k in posted.cancels {
            self.in_flight.cancel(k);
        }
        for (k, answer) in posted.answers {
            self.in_flight.answer(k, answer);
        }
    }

    /// This shard's metrics counters.
    pub(super) fn counters(&self) -> Option<&crate::metrics::ShardCounters> {
        self.shared.metrics.shards.get(usize::from(self.shard))
    }

    /// The newest snapshot and this shard's upstream clients for it
    /// (checked again, and rebuilt where changed, only when the generation
    /// moved).
    #[expect(
        clippy::redundant_allocation,
        reason = "the shard-local handle `Reader` gives out"
    )]
    pub(super) fn current(&self) -> (Rc<Arc<Snapshot>>, Rc<[Rc<Upstream>]>) {
        let (snapshot, generation) = {
            let mut reader = self.snapshot.borrow_mut();
            let s = reader.current();
            (s, reader.generation())
        };
        let mut clients = self.upstreams.borrow_mut();
        if clients.generation != generation {
            if clients.serve(&self.shared, &snapshot) {
                clients.generation = generation;
            } else {
                let next = Clients::build(&self.shared, &snapshot, generation, Some(&*clients));
                *clients = next;
            }
            self.changes.changed();
        }
        let list = Rc::clone(&clients.list);
        (snapshot, list)
    }

    /// This shard's client of the upstream `info` describes, when the
    /// running snapshot has that upstream so.
    pub fn upstream(&self, info: &UpstreamInfo) -> Option<Rc<Upstream>> {
        let (_, clients) = self.current();
        clients.iter().find(|c| c.info() == info).cloned()
    }
}
