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
    NotEnded(String),
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
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: String,
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

    /// Moves an invocation to `state` (`running`, `succeeded`, `failed`), with its response
    /// document or error.
    pub fn set_invocation(
        &self,
        id: &str,
        state: &str,
        response: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = matches!(state, "succeeded" | "failed").then(now_ns);
        self.conn().execute(
            "UPDATE invocations SET state = ?2, response = ?3, error = ?4, finished_ns = ?5
             WHERE id = ?1",
            params![id, state, response, error, finished],
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
        let state: Option<String> = conn
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
mod tests {
    use super::*;
    use baton_trace::schema::Status;

    fn record(task: &str, invocation: &str) -> ExecutionRecord {
        ExecutionRecord {
            ts_ns: 1_700_000_000_000_000_000,
            task: task.into(),
            invocation: invocation.into(),
            duration_us: 42,
            status: Some(Status::Ok),
            cold: Some(true),
            ..ExecutionRecord::default()
        }
    }

    #[test]
    fn logs_filter_by_function_and_trace_and_follow_by_id() {
        let store = Store::in_memory().unwrap();
        let traced = |task: &str, invocation: &str, trace: &str| ExecutionRecord {
            trace: Some(trace.into()),
            ..record(task, invocation)
        };
        store
            .append(
                &[
                    traced("a", "1", "t1"),
                    traced("b", "2", "t1"),
                    traced("a", "3", "t2"),
                    traced("c", "4", "t3"),
                ],
                "baton",
            )
            .unwrap();
        let tasks = |rows: Vec<(i64, ExecutionRecord)>| -> Vec<String> {
            rows.into_iter().map(|(_, r)| r.invocation).collect()
        };
        let filter = |function: Option<&str>, trace: Option<&str>, after, limit| LogFilter {
            function: function.map(str::to_owned),
            trace: trace.map(str::to_owned),
            after,
            limit,
        };
        // The last n that match, oldest first.
        assert_eq!(
            tasks(store.logs(&filter(Some("a"), None, None, 10)).unwrap()),
            ["1", "3"]
        );
        assert_eq!(
            tasks(store.logs(&filter(Some("a"), None, None, 1)).unwrap()),
            ["3"]
        );
        assert_eq!(
            tasks(store.logs(&filter(None, Some("t1"), None, 10)).unwrap()),
            ["1", "2"]
        );
        assert_eq!(
            tasks(store.logs(&filter(None, None, None, 2)).unwrap()),
            ["3", "4"]
        );
        assert!(store
            .logs(&filter(Some("zz"), None, None, 10))
            .unwrap()
            .is_empty());
        // Following: after the last id seen, in order; nothing new, nothing returned.
        let all = store.logs(&filter(None, None, None, 10)).unwrap();
        let second = all[1].0;
        assert_eq!(
            tasks(store.logs(&filter(None, None, Some(second), 10)).unwrap()),
            ["3", "4"]
        );
        let last = all[3].0;
        assert!(store
            .logs(&filter(None, None, Some(last), 10))
            .unwrap()
            .is_empty());
        store.append(&[traced("a", "5", "t4")], "baton").unwrap();
        assert_eq!(
            tasks(
                store
                    .logs(&filter(Some("a"), None, Some(last), 10))
                    .unwrap()
            ),
            ["5"]
        );
    }

    #[test]
    fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.db");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            let hash = store
                .put_function("a", "name = \"a\"", Some(b"\0asm"))
                .unwrap();
            store
                .put_function("b", "name = \"b\"", Some(b"\0asm"))
                .unwrap();
            assert_eq!(hash.as_deref(), Some(content_key(b"\0asm").as_str()));
            store.put_sequence("ab", &["a".into(), "b".into()]).unwrap();
            let last = store
                .append(&[record("a", "r1.0"), record("b", "r1.1")], "baton")
                .unwrap();
            store.save_snapshot(last, "{\"learned\":true}").unwrap();
            store.append(&[record("a", "r2.0")], "baton").unwrap();
            store.put_invocation("i1", "ab", b"payload", true).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let functions = store.functions().unwrap();
        assert_eq!(functions.len(), 2);
        let hash = functions[0].module_hash.clone().unwrap();
        assert_eq!(store.module(&hash).unwrap().unwrap(), b"\0asm");
        assert_eq!(store.sequences().unwrap()[0].1, ["a", "b"]);
        let (learned, state) = store.last_snapshot().unwrap().unwrap();
        assert_eq!(state, "{\"learned\":true}");
        let after = store.executions_after(learned, 100).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].1.invocation, "r2.0");
        assert_eq!(store.unfinished_invocations().unwrap()[0].id, "i1");
        store
            .set_invocation("i1", "succeeded", Some("{}"), None)
            .unwrap();
        assert!(store.unfinished_invocations().unwrap().is_empty());
        let recent = store.recent_invocations(None, 10).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(
            (recent[0].id.as_str(), recent[0].state.as_str()),
            ("i1", "succeeded")
        );
        assert!(recent[0].payload.is_empty() && recent[0].response.is_none());
        assert_eq!(
            store
                .recent_invocations(Some(&recent[0].function), 10)
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .recent_invocations(Some("nobody"), 10)
            .unwrap()
            .is_empty());
        assert!(store.recent_invocations(None, 0).unwrap().is_empty());
        // The module is shared: deleting one user keeps it, deleting both drops it.
        store.delete_function("a").unwrap();
        assert!(store.module(&hash).unwrap().is_some());
        store.delete_function("b").unwrap();
        assert!(store.module(&hash).unwrap().is_none());
        assert_eq!(store.tail(2).unwrap().len(), 2);
    }

    #[test]
    fn a_set_mark_is_read_back_and_replaced() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.mark("k").unwrap(), None);
        store.set_mark("k", "1").unwrap();
        store.set_mark("k", "2").unwrap();
        assert_eq!(store.mark("k").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let error = Store::open(&path).unwrap_err().to_string();
        assert!(error.contains("newer than this baton"), "{error}");
    }

    #[test]
    fn only_the_newest_snapshots_are_kept() {
        let store = Store::in_memory().unwrap();
        for i in 0..10 {
            store.save_snapshot(i, &format!("{i}")).unwrap();
        }
        let n: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, SNAPSHOTS_KEPT);
        assert_eq!(store.last_snapshot().unwrap().unwrap(), (9, "9".into()));
    }

    #[test]
    fn a_mark_is_stored_with_its_records_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.mark("cursor").unwrap(), None);
        let first = store
            .append_marked(
                &[record("a", "1"), record("b", "2")],
                "ingested",
                Some(("cursor", "2")),
            )
            .unwrap();
        // The id returned is the last execution row's, not the mark's.
        assert_eq!(first, store.last_execution_id().unwrap());
        assert_eq!(first, 2);
        let second = store
            .append_marked(&[record("c", "3")], "ingested", Some(("cursor", "3")))
            .unwrap();
        assert_eq!(second, 3);
        // A mark that cannot be set (refused by a trigger put there for this test) takes
        // its records with it.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE UPDATE ON meta WHEN NEW.value = 'refused'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let refused =
            store.append_marked(&[record("d", "4")], "ingested", Some(("cursor", "refused")));
        assert!(refused.is_err());
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.mark("cursor").unwrap().as_deref(), Some("3"));
        assert_eq!(store.last_execution_id().unwrap(), 3);
        assert!(store.tail(10).unwrap().iter().all(|r| r.task != "d"));
    }

    #[test]
    fn records_go_by_age_then_by_size_but_never_past_the_oldest_snapshot() {
        let store = Store::in_memory().unwrap();
        let at = |n: i64| ExecutionRecord {
            ts_ns: (n * 1_000_000_000) as u64,
            ..record("f", &format!("i{n:02}"))
        };
        let all: Vec<ExecutionRecord> = (1..=10).map(at).collect();
        store.append(&all, "baton").unwrap();
        let one = all[0].to_json().to_string().len() as u64;
        assert_eq!(store.executions_bytes().unwrap(), 10 * one);
        // No snapshot: every record may still be needed for a restart.
        assert_eq!(
            store.prune_executions(Some(i64::MAX), Some(0)).unwrap(),
            Pruned::default()
        );
        // A snapshot has learned up to row 8: rows 1–8 may go, 9–10 stay whatever the
        // rules say.
        store.save_snapshot(8, "{}").unwrap();
        let by_age = store.prune_executions(Some(4_000_000_000), None).unwrap();
        assert_eq!(
            by_age,
            Pruned {
                rows: 3,
                bytes: 3 * one
            },
            "ts 1, 2, 3 s"
        );
        let by_size = store.prune_executions(None, Some(5 * one)).unwrap();
        assert_eq!(by_size.rows, 2, "rows 4, 5");
        assert_eq!(store.executions_bytes().unwrap(), 5 * one);
        let rest = store.prune_executions(Some(i64::MAX), Some(0)).unwrap();
        assert_eq!(rest.rows, 3, "rows 6–8; 9 and 10 follow the snapshot");
        let kept: Vec<String> = store
            .tail(10)
            .unwrap()
            .into_iter()
            .map(|r| r.invocation)
            .collect();
        assert_eq!(kept, ["i09", "i10"]);
        assert_eq!(store.executions_bytes().unwrap(), 2 * one);
    }

    #[test]
    fn a_redeploy_drops_the_upload_no_function_uses() {
        let store = Store::in_memory().unwrap();
        let old = store.put_function("f", "m", Some(b"v1")).unwrap().unwrap();
        store.put_function("g", "m", Some(b"shared")).unwrap();
        let new = store.put_function("f", "m", Some(b"v2")).unwrap().unwrap();
        assert!(store.module(&old).unwrap().is_none());
        assert!(store.module(&new).unwrap().is_some());
        store.put_function("h", "m", Some(b"shared")).unwrap();
        store.delete_function("g").unwrap();
        assert!(
            store.module(&content_key(b"shared")).unwrap().is_some(),
            "h uses it"
        );
    }
}
