//! The processes of one stdio upstream: one shared by every call, or —
//! `instances = "per_user"` — one per end user, capped and reaped when
//! idle, beside the shared one that serves the catalog and calls made for
//! no user.
//!
//! Users' processes are found under a lock held for a map lookup (and, for
//! a user's first call, the start of a supervisor thread); processes are
//! stopped and waited for outside it. A shared upstream never takes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use toolgate_core::config::{Instances, StdioSpec};

use super::egress::EgressCounts;
use super::process::{Health, Process, StartError};
use crate::UpstreamError;

/// How often idle users' processes are looked for, at most.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// One stdio upstream's processes.
pub struct Pool {
    shared: Arc<Process>,
    egress: Arc<EgressCounts>,
    per_user: Option<Arc<PerUser>>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

struct PerUser {
    name: String,
    egress: Arc<EgressCounts>,
    spec: StdioSpec,
    max_response_bytes: usize,
    epoch: Instant,
    users: Mutex<HashMap<Arc<str>, Arc<Instance>>>,
    stopping: AtomicBool,
    wake: Condvar,
    sleep: Mutex<()>,
}

struct Instance {
    process: Arc<Process>,
    /// Milliseconds since the pool's epoch.
    last_used: AtomicU64,
}

impl Pool {
    /// Starts upstream `name`'s shared process (see [`Process::start`]);
    /// with `per_user`, users' processes start on their first call.
    pub fn start(
        name: &str,
        spec: StdioSpec,
        max_response_bytes: usize,
    ) -> Result<Arc<Self>, StartError> {
        let egress = Arc::new(EgressCounts::default());
        let shared = Process::start(name, spec.clone(), max_response_bytes, Arc::clone(&egress))?;
        let per_user = (spec.instances == Instances::PerUser).then(|| {
            Arc::new(PerUser {
                name: name.to_owned(),
                egress: Arc::clone(&egress),
                spec,
                max_response_bytes,
                epoch: Instant::now(),
                users: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
                wake: Condvar::new(),
                sleep: Mutex::new(()),
            })
        });
        let reaper = match &per_user {
            Some(p) => {
                let p = Arc::clone(p);
                Some(
                    std::thread::Builder::new()
                        .name(format!("toolgate-stdio-{name}-reap"))
                        .spawn(move || p.reap_loop())
                        .map_err(|e| StartError::Thread(name.to_owned(), e))?,
                )
            }
            None => None,
        };
        Ok(Arc::new(Self {
            shared,
            egress,
            per_user,
            reaper: Mutex::new(reaper),
        }))
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// How many list changes the shared process has announced.
    pub fn list_changes(&self) -> u64 {
        self.shared.list_changes()
    }

    /// How the shared process stands (users' processes come and go).
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Connections its processes' egress proxies let through and refused
    /// (every instance's).
    pub fn egress(&self) -> &EgressCounts {
        &self.egress
    }

    /// Processes running now, the shared one included.
    pub fn instances(&self) -> usize {
        1 + self.per_user.as_ref().map_or(0, |p| p.lock().len())
    }

    /// The process serving calls made for `user`: the shared one, or with
    /// `per_user` the user's own (started now if it has none). Errors:
    /// every process is busy and none may be started.
    pub fn process_for(&self, user: Option<&str>) -> Result<Arc<Process>, UpstreamError> {
        match (&self.per_user, user) {
            (Some(p), Some(u)) => p.get(u),
            _ => Ok(Arc::clone(&self.shared)),
        }
    }

    /// Stops every process and the reaper; waits for them.
    pub fn stop(&self) {
        if let Some(p) = &self.per_user {
            p.stopping.store(true, Ordering::Release);
            p.wake.notify_all();
        }
        let reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = reaper {
            let _ = h.join();
        }
        if let Some(p) = &self.per_user {
            let all: Vec<_> = p.lock().drain().collect();
            for (_, i) in all {
                i.process.stop();
            }
        }
        self.shared.stop();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("shared", &self.shared)
            .field("instances", &self.instances())
            .finish()
    }
}

impl PerUser {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Instance>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn get(&self, user: &str) -> Result<Arc<Process>, UpstreamError> {
        let now = self.now_ms();
        let evicted = {
            let mut users = self.lock();
            if let Some(i) = users.get(user) {
                i.last_used.store(now, Ordering::Relaxed);
                return Ok(Arc::clone(&i.process));
            }
            // The shared process counts: users get `max_instances - 1`.
            let evicted = if users.len() + 1 >= self.spec.max_instances {
                let idle = users
                    .iter()
                    .filter(|(_, i)| i.process.in_flight() == 0)
                    .min_by_key(|(_, i)| i.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| Arc::clone(k));
                let Some(k) = idle else {
                    tracing::warn!(upstream = %self.name, max_instances = self.spec.max_instances, "stdio upstream: every user's process is busy; call refused");
                    return Err(UpstreamError::Unavailable);
                };
                users.remove(&k)
            } else {
                None
            };
            let process = Process::launch(
                &self.name,
                self.spec.clone(),
                self.max_response_bytes,
                Arc::clone(&self.egress),
            )
                .map_err(|e| {
                    tracing::error!(upstream = %self.name, error = %e, "cannot start a user's stdio process");
                    UpstreamError::Unavailable
                })?;
            users.insert(
                Arc::from(user),
                Arc::new(Instance {
                    process: Arc::clone(&process),
                    last_used: AtomicU64::new(now),
                }),
            );
            tracing::debug!(upstream = %self.name, processes = users.len() + 1, "stdio process started for a user");
            (process, evicted)
        };
        let (process, evicted) = evicted;
        if let Some(old) = evicted {
            old.process.stop();
        }
        Ok(process)
    }

    /// Stops users' processes idle past the timeout, until the pool stops.
    fn reap_loop(&self) {
        let every = (self.spec.idle_timeout / 4).clamp(Duration::from_millis(100), REAP_EVERY);
        let idle_ms = u64::try_from(self.spec.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        while !self.stopping.load(Ordering::Acquire) {
            let guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self.wake.wait_timeout(guard, every);
            let now = self.now_ms();
            let idle: Vec<Arc<Instance>> = {
                let mut users = self.lock();
                let keys: Vec<Arc<str>> = users
                    .iter()
                    .filter(|(_, i)| {
                        i.process.in_flight() == 0
                            && now.saturating_sub(i.last_used.load(Ordering::Relaxed)) >= idle_ms
                    })
                    .map(|(k, _)| Arc::clone(k))
                    .collect();
                keys.iter().filter_map(|k| users.remove(k)).collect()
            };
            for i in idle {
                tracing::debug!(upstream = %self.name, "idle user's stdio process stopped");
                i.process.stop();
            }
        }
    }
}
