//! Keeps upstream tool catalogs current, off the request path.
//!
//! Runs on shard 0 with that shard's upstream clients. Each upstream's
//! `tools/list` (with its prompts, resources and resource templates) is
//! fetched when it appears — at start-up, or when the admin
//! API adds it or changes it; a failed fetch is retried with backoff (the
//! upstream's tools stay absent from `tools/list` until then, while calls to
//! attached tools still route); a fetched catalog is refreshed every
//! `catalog_refresh_s`. Every fetch publishes a new snapshot, with changed
//! definitions quarantined when `[tool_pins]` is on. An upstream that goes
//! (or changes) has its fetcher stopped. A stdio server that announces a
//! list change (`notifications/*/list_changed`) has its lists fetched again
//! within [`LIST_CHANGE_POLL`], pins applying as at any fetch.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use toolgate_decision::UpstreamInfo;

use crate::call::Gateway;
use crate::shared::Shared;

/// Longest wait between retries of a failed fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the set of upstreams is compared with the running snapshot's.
const WATCH: Duration = Duration::from_millis(20);
/// How often a fetcher looks whether its upstream announced a list change.
const LIST_CHANGE_POLL: Duration = Duration::from_millis(100);

/// Runs one fetcher per upstream of the running snapshot, starting and
/// stopping them as the upstreams change; never returns.
pub async fn run(shared: Arc<Shared>, gateway: Rc<Gateway>) {
    // Dropping a task cancels it: a fetcher removed from here stops at its
    // next await, and its late result is never stored.
    let mut running: HashMap<Arc<str>, (UpstreamInfo, glommio::Task<()>)> = HashMap::new();
    let mut seen = 0;
    loop {
        let generation = shared.snapshot.generation();
        if generation != seen {
            seen = generation;
            let snap = shared.snapshot.load();
            running.retain(|_, (info, _)| snap.upstreams.contains(info));
            for info in &snap.upstreams {
                if running.contains_key(&info.name) {
                    continue;
                }
                let task = glommio::spawn_local(keep_fresh(
                    Arc::clone(&shared),
                    Rc::clone(&gateway),
                    info.clone(),
                ));
                running.insert(Arc::clone(&info.name), (info.clone(), task));
            }
        }
        glommio::timer::sleep(WATCH).await;
    }
}

async fn keep_fresh(shared: Arc<Shared>, gateway: Rc<Gateway>, info: UpstreamInfo) {
    let Some(upstream) = gateway.upstream(&info) else {
        return;
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        // Counted before the fetch: a change announced while it runs is
        // fetched again after it.
        let changes = upstream.list_changes();
        let fetched = upstream.list_all().await;
        let wait = match fetched {
            Ok(listing) => match shared.set_catalog(&info.name, &info.url, Some(listing)) {
                Ok(Some(cat)) => {
                    for d in &cat.duplicates {
                        tracing::warn!(upstream = upstream.name(), tool = %d, "upstream lists a tool twice; the first is kept");
                    }
                    for t in cat.tools.iter().filter(|t| t.exposed.is_none()) {
                        tracing::warn!(upstream = upstream.name(), tool = %t.name, "tool name is shadowed by another upstream's prefix; not exposed");
                    }
                    tracing::info!(
                        upstream = upstream.name(),
                        tools = cat.tools.len(),
                        prompts = cat.surface.prompts.len(),
                        resources = cat.surface.resources.len(),
                        templates = cat.surface.templates.len(),
                        "tool catalog loaded"
                    );
                    backoff = Duration::from_millis(500);
                    info.catalog_refresh
                }
                // The upstream changed meanwhile: this fetcher is replaced.
                Ok(None) => info.catalog_refresh,
                Err(e) => {
                    tracing::warn!(upstream = upstream.name(), error = %e, "unreadable tool catalog");
                    backoff
                }
            },
            Err(e) => {
                tracing::warn!(upstream = upstream.name(), error = %e, "cannot fetch tool catalog; retrying");
                let _ = shared.set_catalog(&info.name, &info.url, None);
                backoff
            }
        };
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // Until the timer, or until the upstream says its lists changed.
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until && upstream.list_changes() == changes {
            let left = until.saturating_duration_since(std::time::Instant::now());
            glommio::timer::sleep(left.min(LIST_CHANGE_POLL)).await;
        }
    }
}
