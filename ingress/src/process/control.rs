//! Opening the control state: with the admin API on, the resources written
//! through it are read from the embedded store or from PostgreSQL; without
//! it, the configuration file alone decides.

use toolgate_control::{Backend, PgOptions, PgStore, State, Store, StoreError};
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
}

/// Opens and reads the configured backend when `admin_on`.
pub(super) fn open(cfg: &ValidConfig, admin_on: bool) -> Result<Control, StoreError> {
    if !admin_on {
        return Ok(Control {
            store: None,
            state: State::default(),
            follower: None,
        });
    }
    Ok(match cfg.config.admin.backend.get_ref() {
        StateBackend::Embedded => {
            let store = Store::open(&cfg.admin_state_file)?;
            let state = Backend::load(&store)?;
            tracing::info!(target: LOG_TARGET, file = %cfg.admin_state_file.display(), resources = state.entries.len(), revision = state.revision, "control state loaded");
            Control {
                store: Some(Box::new(store)),
                state,
                follower: None,
            }
        }
        StateBackend::Postgres => {
            let url = cfg.config.admin.postgres_url.as_ref().map(|u| u.get_ref());
            let opts = PgOptions {
                url: url.cloned().unwrap_or_default(),
                password: cfg.admin_postgres_password.clone(),
            };
            let store = PgStore::open(opts)?;
            let state = Backend::load(&store)?;
            let follower = store.listener()?;
            tracing::info!(target: LOG_TARGET, database = %url.map(String::as_str).unwrap_or(""), resources = state.entries.len(), revision = state.revision, "control state loaded");
            Control {
                store: Some(Box::new(store)),
                state,
                follower: Some(follower),
            }
        }
    })
}
