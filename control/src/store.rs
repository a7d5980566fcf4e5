//! Where the control state is kept: the [`Backend`] trait, and [`Store`],
//! the embedded backend, one redb file.
//!
//! redb is a pure-Rust, copy-on-write B-tree store: a write transaction is
//! atomic and durable (fsynced) when `commit` returns, and the file is never
//! left half-written by a crash. The file is opened by one process at a
//! time (redb locks it), which is what makes the in-memory [`State`] the
//! admin API checks preconditions against authoritative.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::model::{Kind, Spec};
use crate::state::{Change, Entry, State};

/// Resources: key `kind/id`, value JSON `{"version":N,"spec":{…}}`.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// Counters: `revision`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Why the store cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be created, opened, read or written.
    #[error("control state `{path}`: {reason}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A stored resource cannot be read back (written by something else).
    #[error("control state `{path}`: resource `{key}` is unreadable: {reason}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The resource's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The shared database cannot be reached, read or written.
    #[error("control state in `{url}`: {reason}")]
    Database {
        /// The database URL (never holds a password).
        url: String,
        /// What failed.
        reason: String,
    },
    /// Another replica committed since the state this change was planned
    /// against (revision `base`): nothing was written; reload and plan again.
    #[error("the control state moved past revision {base} meanwhile")]
    Conflict {
        /// The revision the change was planned against.
        base: u64,
    },
}

/// A place the control state is kept: the embedded [`Store`], or
/// [`crate::postgres::PgStore`], shared by several gateway replicas.
pub trait Backend: Send {
    /// Reads the whole state.
    fn load(&self) -> Result<State, StoreError>;
    /// Writes `changes` and the new `revision` in one transaction: all of
    /// them are durable when this returns `Ok`, none of them otherwise.
    /// A shared backend refuses with [`StoreError::Conflict`] when its
    /// revision is no longer `revision - 1`.
    fn commit(&self, revision: u64, changes: &[Change]) -> Result<(), StoreError>;
    /// The state, when another writer committed past revision `known`; the
    /// embedded store has no other writer.
    fn newer(&self, known: u64) -> Result<Option<State>, StoreError> {
        let _ = known;
        Ok(None)
    }
}

/// The embedded store: one redb file.
pub struct Store {
    db: std::sync::Arc<Database>,
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    version: u64,
    spec: serde_json::Value,
}

fn key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

impl Store {
    /// Opens the store at `path`, creating it (and its directory) if missing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |e: &dyn std::fmt::Display| StoreError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        let db = Database::create(path).map_err(|e| io(&e))?;
        Ok(Self {
            db: std::sync::Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    /// The users' connected accounts kept in the same file.
    pub fn connections(&self) -> crate::connections::EmbeddedConnections {
        crate::connections::EmbeddedConnections {
            db: std::sync::Arc::clone(&self.db),
            path: self.path.clone(),
        }
    }

    fn io(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            reason: e.into().to_string(),
        }
    }
}

impl Backend for Store {
    fn load(&self) -> Result<State, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let mut state = State::default();
        match txn.open_table(META) {
            Ok(t) => {
                if let Some(v) = t.get("revision").map_err(|e| self.io(e))? {
                    state.revision = v.value();
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(state),
            Err(e) => return Err(self.io(e)),
        }
        let table = match txn.open_table(RESOURCES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(state),
            Err(e) => return Err(self.io(e)),
        };
        for item in table.iter().map_err(|e| self.io(e))? {
            let (k, v) = item.map_err(|e| self.io(e))?;
            let k = k.value().to_owned();
            let corrupt = |reason: String| StoreError::Corrupt {
                path: self.path.clone(),
                key: k.clone(),
                reason,
            };
            let (kind, id) = k
                .split_once('/')
                .and_then(|(kind, id)| Some((Kind::parse(kind)?, id.to_owned())))
                .ok_or_else(|| corrupt("not `kind/id`".into()))?;
            let stored: Stored =
                serde_json::from_slice(v.value()).map_err(|e| corrupt(e.to_string()))?;
            let spec = Spec::from_value(kind, stored.spec).map_err(|e| corrupt(e.to_string()))?;
            state.entries.insert(
                (kind, id),
                Entry {
                    version: stored.version,
                    spec,
                },
            );
        }
        Ok(state)
    }

    fn commit(&self, revision: u64, changes: &[Change]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut table = txn.open_table(RESOURCES).map_err(|e| self.io(e))?;
            for c in changes {
                let k = key(c.kind, &c.id);
                match &c.new {
                    Some(e) => {
                        let bytes = serde_json::to_vec(&Stored {
                            version: e.version,
                            spec: e.spec.to_value(),
                        })
                        .map_err(|e| StoreError::Io {
                            path: self.path.clone(),
                            reason: e.to_string(),
                        })?;
                        table
                            .insert(k.as_str(), bytes.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    None => {
                        table.remove(k.as_str()).map_err(|e| self.io(e))?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            meta.insert("revision", revision).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentSpec, PolicySpec};
    use crate::state::{Op, Precondition};

    fn temp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("toolgate-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("state").join("control.redb")
    }

    #[test]
    fn committed_state_survives_reopening() {
        let path = temp("reopen");
        let state = {
            let store = Store::open(&path).unwrap();
            let s = store.load().unwrap();
            assert_eq!(s, State::default());
            let ops = [
                Op {
                    kind: Kind::Agents,
                    id: "bot".into(),
                    pre: Precondition::IfNoneMatch,
                    spec: Some(Spec::Agent(AgentSpec {
                        tools: vec!["crm__a".into()],
                        prompts: vec![],
                        resources: vec![],
                        groups: vec!["g".into()],
                        act_for_users: true,
                        api_key_sha256: None,
                        customer: None,
                        scopes: Default::default(),
                    })),
                },
                Op {
                    kind: Kind::Policies,
                    id: "main".into(),
                    pre: Precondition::IfNoneMatch,
                    spec: Some(Spec::Policy(PolicySpec {
                        text: "permit(principal, action, resource);".into(),
                    })),
                },
            ];
            let changes = s.plan(&ops).unwrap();
            let next = s.applied(&changes);
            store.commit(next.revision, &changes).unwrap();
            // And a delete in a second transaction.
            let del = next
                .plan(&[Op {
                    kind: Kind::Policies,
                    id: "main".into(),
                    pre: Precondition::IfMatch(1),
                    spec: None,
                }])
                .unwrap();
            let next = next.applied(&del);
            store.commit(next.revision, &del).unwrap();
            next
        };
        let store = Store::open(&path).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back, state);
        assert_eq!(back.revision, 2);
        assert_eq!(back.version(Kind::Agents, "bot"), 1);
        assert_eq!(back.version(Kind::Policies, "main"), 0);
        if let Some(p) = path.parent().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(p);
        }
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_file() {
        let path = temp("lock");
        let first = Store::open(&path).unwrap();
        let second = Store::open(&path);
        assert!(second.is_err(), "redb locks the file for one process");
        drop(first);
        assert!(Store::open(&path).is_ok());
        if let Some(p) = path.parent().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
