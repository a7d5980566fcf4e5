//! The upstreams' fetched tool catalogs, kept by upstream name and
//! rendered into the snapshot's order and names when it is built.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use toolgate_core::config::ValidConfig;
use toolgate_core::upstream_url::UpstreamUrl;
use toolgate_decision::catalog::CatalogError;
use toolgate_decision::{Catalog, Listing};

use super::Shared;

/// One upstream's fetched catalog.
struct Fetched {
    /// The endpoint it was fetched from: a catalog of another URL is not
    /// this upstream's any more.
    url: UpstreamUrl,
    /// The list results, kept so the catalog can be rendered again when
    /// the upstreams' names change.
    listing: Arc<Listing>,
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
pub(super) fn prefixes(cfg: &ValidConfig) -> Vec<String> {
    cfg.upstreams
        .iter()
        .map(|u| toolgate_control::state::prefix_of(&u.entry).to_owned())
        .collect()
}

impl CatalogSet {
    /// The catalogs index-aligned with `cfg`'s upstreams: each upstream's,
    /// when fetched from its current URL, rendered with `cfg`'s names
    /// (again only when its index or the prefixes changed).
    pub(super) fn aligned(&mut self, cfg: &ValidConfig) -> Vec<Option<Arc<Catalog>>> {
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
                let c = Arc::new(Catalog::from_listing(i, u.name(), &cfg.namer, &f.listing).ok()?);
                f.built = Some((i, names.clone(), Arc::clone(&c)));
                Some(c)
            })
            .collect()
    }

    /// Whether a fetch of upstream `name`'s catalog has completed (either way).
    pub(super) fn attempted(&self, name: &str) -> bool {
        self.attempted.contains(name)
    }

    /// Whether upstream `name`'s catalog has been fetched.
    pub(super) fn fetched(&self, name: &str) -> bool {
        self.fetched.contains_key(name)
    }

    /// Forgets the catalogs of upstreams `cfg` no longer has.
    pub(super) fn prune(&mut self, cfg: &ValidConfig) {
        let has = |n: &str| cfg.upstream(n).is_some();
        self.fetched.retain(|n, _| has(n));
    }
}

impl Shared {
    /// Stores the lists fetched from upstream `name` at `url` (or, with
    /// `None`, that the fetch failed: a catalog fetched before
    /// stays) and publishes a new snapshot. A fetch from a URL the upstream
    /// no longer has is ignored. Returns the catalog built, or why the
    /// pages do not make one.
    pub fn set_catalog(
        &self,
        name: &str,
        url: &UpstreamUrl,
        listing: Option<Listing>,
    ) -> Result<Option<Arc<Catalog>>, CatalogError> {
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        let first = cats.attempted.insert(name.to_owned());
        let Some(listing) = listing else {
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
        let built = Catalog::from_listing(i, name, &eff.namer, &listing);
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
                listing: Arc::new(listing),
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
}
