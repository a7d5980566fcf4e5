//! Every upstream's tool catalog, fetched once for `toolgate tools` and
//! `toolgate policy validate`; an upstream that cannot be reached is a
//! warning on stderr, never an error.

use std::sync::Arc;

use toolgate_core::config::ValidConfig;
use toolgate_decision::{Catalog, Snapshot};

/// Fetches every upstream's catalog once (for validation), on a throwaway executor.
pub fn fetch_catalogs(cfg: &ValidConfig) -> Vec<Option<Arc<Catalog>>> {
    let infos = Snapshot::build(cfg, &[]).upstreams;
    // A credential that cannot be read leaves its upstream uncredentialed
    // here: `check` reports it, and `run` refuses to start.
    let creds: Vec<Option<toolgate_core::secret::Secret>> = cfg
        .upstreams
        .iter()
        .map(|u| {
            let c = u.entry.credential.as_ref()?;
            toolgate_upstream::credential::read(u.name(), c, u.credential_file.as_deref()).ok()
        })
        .collect();
    let surfaces = toolgate_ingress::process::openapi_surfaces(cfg).unwrap_or_else(|e| {
        eprintln!("warning: {e}");
        std::collections::HashMap::new()
    });
    // stdio servers run for the fetch only (stopped when dropped).
    let processes = toolgate_ingress::process::stdio_processes(cfg).unwrap_or_else(|e| {
        eprintln!("warning: {e}");
        std::collections::HashMap::new()
    });
    let namer = cfg.namer.clone();
    let tls = toolgate_net::tls::TlsSetup::load(cfg)
        .map(|t| t.upstreams)
        .unwrap_or_else(|e| {
            eprintln!("warning: {e}");
            std::collections::HashMap::new()
        });
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut out = Vec::new();
            for (idx, (info, cred)) in infos.into_iter().zip(creds).enumerate() {
                let name = info.name.clone();
                let cred = cred.map(|c| toolgate_decision::Published::new(c).reader());
                let tls = tls.get(&*name).cloned();
                let stdio = processes.get(&*name).cloned();
                if let Some(p) = &stdio {
                    // Its handshake first: a process just started.
                    for _ in 0..200 {
                        if p.health().up {
                            break;
                        }
                        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
                let backend = toolgate_upstream::Backend::of(tls, surfaces.get(&*name), stdio);
                let upstream = toolgate_upstream::Upstream::new(info, cred, backend);
                let cat = match upstream.list_all().await {
                    Ok(listing) => Catalog::from_listing(idx, &name, &namer, &listing)
                        .ok()
                        .map(Arc::new),
                    Err(e) => {
                        eprintln!(
                            "warning: upstream `{name}`: {e}; its tools' arguments are untyped"
                        );
                        None
                    }
                };
                out.push(cat);
            }
            out
        });
    match handle {
        Ok(h) => h.join().unwrap_or_default(),
        Err(e) => {
            eprintln!("warning: cannot contact upstreams ({e}); arguments are untyped");
            Vec::new()
        }
    }
}
