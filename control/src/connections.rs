//! Connected accounts: each end user's delegated grant for an upstream that
//! acts on the user's own account — the refresh token the user's consent
//! produced, sealed (encrypted and bound to its upstream and user) by the
//! caller before it gets here, so the store never holds one in the clear.
//!
//! Kept beside the control state, in the same store (the embedded redb
//! file or PostgreSQL), but not in the versioned resources: a user
//! connecting is not an operator's change, and publishes no snapshot.

use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use crate::postgres::PgStore;
use crate::store::StoreError;

/// Connections by `upstream` NUL `user`: the JSON of a [`Connection`].
const CONNECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("connections");

/// One user's grant for one upstream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    /// The upstream.
    pub upstream: String,
    /// The end user.
    pub user: String,
    /// The refresh token, sealed (nonce and ciphertext, base64).
    pub sealed: String,
    /// The scope the user granted.
    pub scope: String,
    /// When the user connected, Unix seconds.
    pub connected_at: u64,
}

/// Where connections are kept. Every call is blocking I/O: never on a
/// shard's thread.
pub trait ConnectionStore: Send + Sync {
    /// Adds or replaces a user's connection.
    fn put(&self, c: &Connection) -> Result<(), StoreError>;
    /// Removes one; whether it was there.
    fn delete(&self, upstream: &str, user: &str) -> Result<bool, StoreError>;
    /// Every connection.
    fn list(&self) -> Result<Vec<Connection>, StoreError>;
}

fn key(upstream: &str, user: &str) -> String {
    format!("{upstream}\0{user}")
}

/// Connections in the embedded store's file.
pub struct EmbeddedConnections {
    pub(crate) db: Arc<Database>,
    pub(crate) path: std::path::PathBuf,
}

impl EmbeddedConnections {
    fn io(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            reason: e.into().to_string(),
        }
    }
}

impl ConnectionStore for EmbeddedConnections {
    fn put(&self, c: &Connection) -> Result<(), StoreError> {
        let value = serde_json::to_vec(c).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut t = txn.open_table(CONNECTIONS).map_err(|e| self.io(e))?;
            t.insert(key(&c.upstream, &c.user).as_str(), value.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn delete(&self, upstream: &str, user: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        let removed = {
            let mut t = txn.open_table(CONNECTIONS).map_err(|e| self.io(e))?;
            let was = t
                .remove(key(upstream, user).as_str())
                .map_err(|e| self.io(e))?
                .is_some();
            was
        };
        txn.commit().map_err(|e| self.io(e))?;
        Ok(removed)
    }

    fn list(&self) -> Result<Vec<Connection>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = match txn.open_table(CONNECTIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.io(e))? {
            let (k, v) = item.map_err(|e| self.io(e))?;
            let c: Connection =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    key: k.value().replace('\0', "/"),
                    reason: e.to_string(),
                })?;
            out.push(c);
        }
        Ok(out)
    }
}

/// The PostgreSQL table of connections (created with the control schema).
pub(crate) const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS toolgate_connections (
    upstream text NOT NULL,
    user_id text NOT NULL,
    sealed text NOT NULL,
    scope text NOT NULL,
    connected_at bigint NOT NULL,
    PRIMARY KEY (upstream, user_id)
);
";

impl ConnectionStore for PgStore {
    fn put(&self, c: &Connection) -> Result<(), StoreError> {
        let at = i64::try_from(c.connected_at).unwrap_or(i64::MAX);
        self.run(|db| {
            db.execute(
                "INSERT INTO toolgate_connections (upstream, user_id, sealed, scope, connected_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (upstream, user_id) DO UPDATE \
                 SET sealed = EXCLUDED.sealed, scope = EXCLUDED.scope, connected_at = EXCLUDED.connected_at",
                &[&c.upstream, &c.user, &c.sealed, &c.scope, &at],
            )
            .map(|_| ())
        })
    }

    fn delete(&self, upstream: &str, user: &str) -> Result<bool, StoreError> {
        self.run(|db| {
            db.execute(
                "DELETE FROM toolgate_connections WHERE upstream = $1 AND user_id = $2",
                &[&upstream, &user],
            )
            .map(|n| n > 0)
        })
    }

    fn list(&self) -> Result<Vec<Connection>, StoreError> {
        self.run(|db| {
            db.query(
                "SELECT upstream, user_id, sealed, scope, connected_at FROM toolgate_connections",
                &[],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| Connection {
                        upstream: r.get(0),
                        user: r.get(1),
                        sealed: r.get(2),
                        scope: r.get(3),
                        connected_at: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
                    })
                    .collect()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_kept_replaced_listed_and_deleted_beside_the_state() {
        let dir = std::env::temp_dir().join(format!("toolgate-conn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::Store::open(&dir.join("control.redb")).unwrap();
        let conns = store.connections();
        assert!(conns.list().unwrap().is_empty());
        let mut c = Connection {
            upstream: "github".into(),
            user: "alice".into(),
            sealed: "AAAA".into(),
            scope: "repo".into(),
            connected_at: 1,
        };
        conns.put(&c).unwrap();
        c.sealed = "BBBB".into();
        conns.put(&c).unwrap();
        let bob = Connection {
            user: "bob".into(),
            ..c.clone()
        };
        conns.put(&bob).unwrap();
        let mut all = conns.list().unwrap();
        all.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(all, vec![c.clone(), bob]);
        assert!(conns.delete("github", "bob").unwrap());
        assert!(!conns.delete("github", "bob").unwrap());
        assert_eq!(conns.list().unwrap(), vec![c]);
        // The control state is untouched by connections.
        assert!(crate::Backend::load(&store).unwrap().entries.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
