//! baton's embedded store: one SQLite file (WAL) holding the function registry (manifests,
//! module bytes by content hash), declared sequences, the execution log (schema v1 records,
//! one row each, with the common fields as columns), periodic snapshots of the learner, and
//! asynchronous invocations. `sqlite3 baton.db` shows plain tables:
//!
//! ```text
//! functions(name, manifest, module_hash, updated_ns)   modules(hash, bytes)
//! sequences(name, steps)                               meta(key, value)
//! executions(id, ts_ns, task, invocation, parent, trace, duration_us, cold, status, chain,
//!            source, record)
//! snapshots(id, taken_ns, last_execution, state)
//! invocations(id, function, state, payload, response, error, created_ns, finished_ns, pure)
//! ```
//!
//! The schema is versioned (`PRAGMA user_version`) and migrated forward on open; a file
//! from a newer baton is refused rather than misread.

mod invocation;
pub use invocation::InvocationState;

use baton_core::ids::content_key;
use baton_core::sync::Unpoisoned;
use baton_trace::schema::ExecutionRecord;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Migrations, in order; `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE modules(hash TEXT PRIMARY KEY, bytes BLOB NOT NULL);
     CREATE TABLE functions(
         name TEXT PRIMARY KEY,
         manifest TEXT NOT NULL,
         module_hash TEXT REFERENCES modules(hash),
         updated_ns INTEGER NOT NULL);
     CREATE TABLE sequences(name TEXT PRIMARY KEY, steps TEXT NOT NULL);
     CREATE TABLE executions(
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         ts_ns INTEGER NOT NULL,
         task TEXT NOT NULL,
         invocation TEXT NOT NULL,
         parent TEXT,
         trace TEXT,
         duration_us INTEGER NOT NULL,
         cold INTEGER,
         status TEXT,
         chain TEXT,
         source TEXT NOT NULL,
         record TEXT NOT NULL);
     CREATE INDEX executions_task ON executions(task);
     CREATE TABLE snapshots(
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         taken_ns INTEGER NOT NULL,
         last_execution INTEGER NOT NULL,
         state TEXT NOT NULL);
     CREATE TABLE invocations(
         id TEXT PRIMARY KEY,
         function TEXT NOT NULL,
         state TEXT NOT NULL,
         payload BLOB NOT NULL,
         response TEXT,
         error TEXT,
         created_ns INTEGER NOT NULL,
         finished_ns INTEGER,
         pure INTEGER NOT NULL);",
    // 2: `baton logs --invocation` reads one trace's records.
    "CREATE INDEX executions_trace ON executions(trace);",
    // 3: the bytes of the execution records, kept up to date, for their retention.
    "INSERT OR REPLACE INTO meta(key, value)
         SELECT 'executions_bytes', COALESCE(SUM(length(CAST(record AS BLOB))), 0)
         FROM executions;",
];

/// The `meta` key of the execution records' bytes.
const EXECUTIONS_BYTES: &str = "executions_bytes";

/// What [`Store::prune_executions`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Execution rows.
    pub rows: u64,
    /// Their records' bytes.
    pub bytes: u64,
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Snapshots kept (older ones are deleted when a new one is saved).
pub const SNAPSHOTS_KEPT: i64 = 3;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer baton.
    #[error("store schema version {found} is newer than this baton ({supported}); upgrade baton")]
    TooNew {
        /// The file's version.
        found: i64,
        /// This build's.
        supported: i64,
    },
    /// A stored value does not parse.
    #[error("store: {what}: {message}")]
    Corrupt {
        /// Which value.
        what: String,
        /// What is wrong.
        message: String,
    },
}

/// What [`Store::delete_invocation`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The record is gone.
    Removed,
    /// The invocation has not ended (its state): the record stays.
    NotEnded(InvocationState),
    /// No such invocation.
    Unknown,
}

/// Which execution records [`Store::logs`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only this function's (task's) records.
    pub function: Option<String>,
    /// Only this trace's records (one request and its chain).
    pub trace: Option<String>,
    /// Only rows after this id, oldest first; without it, the last `limit` rows.
    pub after: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// A stored function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFunction {
    /// Its name.
    pub name: String,
    /// The manifest as deployed (TOML).
    pub manifest: String,
    /// Content hash of its module, when a module was uploaded with it.
    pub module_hash: Option<String>,
}

/// An asynchronous invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInvocation {
    /// Its id.
    pub id: String,
    /// The function or sequence invoked.
    pub function: String,
    /// Where it is.
    pub state: InvocationState,
    /// The payload.
    pub payload: Vec<u8>,
    /// The response document (JSON), once finished.
    pub response: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Accepted at, ns.
    pub created_ns: u64,
    /// Whether it may run again after a restart.
    pub pure: bool,
}

/// The store. Share it behind an `Arc`; calls are serialized on one connection.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

/// Adds `delta` to the execution records' bytes in `meta`.
fn add_bytes(tx: &rusqlite::Transaction<'_>, delta: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?2",
        params![EXECUTIONS_BYTES, delta],
    )?;
    Ok(())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn corrupt(what: &str, message: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        message: message.to_string(),
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`, in WAL mode, migrated to
    /// [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Store::init(conn)
    }

    /// A store in memory (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock_unpoisoned()
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Stores a function (replacing one of the same name); the module bytes, if any, are
    /// kept once per content hash, which is returned.
    pub fn put_function(
        &self,
        name: &str,
        manifest: &str,
        module: Option<&[u8]>,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let hash = match module {
            Some(bytes) => {
                let hash = content_key(bytes);
                tx.execute(
                    "INSERT OR IGNORE INTO modules(hash, bytes) VALUES (?1, ?2)",
                    params![hash, bytes],
                )?;
                Some(hash)
            }
            None => None,
        };
        tx.execute(
            "INSERT INTO functions(name, manifest, module_hash, updated_ns) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET manifest = ?2, module_hash = ?3, updated_ns = ?4",
            params![name, manifest, hash, now_ns()],
        )?;
        // A redeploy's old upload goes once no function uses it.
        tx.execute(
            "DELETE FROM modules WHERE hash NOT IN
                 (SELECT module_hash FROM functions WHERE module_hash IS NOT NULL)",
            [],
        )?;
        tx.commit()?;
        Ok(hash)
    }

    /// Every function, by name.
    pub fn functions(&self) -> Result<Vec<StoredFunction>, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare("SELECT name, manifest, module_hash FROM functions ORDER BY name")?;
        let rows = statement.query_map([], |r| {
            Ok(StoredFunction {
                name: r.get(0)?,
                manifest: r.get(1)?,
                module_hash: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One function.
    pub fn function(&self, name: &str) -> Result<Option<StoredFunction>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, manifest, module_hash FROM functions WHERE name = ?1",
                [name],
                |r| {
                    Ok(StoredFunction {
                        name: r.get(0)?,
                        manifest: r.get(1)?,
                        module_hash: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Deletes a function (its module stays while another function uses it); returns
    /// whether it existed.
    pub fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = conn.execute("DELETE FROM functions WHERE name = ?1", [name])?;
        conn.execute(
            "DELETE FROM modules WHERE hash NOT IN
                 (SELECT module_hash FROM functions WHERE module_hash IS NOT NULL)",
            [],
        )?;
        Ok(n > 0)
    }

    /// The bytes of module `hash`.
    pub fn module(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT bytes FROM modules WHERE hash = ?1", [hash], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores a sequence.
    pub fn put_sequence(&self, name: &str, steps: &[String]) -> Result<(), StoreError> {
        let steps = serde_json::to_string(steps).map_err(|e| corrupt("sequence", e))?;
        self.conn().execute(
            "INSERT INTO sequences(name, steps) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET steps = ?2",
            params![name, steps],
        )?;
        Ok(())
    }

    /// Every sequence, by name.
    pub fn sequences(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT name, steps FROM sequences ORDER BY name")?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (name, steps) = row?;
            let steps = serde_json::from_str(&steps)
                .map_err(|e| corrupt(&format!("sequence {name}"), e))?;
            Ok((name, steps))
        })
        .collect()
    }

    /// Deletes a sequence; returns whether it existed.
    pub fn delete_sequence(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM sequences WHERE name = ?1", [name])?
            > 0)
    }

    /// Appends execution records (`source`: `baton` for its own, `ingested` for foreign
    /// logs); returns the id of the last row.
    pub fn append(&self, records: &[ExecutionRecord], source: &str) -> Result<i64, StoreError> {
        self.append_marked(records, source, None)
    }

    /// Appends execution records and, in the same transaction, sets `mark` (a `meta` key
    /// and value, such as how far a stream's records were learned): after a crash the
    /// store holds both or neither.
    pub fn append_marked(
        &self,
        records: &[ExecutionRecord],
        source: &str,
        mark: Option<(&str, &str)>,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO executions(ts_ns, task, invocation, parent, trace, duration_us,
                     cold, status, chain, source, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut bytes = 0u64;
            for record in records {
                let text = record.to_json().to_string();
                bytes += text.len() as u64;
                insert.execute(params![
                    record.ts_ns as i64,
                    record.task,
                    record.invocation,
                    record.parent,
                    record.trace,
                    record.duration_us as i64,
                    record.cold,
                    record.status.map(|s| s.as_str()),
                    record.chain,
                    source,
                    text,
                ])?;
            }
            add_bytes(&tx, bytes as i64)?;
        }
        // The last execution row's id, before the mark's own insert replaces it.
        let last = tx.last_insert_rowid();
        if let Some((key, value)) = mark {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(last)
    }

    /// The bytes of the execution records kept.
    pub fn executions_bytes(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
                [EXECUTIONS_BYTES],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, |n| n.max(0) as u64))
    }

    /// Removes execution records no snapshot still needs (ids up to the oldest kept
    /// snapshot's last learned execution: a restart replays only what follows it) that are
    /// older than `before_ns`, then the oldest of them while the records kept are over
    /// `max_bytes`. Returns what went.
    pub fn prune_executions(
        &self,
        before_ns: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<Pruned, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let upto: i64 = tx.query_row(
            "SELECT COALESCE(MIN(last_execution), 0) FROM snapshots",
            [],
            |r| r.get(0),
        )?;
        let mut pruned = Pruned::default();
        let mut take = |tx: &rusqlite::Transaction<'_>, cut: i64| -> Result<(), StoreError> {
            let (rows, bytes): (i64, i64) = tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(length(CAST(record AS BLOB))), 0)
                 FROM executions WHERE id <= ?1",
                [cut],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute("DELETE FROM executions WHERE id <= ?1", [cut])?;
            add_bytes(tx, -bytes)?;
            pruned.rows += rows as u64;
            pruned.bytes += bytes as u64;
            Ok(())
        };
        if let Some(before) = before_ns {
            // Ids grow with time: the newest old-enough row's id is the cut.
            let cut: Option<i64> = tx.query_row(
                "SELECT MAX(id) FROM executions WHERE id <= ?1 AND ts_ns < ?2",
                params![upto, before],
                |r| r.get(0),
            )?;
            if let Some(cut) = cut {
                take(&tx, cut)?;
            }
        }
        if let Some(max) = max_bytes {
            let kept: i64 = tx
                .query_row(
                    "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
                    [EXECUTIONS_BYTES],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            let over = kept - i64::try_from(max).unwrap_or(i64::MAX);
            if over > 0 {
                // The oldest rows whose bytes add up to the excess, walked in id order.
                let mut statement = tx.prepare(
                    "SELECT id, length(CAST(record AS BLOB)) FROM executions
                     WHERE id <= ?1 ORDER BY id",
                )?;
                let mut rows = statement.query([upto])?;
                let (mut freed, mut cut) = (0i64, None);
                while let Some(row) = rows.next()? {
                    freed += row.get::<_, i64>(1)?;
                    cut = Some(row.get::<_, i64>(0)?);
                    if freed >= over {
                        break;
                    }
                }
                drop(rows);
                drop(statement);
                if let Some(cut) = cut {
                    take(&tx, cut)?;
                }
            }
        }
        tx.commit()?;
        Ok(pruned)
    }

    /// Sets `key`'s value (a mark kept apart from any records).
    pub fn set_mark(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// The value [`Store::append_marked`] or [`Store::set_mark`] last set for `key`.
    pub fn mark(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// The id of the last execution row (0 when there is none).
    pub fn last_execution_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM executions", [], |r| {
                r.get(0)
            })?)
    }

    /// Execution rows after `id`, oldest first, at most `limit`.
    pub fn executions_after(
        &self,
        id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ExecutionRecord)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT id, record FROM executions WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![id, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (id, text) = row?;
            let record = ExecutionRecord::parse(&text)
                .map_err(|e| corrupt(&format!("execution row {id}"), e))?;
            Ok((id, record))
        })
        .collect()
    }

    /// Execution rows that match `filter`, oldest first, with their ids (for a reader that
    /// follows the log: ask again with `after` = the last id seen).
    pub fn logs(&self, filter: &LogFilter) -> Result<Vec<(i64, ExecutionRecord)>, StoreError> {
        let conn = self.conn();
        // Newest first with a limit (the last n), or after an id in order (following).
        let order = if filter.after.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let mut statement = conn.prepare_cached(&format!(
            "SELECT id, record FROM executions WHERE id > ?1 \
             AND (?2 IS NULL OR task = ?2) AND (?3 IS NULL OR trace = ?3) \
             ORDER BY id {order} LIMIT ?4"
        ))?;
        let rows = statement.query_map(
            params![
                filter.after.unwrap_or(0),
                filter.function,
                filter.trace,
                filter.limit as i64
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )?;
        let mut out = rows
            .map(|row| {
                let (id, text) = row?;
                let record = ExecutionRecord::parse(&text)
                    .map_err(|e| corrupt(&format!("execution row {id}"), e))?;
                Ok((id, record))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if filter.after.is_none() {
            out.reverse();
        }
        Ok(out)
    }

    /// The last `n` execution records, oldest first.
    pub fn tail(&self, n: usize) -> Result<Vec<ExecutionRecord>, StoreError> {
        let last = self.last_execution_id()?;
        let from = (last - n as i64).max(0);
        Ok(self
            .executions_after(from, n)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Saves a snapshot of the learner state that has learned every execution up to
    /// `last_execution`; keeps the newest [`SNAPSHOTS_KEPT`].
    pub fn save_snapshot(&self, last_execution: i64, state: &str) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO snapshots(taken_ns, last_execution, state) VALUES (?1, ?2, ?3)",
            params![now_ns(), last_execution, state],
        )?;
        let id = conn.last_insert_rowid();
        conn.execute(
            "DELETE FROM snapshots WHERE id <= ?1",
            [id - SNAPSHOTS_KEPT],
        )?;
        Ok(id)
    }

    /// The newest snapshot: (last execution learned, state).
    pub fn last_snapshot(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_execution, state FROM snapshots ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records an accepted asynchronous invocation.
    pub fn put_invocation(
        &self,
        id: &str,
        function: &str,
        payload: &[u8],
        pure: bool,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO invocations(id, function, state, payload, created_ns, pure)
             VALUES (?1, ?2, 'queued', ?3, ?4, ?5)",
            params![id, function, payload, now_ns(), pure],
        )?;
        Ok(())
    }

    /// Moves an invocation to `state`, with its response document or error.
    pub fn set_invocation(
        &self,
        id: &str,
        state: InvocationState,
        response: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = state.ended().then(now_ns);
        self.conn().execute(
            "UPDATE invocations SET state = ?2, response = ?3, error = ?4, finished_ns = ?5
             WHERE id = ?1",
            params![id, state.as_str(), response, error, finished],
        )?;
        Ok(())
    }

    /// Removes the record of invocation `id` if it has ended (succeeded or failed).
    pub fn delete_invocation(&self, id: &str) -> Result<Removal, StoreError> {
        let conn = self.conn();
        let removed = conn.execute(
            "DELETE FROM invocations WHERE id = ?1 AND state IN ('succeeded', 'failed')",
            [id],
        )?;
        if removed > 0 {
            return Ok(Removal::Removed);
        }
        let state: Option<InvocationState> = conn
            .query_row("SELECT state FROM invocations WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(state.map_or(Removal::Unknown, Removal::NotEnded))
    }

    /// One invocation.
    pub fn invocation(&self, id: &str) -> Result<Option<StoredInvocation>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, function, state, payload, response, error, created_ns, pure
                 FROM invocations WHERE id = ?1",
                [id],
                row_invocation,
            )
            .optional()?)
    }

    /// The latest `limit` invocations, newest first, of `function` when given (their
    /// payloads and responses left out: ids, states and times only).
    pub fn recent_invocations(
        &self,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredInvocation>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT id, function, state, X'', NULL, error, created_ns, pure
             FROM invocations WHERE ?1 IS NULL OR function = ?1
             ORDER BY created_ns DESC, id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(rusqlite::params![function, limit], row_invocation)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Invocations accepted but not finished (after a crash: those the server never
    /// completed).
    pub fn unfinished_invocations(&self) -> Result<Vec<StoredInvocation>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT id, function, state, payload, response, error, created_ns, pure
             FROM invocations WHERE state IN ('queued', 'running') ORDER BY created_ns",
        )?;
        let rows = statement.query_map([], row_invocation)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row_invocation(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredInvocation> {
    Ok(StoredInvocation {
        id: r.get(0)?,
        function: r.get(1)?,
        state: r.get(2)?,
        payload: r.get(3)?,
        response: r.get(4)?,
        error: r.get(5)?,
        created_ns: r.get::<_, i64>(6)? as u64,
        pure: r.get(7)?,
    })
}

#[cfg(test)]
mod tests;
