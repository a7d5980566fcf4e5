//! Publication: the one place a snapshot is built from the current
//! sources and handed to the shards.

use std::sync::Arc;

use super::catalogs::CatalogSet;
use super::identity::with_control_revocations;
use super::upstreams::sync_stored;
use super::Shared;

impl Shared {
    /// Resolves once the published generation differs from `seen`; woken
    /// by [`Shared::publish`] through `waker` (one of [`Shared::published`]),
    /// so no timer is needed to notice.
    pub fn published_since<'a>(
        &'a self,
        waker: &'a futures_util::task::AtomicWaker,
        seen: u64,
    ) -> impl std::future::Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            waker.register(cx.waker());
            if self.snapshot.generation() == seen {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
    }

    /// Builds and publishes a snapshot from the current sources and
    /// `catalogs` (callers hold the catalogs lock, which orders every
    /// publication): tool pins decide quarantines, the sub-token verifier
    /// and keys fetched from `jwks_url` are added, rate limits follow the
    /// effective agents; logs policies that fail schema validation. Returns
    /// the new generation, or `None` when the sources do not compile (the
    /// running snapshot stays).
    pub(super) fn publish(&self, cats: &mut CatalogSet) -> Option<u64> {
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
                let schema = snap.cedar_schema(&eff);
                let shadow = snap
                    .shadow
                    .as_ref()
                    .map(|s| s.bundle().validate(schema.clone()));
                for e in engine
                    .bundle()
                    .validate(schema)
                    .into_iter()
                    .chain(shadow.into_iter().flatten())
                {
                    tracing::warn!(error = %e, "policy does not validate against the tools' schema");
                }
            }
        }
        self.rate_limits
            .update(|previous| crate::ratelimit::build(&eff, previous));
        self.limits.publish(toolgate_limits::Limits::new(
            &eff.config.limits,
            Arc::clone(&self.limit_counters.0),
            self.limit_counters.1.clone(),
            self.limit_counters.2.clone(),
        ));
        if snap.sessions_used {
            self.make_sessions();
        }
        let generation = self.snapshot.publish(snap);
        for w in self.published.iter() {
            w.wake();
        }
        tracing::debug!(generation, "snapshot published");
        Some(generation)
    }
}
