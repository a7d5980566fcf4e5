//! Keeps `openapi` upstreams' tool surfaces current, off the request path.
//!
//! One thread re-reads each document: a file as soon as its modification
//! time changes (checked every second), a URL every `catalog_refresh_s`.
//! A document that changed and still makes a surface replaces the old one:
//! the catalog is stored first (so `[tool_pins]` quarantines changed
//! operations before any call can use them), then the surface every shard
//! calls through. A document that stops loading keeps the last good
//! surface, and the error is logged once until it changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use toolgate_core::config::{ResolvedUpstream, SpecSource};
use toolgate_upstream::openapi::{self, LiveSurface};

use crate::shared::Shared;

/// How often the upstreams and file modification times are looked at.
const TICK: Duration = Duration::from_secs(1);

/// What the refresher knows of one upstream's document.
struct Watched {
    /// The surface it publishes into (a new one when the upstream is
    /// written again through the admin API).
    surface: LiveSurface,
    /// When the document was last read.
    read_at: Instant,
    /// The file's modification time when last read.
    mtime: Option<SystemTime>,
    /// The last error logged, so it is logged once.
    failing: Option<String>,
}

/// Starts the refresher thread.
pub fn start(shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("openapi-refresh".into())
        .spawn(move || {
            let mut watched = HashMap::new();
            loop {
                std::thread::sleep(TICK);
                tick(&shared, &mut watched);
            }
        })
        .map(drop)
}

fn tick(shared: &Shared, watched: &mut HashMap<String, Watched>) {
    let eff = shared.sources().effective();
    watched.retain(|name, _| eff.upstream(name).is_some_and(|(_, u)| u.spec.is_some()));
    for upstream in eff.upstreams.iter().filter(|u| u.spec.is_some()) {
        let Some(surface) = shared.upstream_parts(upstream.name()).openapi else {
            continue;
        };
        let w = match watched.get_mut(upstream.name()) {
            Some(w) if Arc::ptr_eq(&w.surface, &surface) => w,
            _ => {
                // Just loaded (at start, or written through the admin API):
                // a URL is due again after a full period; a file is read
                // now, as it may have changed since it was loaded.
                watched.insert(
                    upstream.name().to_owned(),
                    Watched {
                        surface,
                        read_at: Instant::now(),
                        mtime: None,
                        failing: None,
                    },
                );
                let Some(w) = watched.get_mut(upstream.name()) else {
                    continue;
                };
                w
            }
        };
        let due = match upstream.spec {
            Some(SpecSource::File(_)) => mtime(upstream) != w.mtime,
            _ => w.read_at.elapsed() >= Duration::from_secs(upstream.entry.catalog_refresh_s),
        };
        if due {
            refresh(shared, upstream, w);
        }
    }
}

fn mtime(upstream: &ResolvedUpstream) -> Option<SystemTime> {
    match &upstream.spec {
        Some(SpecSource::File(p)) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
        _ => None,
    }
}

fn refresh(shared: &Shared, upstream: &ResolvedUpstream, w: &mut Watched) {
    w.read_at = Instant::now();
    w.mtime = mtime(upstream);
    let name = upstream.name();
    let fresh = match openapi::load(upstream) {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            let why = e.to_string();
            if w.failing.as_deref() != Some(why.as_str()) {
                tracing::error!(upstream = name, error = %why, "OpenAPI document does not load; keeping the last good tool surface");
                w.failing = Some(why);
            }
            return;
        }
    };
    if w.failing.take().is_some() {
        tracing::info!(upstream = name, "OpenAPI document loads again");
    }
    if *w.surface.load() == fresh {
        return;
    }
    let page = fresh.tools_page().to_string().into_bytes();
    if let Err(e) = shared.set_catalog(
        name,
        &upstream.url,
        Some(toolgate_decision::Listing::of_tools(vec![page])),
    ) {
        tracing::error!(upstream = name, error = %e, "changed OpenAPI document makes no catalog; keeping the last good tool surface");
        return;
    }
    tracing::info!(
        upstream = name,
        operations = fresh.operations.len(),
        "OpenAPI document changed; tool surface replaced"
    );
    w.surface.publish(fresh);
}
