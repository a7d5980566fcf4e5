//! Keeps upstream tool catalogs current, off the request path.
//!
//! Runs on shard 0 with that shard's upstream clients. Each upstream's
//! `tools/list` is fetched at start-up; a failed fetch is retried with
//! backoff (the upstream's tools stay absent from `tools/list` until then,
//! while calls to attached tools still route); a fetched catalog is
//! refreshed every `catalog_refresh_s`. Every fetch publishes a new snapshot,
//! with changed definitions quarantined when `[tool_pins]` is on.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use toolgate_decision::Catalog;

use crate::call::Gateway;
use crate::shared::Shared;

/// How often a fetched catalog is refreshed, unless the upstream says.
const REFRESH: Duration = Duration::from_secs(300);
/// Longest wait between retries of a failed fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Fetches every upstream's catalog, then keeps them fresh; never returns.
pub async fn run(shared: Arc<Shared>, gateway: Rc<Gateway>) {
    let n = shared.config.config.upstreams.len();
    let tasks: Vec<_> = (0..n)
        .map(|idx| {
            let (shared, gateway) = (Arc::clone(&shared), Rc::clone(&gateway));
            glommio::spawn_local(async move { keep_fresh(shared, gateway, idx).await })
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

async fn keep_fresh(shared: Arc<Shared>, gateway: Rc<Gateway>, idx: usize) {
    let Some(upstream) = gateway.upstream(idx) else {
        return;
    };
    let mut backoff = Duration::from_millis(500);
    let refresh = shared
        .config
        .config
        .upstreams
        .get(idx)
        .map(|u| Duration::from_secs(u.catalog_refresh_s))
        .unwrap_or(REFRESH);
    loop {
        let fetched = upstream.list_tools().await;
        let wait = match fetched {
            Ok(pages) => match Catalog::from_pages(idx, &shared.config.namer, &pages) {
                Ok(cat) => {
                    for d in &cat.duplicates {
                        tracing::warn!(upstream = upstream.name(), tool = %d, "upstream lists a tool twice; the first is kept");
                    }
                    for t in cat.tools.iter().filter(|t| t.exposed.is_none()) {
                        tracing::warn!(upstream = upstream.name(), tool = %t.name, "tool name is shadowed by another upstream's prefix; not exposed");
                    }
                    tracing::info!(
                        upstream = upstream.name(),
                        tools = cat.tools.len(),
                        "tool catalog loaded"
                    );
                    shared.set_catalog(idx, Some(cat));
                    backoff = Duration::from_millis(500);
                    refresh
                }
                Err(e) => {
                    tracing::warn!(upstream = upstream.name(), error = %e, "unreadable tool catalog");
                    shared.set_catalog(idx, None);
                    backoff
                }
            },
            Err(e) => {
                tracing::warn!(upstream = upstream.name(), error = %e, "cannot fetch tool catalog; retrying");
                shared.set_catalog(idx, None);
                backoff
            }
        };
        backoff = (backoff * 2).min(MAX_BACKOFF);
        glommio::timer::sleep(wait).await;
    }
}
