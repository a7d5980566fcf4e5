//! Process wiring: what `toolgate run` (and `toolgate demo`) start, in
//! which order, and how they stop.
//!
//! [`run`] takes a validated configuration and, in this order:
//! 1. installs logging ([`logging`]);
//! 2. starts the audit log ([`audit`]): one ring per shard plus one for the
//!    admin API when it is on, the checkpoint key (generated if none is
//!    configured), and the audit thread; then the audit sinks
//!    ([`toolgate_sinks::start_sinks`]) and the retention thread — all
//!    before anything can accept a call, so that no call goes unaudited;
//! 3. reads what the configuration names ([`load`]): policies, upstream
//!    credentials (and their watchers), TLS files, the sub-token key, OAuth
//!    clients, tool pins;
//! 4. opens the control state ([`control`]) when the admin API is on;
//! 5. builds the shared state and its first snapshot ([`Shared`]), and hands
//!    it the audit and sink statistics for the metrics endpoint;
//! 6. starts the shards ([`shard`]), then the admin API on its own ring and
//!    the PostgreSQL follower;
//! 7. prints the banner, and starts the file watchers ([`watch`]);
//! 8. waits for a signal: SIGHUP reloads, SIGINT or SIGTERM stops.
//!
//! On stop, responses in flight get 100 ms to finish, then every ring is
//! drained into the log, and the sinks and the retention thread stop.
//! Shard threads are not joined: the caller ends the process.

mod audit;
mod control;
mod error;
mod load;
mod logging;
mod open_files;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use toolgate_core::config::{AuditWriterMode, ValidConfig};

pub use error::StartError;
pub use load::{
    exchange_endpoints, load_policies, load_tls, openapi_surfaces, stdio_processes,
    InvalidPolicies, TlsLoadError,
};

use crate::shared::{shard_count, Shared};
use crate::{admin, random, shard};

/// The target of the log lines written here: the binary's name, as when
/// this wiring lived in `main.rs`, so log lines and `RUST_LOG` directives
/// stay as they were.
const LOG_TARGET: &str = "toolgate";

/// Called once with the address the shards listen on (port 0 resolved).
pub type Banner = Box<dyn FnOnce(SocketAddr)>;

/// Runs the gateway for `cfg` until SIGINT or SIGTERM, in the order the
/// module doc lists; `banner` is called once the shards listen. Returns once
/// the audit log is drained.
pub fn run(cfg: ValidConfig, banner: Option<Banner>) -> Result<(), StartError> {
    logging::init(&cfg);
    let shards = shard_count(&cfg);
    open_files::raise(
        (shards as u64).saturating_mul(cfg.config.server.max_connections_per_shard as u64),
    );
    let admin_on = cfg.admin_listen.is_some();
    let audit::Audit {
        mut writers,
        writer: audit,
        health,
        key,
    } = audit::start(&cfg, shards + usize::from(admin_on))?;
    let audit_dir = audit.dir().to_path_buf();
    let inline = match cfg.config.audit.writer {
        AuditWriterMode::Shards => audit.inline(),
        AuditWriterMode::Thread => None,
    };
    let sinks = toolgate_sinks::start_sinks(&cfg)?;
    let retainer = audit::start_retention(&cfg, key)?;
    load_policies(&cfg)?;
    let (policies, _) = toolgate_decision::policy::read_sources(&cfg.policy_files);
    let watch = cfg.config.policies.watch;
    let mut loaded = load::loaded(&cfg)?;
    let control = control::open(&cfg, admin_on)?;
    loaded.accounts = crate::accounts::Accounts::load(&cfg, control.connections.clone())?;
    let admin_writer = if admin_on { writers.pop() } else { None };
    let session_key = random::bytes32()?;
    let shared = Shared::new(cfg, policies, control.state, session_key, loaded)
        .map_err(StartError::ControlPolicies)?;
    shared.metrics.set_audit(audit.stats(), Arc::clone(&health));
    shared.metrics.set_sinks(
        sinks
            .iter()
            .map(|s| (s.name().to_owned(), s.stats()))
            .collect(),
    );
    shared.metrics.set_stdio(
        shared
            .config
            .upstreams
            .iter()
            .filter_map(|u| Some((u.name().to_owned(), shared.stdio.get(u.name())?.clone())))
            .collect(),
    );
    let running = shard::start(Arc::clone(&shared), writers, Arc::clone(&health), inline)
        .map_err(StartError::Shards)?;
    if let (Some(store), Some(writer)) = (control.store, admin_writer) {
        let ring = u16::try_from(shards).unwrap_or(u16::MAX);
        let addr = admin::start(Arc::clone(&shared), store, writer, health, ring)?;
        tracing::info!(target: LOG_TARGET, %addr, "admin API listening");
    }
    if let Some(follower) = control.follower {
        let every = Duration::from_millis(*shared.config.config.admin.poll_interval_ms.get_ref());
        admin::follow(Arc::clone(&shared), follower, every).map_err(StartError::Follower)?;
    }
    tracing::info!(target: LOG_TARGET, addr = %running.addr, shards, audit = %audit_dir.display(), sinks = sinks.len(), "toolgate listening");
    if let Some(b) = banner {
        b(running.addr);
    }
    watch::watch_control_files(Arc::clone(&shared));
    crate::openapi_refresh::start(Arc::clone(&shared)).map_err(StartError::Refresher)?;
    if watch {
        watch::watch_files(Arc::clone(&shared));
    }
    wait_for_stop(&shared)?;
    // Let responses in flight finish, then drain every ring into the log.
    std::thread::sleep(Duration::from_millis(100));
    for p in shared.stdio.values() {
        p.stop();
    }
    audit.shutdown();
    for s in sinks {
        s.shutdown();
    }
    if let Some(r) = retainer {
        r.shutdown();
    }
    Ok(())
}

/// Blocks until SIGINT or SIGTERM; each SIGHUP reloads meanwhile.
fn wait_for_stop(shared: &Shared) -> Result<(), StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(StartError::Signals)?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            watch::reload(shared, "SIGHUP");
            continue;
        }
        tracing::info!(target: LOG_TARGET, signal = sig, "shutting down");
        break;
    }
    Ok(())
}
