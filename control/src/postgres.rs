//! The shared backend: the control state in PostgreSQL, for several gateway
//! replicas that share one control state.
//!
//! Two tables: `toolgate_control_meta` holds one row with the global
//! revision, `toolgate_control_resources` one row per resource (kind, id,
//! version, JSON document). A commit is one SQL transaction that first
//! compare-and-sets the revision (`UPDATE … SET revision = N+1 WHERE
//! revision = N`): the row lock makes concurrent writers queue, and every
//! writer that planned against a revision another replica has moved past
//! updates no row and gets [`StoreError::Conflict`] — it reloads and plans
//! again, so a stale `If-Match` still ends in 412, and two writers never both
//! win. The same transaction sends `NOTIFY toolgate_control`, which the
//! replicas' followers `LISTEN` for (and poll the revision as well, so a
//! lost notification costs at most one poll interval).
//!
//! Every call blocks (the `postgres` client drives its own small runtime);
//! callers run it on the admin executor or a thread of its own, never on a
//! shard. Statements time out after [`STATEMENT_TIMEOUT`]; a broken
//! connection is dropped and made again on the next call.

use std::sync::Mutex;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, IsolationLevel, NoTls};
use toolgate_core::secret::SecretSource;

use crate::model::{Kind, Spec};
use crate::state::{Change, Entry, State};
use crate::store::{Backend, StoreError};

/// Longest a statement (or a wait for a row lock) may take.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The channel commits notify.
const CHANNEL: &str = "toolgate_control";
/// Advisory lock key serialising schema creation between replicas that
/// start together (`CREATE TABLE IF NOT EXISTS` alone races).
const SCHEMA_LOCK: i64 = 0x746f_6f6c_6761_7465;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS toolgate_control_meta (
    id smallint PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL CHECK (revision >= 0)
);
INSERT INTO toolgate_control_meta (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS toolgate_control_resources (
    kind text NOT NULL,
    id text NOT NULL,
    version bigint NOT NULL,
    spec text NOT NULL,
    PRIMARY KEY (kind, id)
);
";

/// How to reach the database: a `postgres://user@host:port/db` URL without a
/// password, and where the password comes from.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The URL (or libpq key=value string), without a password.
    pub url: String,
    /// The password's source, read at every connect; `None` for trust or
    /// peer authentication.
    pub password: Option<SecretSource>,
}

impl PgOptions {
    /// The URL as messages show it (it holds no password: config
    /// validation refuses one).
    pub fn describe(&self) -> &str {
        &self.url
    }
}

/// The PostgreSQL backend: one connection, made again when it breaks.
pub struct PgStore {
    opts: PgOptions,
    client: Mutex<Option<Client>>,
    listen: bool,
}

impl PgStore {
    /// Connects, creates the schema when missing (idempotent, safe when
    /// replicas start together), and returns the store.
    pub fn open(opts: PgOptions) -> Result<Self, StoreError> {
        let store = Self {
            opts,
            client: Mutex::new(None),
            listen: false,
        };
        store.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute(SCHEMA)?;
            tx.batch_execute(crate::connections::PG_SCHEMA)?;
            tx.commit()
        })?;
        Ok(store)
    }

    /// A second connection that `LISTEN`s for commits, for a follower
    /// ([`PgStore::wait`]).
    pub fn listener(&self) -> Result<Self, StoreError> {
        let store = Self {
            opts: self.opts.clone(),
            client: Mutex::new(None),
            listen: true,
        };
        store.with(|_| Ok(()))?;
        Ok(store)
    }

    fn db(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            url: self.opts.describe().to_owned(),
            reason: e.to_string(),
        }
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut cfg: Config = self.opts.url.parse().map_err(|e| self.db(e))?;
        if let Some(src) = &self.opts.password {
            let secret = src.read().map_err(|e| self.db(format!("password: {e}")))?;
            cfg.password(secret.expose());
        }
        cfg.connect_timeout(CONNECT_TIMEOUT)
            .application_name("toolgate")
            .options(&format!(
                "-c statement_timeout={} -c lock_timeout={}",
                STATEMENT_TIMEOUT.as_millis(),
                STATEMENT_TIMEOUT.as_millis()
            ));
        let mut client = cfg.connect(NoTls).map_err(|e| self.db(e))?;
        if self.listen {
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(|e| self.db(e))?;
        }
        Ok(client)
    }

    /// Runs `f` on the connection (made if needed); drops the connection
    /// when it is broken, so the next call makes a new one.
    fn with<T>(
        &self,
        f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.with_retry(f, || false)
    }

    /// [`PgStore::with`], running `f` once more on a new connection when
    /// the first one was lost under it (a restarted server cuts its
    /// sessions) and `may_retry` says nothing can have taken effect.
    fn with_retry<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
        may_retry: impl Fn() -> bool,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(self.connect()?);
            }
            let Some(client) = guard.as_mut() else {
                return Err(self.db("no connection"));
            };
            match f(client) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let lost = connection_lost(&e, client);
                    if lost {
                        *guard = None;
                    }
                    if lost && attempt == 0 && may_retry() {
                        tracing::info!(url = %self.opts.describe(), error = %describe(&e), "control state connection lost: trying once more on a new one");
                        continue;
                    }
                    return Err(self.db(describe(&e)));
                }
            }
        }
        Err(self.db("no connection"))
    }

    /// Runs `f`, which must be safe to run twice, once more on a new
    /// connection when the first was lost under it.
    pub(crate) fn run<T>(
        &self,
        f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.with_retry(f, || true)
    }

    /// A second connection, for the users' connected accounts (written
    /// off the admin API's connection).
    pub fn connections(&self) -> Result<Self, StoreError> {
        let store = Self {
            opts: self.opts.clone(),
            client: Mutex::new(None),
            listen: false,
        };
        store.with(|_| Ok(()))?;
        Ok(store)
    }

    /// The revision of the last committed transaction.
    pub fn revision(&self) -> Result<u64, StoreError> {
        let rev: i64 = self.with_retry(
            |c| {
                c.query_one(
                    "SELECT revision FROM toolgate_control_meta WHERE id = 1",
                    &[],
                )
                .map(|r| r.get(0))
            },
            || true,
        )?;
        Ok(u64::try_from(rev).unwrap_or(0))
    }

    /// Waits up to `timeout` for a commit's notification (on a
    /// [`PgStore::listener`]); returns whether one came. Without a working
    /// connection it sleeps `timeout` and reports the error.
    pub fn wait(&self, timeout: Duration) -> Result<bool, StoreError> {
        let r = self.with(|c| {
            let mut n = c.notifications();
            let got = {
                let mut it = n.timeout_iter(timeout);
                FallibleIterator::next(&mut it)?.is_some()
            };
            // Drain what else queued up: one reload covers them all.
            while FallibleIterator::next(&mut n.iter())?.is_some() {}
            Ok(got)
        });
        if r.is_err() {
            std::thread::sleep(timeout);
        }
        r
    }
}

/// Whether `e` means the connection is gone or its server is going away
/// (no SQLSTATE, class 08, or 57P01–57P03: shut down, crashed, starting):
/// what was sent did not run to its end, and the connection is made again.
fn connection_lost(e: &postgres::Error, client: &Client) -> bool {
    if client.is_closed() {
        return true;
    }
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// `e` as an operator reads it: PostgreSQL's severity, SQLSTATE and
/// message when the server sent them, else the client's error and cause.
fn describe(e: &postgres::Error) -> String {
    use std::error::Error;
    match (e.as_db_error(), e.source()) {
        (Some(db), _) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Backend for PgStore {
    fn load(&self) -> Result<State, StoreError> {
        // Read-only: safe to run again on a new connection.
        let (revision, rows) = self.with_retry(
            |c| {
                // One snapshot for the revision and the rows.
                let mut tx = c
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let rev: i64 = tx
                    .query_one(
                        "SELECT revision FROM toolgate_control_meta WHERE id = 1",
                        &[],
                    )?
                    .get(0);
                let rows: Vec<(String, String, i64, String)> = tx
                    .query(
                        "SELECT kind, id, version, spec FROM toolgate_control_resources",
                        &[],
                    )?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect();
                tx.commit()?;
                Ok((rev, rows))
            },
            || true,
        )?;
        let mut state = State {
            revision: u64::try_from(revision).unwrap_or(0),
            ..State::default()
        };
        for (kind, id, version, spec) in rows {
            let corrupt = |reason: String| StoreError::Corrupt {
                path: self.opts.describe().into(),
                key: format!("{kind}/{id}"),
                reason,
            };
            let k = Kind::parse(&kind).ok_or_else(|| corrupt("unknown kind".into()))?;
            let value: serde_json::Value =
                serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
            let spec = Spec::from_value(k, value).map_err(|e| corrupt(e.to_string()))?;
            state.entries.insert(
                (k, id.clone()),
                Entry {
                    version: u64::try_from(version).unwrap_or(0),
                    spec,
                },
            );
        }
        Ok(state)
    }

    fn commit(&self, revision: u64, changes: &[Change]) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(changes.len());
        for c in changes {
            let spec = match &c.new {
                Some(e) => Some((
                    to_i64(e.version),
                    serde_json::to_string(&e.spec.to_value()).map_err(|e| self.db(e))?,
                )),
                None => None,
            };
            rows.push((c.kind.as_str(), c.id.as_str(), spec));
        }
        let base = to_i64(revision.saturating_sub(1));
        let next = to_i64(revision);
        // Until COMMIT is sent, a lost connection took the transaction with
        // it and the commit runs again on a new one; a COMMIT whose answer
        // was lost may have taken effect, and is reported as failed.
        let committing = std::cell::Cell::new(false);
        let won = self.with_retry(
            |c| {
                committing.set(false);
                let mut tx = c.transaction()?;
                // The compare-and-set: waits for a concurrent writer's commit,
                // then matches no row if that writer moved the revision on.
                let n = tx.execute(
                    "UPDATE toolgate_control_meta SET revision = $1 WHERE id = 1 AND revision = $2",
                    &[&next, &base],
                )?;
                if n != 1 {
                    tx.rollback()?;
                    return Ok(false);
                }
                for (kind, id, spec) in &rows {
                    match spec {
                        Some((version, text)) => tx.execute(
                            "INSERT INTO toolgate_control_resources (kind, id, version, spec) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (kind, id) \
                         DO UPDATE SET version = EXCLUDED.version, spec = EXCLUDED.spec",
                            &[kind, id, version, text],
                        )?,
                        None => tx.execute(
                            "DELETE FROM toolgate_control_resources WHERE kind = $1 AND id = $2",
                            &[kind, id],
                        )?,
                    };
                }
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()])?;
                committing.set(true);
                tx.commit()?;
                Ok(true)
            },
            || !committing.get(),
        )?;
        if won {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                base: revision.saturating_sub(1),
            })
        }
    }

    fn newer(&self, known: u64) -> Result<Option<State>, StoreError> {
        if self.revision()? <= known {
            return Ok(None);
        }
        self.load().map(Some)
    }
}
