//! Opening the control state: with the admin API on, the resources written
//! through it are read from the embedded store or from PostgreSQL; without
//! it, the configuration file alone decides.

use std::sync::Arc;

use toolgate_control::{Backend, ConnectionStore, PgOptions, PgStore, State, Store, StoreError};
use toolgate_core::config::{StateBackend, ValidConfig};

use super::LOG_TARGET;

/// The control state at start, and where it is kept.
pub(super) struct Control {
    /// The store the admin API writes to; none with the admin API off.
    pub store: Option<Box<dyn Backend>>,
    /// The state read from it (empty with the admin API off).
    pub state: State,
    /// With PostgreSQL: a second connection that follows other replicas' writes.
    pub follower: Option<PgStore>,
    /// Where users' connected accounts are kept, with `[connected_accounts]`
    /// (the same store, with the admin API on or off).
    pub connections: Option<Arc<dyn ConnectionStore>>,
}

/// Opens and reads the configured backend when `admin_on`, and opens it
/// for connected accounts when they are configured.
pub(super) fn open(cfg: &ValidConfig, admin_on: bool) -> Result<Control, StoreError> {
    let accounts_on = cfg.connected_accounts.is_some();
    if !admin_on {
        let connections: Option<Arc<dyn ConnectionStore>> =
            match (accounts_on, cfg.config.admin.backend.get_ref()) {
                (false, _) => None,
                (true, StateBackend::Embedded) => {
                    Some(Arc::new(Store::open(&cfg.admin_state_file)?.connections()))
                }
                (true, StateBackend::Postgres) => Some(Arc::new(PgStore::open(pg_options(cfg))?)),
            };
        return Ok(Control {
            store: None,
            state: State::default(),
            follower: None,
            connections,
        });
    }
    Ok(match cfg.config.admin.backend.get_ref() {
        StateBackend::Embedded => {
            let store = Store::open(&cfg.admin_state_file)?;
            let connections: Option<Arc<dyn ConnectionStore>> =
                accounts_on.then(|| Arc::new(store.connections()) as Arc<dyn ConnectionStore>);
            let state = Backend::load(&store)?;
            tracing::info!(target: LOG_TARGET, file = %cfg.admin_state_file.display(), resources = state.entries.len(), revision = state.revision, "control state loaded");
            Control {
                store: Some(Box::new(store)),
                state,
                follower: None,
                connections,
            }
        }
        StateBackend::Postgres => {
            let url = cfg.config.admin.postgres_url.as_ref().map(|u| u.get_ref());
            let store = PgStore::open(pg_options(cfg))?;
            let connections: Option<Arc<dyn ConnectionStore>> = if accounts_on {
                Some(Arc::new(store.connections()?))
            } else {
                None
            };
            let state = Backend::load(&store)?;
            let follower = store.listener()?;
            tracing::info!(target: LOG_TARGET, database = %url.map(String::as_str).unwrap_or(""), resources = state.entries.len(), revision = state.revision, "control state loaded");
            Control {
                store: Some(Box::new(store)),
                state,
                follower: Some(follower),
                connections,
            }
        }
    })
}

fn pg_options(cfg: &ValidConfig) -> PgOptions {
    PgOptions {
        url: cfg
            .config
            .admin
            .postgres_url
            .as_ref()
            .map(|u| u.get_ref().clone())
            .unwrap_or_default(),
        password: cfg.admin_postgres_password.clone(),
    }
}
