//! What shard clients of each upstream are built from: its credential and
//! TLS — the configuration file's, or, for an upstream written through the
//! admin API, read when it was written.

use std::collections::HashMap;
use std::sync::Arc;

use toolgate_control::{Kind, Spec, State, UpstreamCredentialSpec, UpstreamSpec};
use toolgate_core::config::{ResolvedUpstream, ValidConfig};
use toolgate_core::secret::Secret;
use toolgate_decision::Published;

use super::Shared;

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
    pub tls: Option<toolgate_net::tls::ClientTls>,
    /// The tool surface, for an `openapi` upstream.
    pub openapi: Option<toolgate_upstream::openapi::LiveSurface>,
    /// The token endpoint, for a `token_exchange` upstream.
    pub exchange: Option<Arc<toolgate_upstream::exchange::Endpoint>>,
}

/// What a shard builds its client of an upstream from.
pub struct ClientParts {
    /// The credential header line, when it has a credential.
    pub credential: Option<Arc<Published<Secret>>>,
    /// TLS toward an `https://` URL.
    pub tls: Option<toolgate_net::tls::ClientTls>,
    /// The tool surface, for an `openapi` upstream.
    pub openapi: Option<toolgate_upstream::openapi::LiveSurface>,
    /// The process, for a `stdio` upstream.
    pub stdio: Option<Arc<toolgate_upstream::stdio::Pool>>,
    /// The token endpoint, for a `token_exchange` upstream.
    pub exchange: Option<Arc<toolgate_upstream::exchange::Endpoint>>,
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
            let secret =
                toolgate_upstream::credential::read(name, c, file).map_err(|e| e.to_string())?;
            Some(Published::new(secret))
        }
        None => None,
    };
    let tls = toolgate_net::tls::client_tls(&upstream.url, upstream.ca_file.as_deref())
        .map_err(|e| format!("upstream `{name}`: {e}"))?;
    let openapi = toolgate_upstream::openapi::load(upstream)
        .map_err(|e| e.to_string())?
        .map(Published::new);
    let exchange =
        toolgate_upstream::exchange::Endpoint::load(upstream).map_err(|e| e.to_string())?;
    Ok(StoredParts {
        spec: spec.clone(),
        source,
        written: (0, 0),
        credential,
        tls,
        openapi,
        exchange,
    })
}

/// Builds the parts of stored upstreams that are new or changed in
/// `control` (laid over the file as `eff`) and drops those deleted. One
/// that cannot be read is logged and given parts that refuse its calls.
pub(super) fn sync_stored(
    map: &mut HashMap<String, Arc<StoredParts>>,
    control: &State,
    eff: &ValidConfig,
) {
    map.retain(|name, _| control.get(Kind::Upstreams, name).is_some());
    for (id, e) in control.list(Kind::Upstreams) {
        let Spec::Upstream(spec) = &e.spec else {
            continue;
        };
        let source = control.credential_of(spec);
        let written = (e.version, control.credential_version(spec));
        if map
            .get(id)
            .is_some_and(|p| p.spec == **spec && p.source == source && p.written == written)
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
                        spec: (**spec).clone(),
                        source,
                        written,
                        credential: Some(Published::new(Secret::new(Vec::new()))),
                        tls: None,
                        openapi: None,
                        exchange: None,
                    }),
                );
            }
        }
    }
}

impl Shared {
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
                openapi: p.openapi.clone(),
                stdio: None,
                exchange: p.exchange.clone(),
                stored: Some(p),
            };
        }
        ClientParts {
            credential: self.credentials.get(name).cloned(),
            tls: self.upstream_tls.get(name).cloned(),
            openapi: self.openapi.get(name).cloned(),
            stdio: self.stdio.get(name).cloned(),
            exchange: self.exchanges.get(name).cloned(),
            stored: None,
        }
    }
}
