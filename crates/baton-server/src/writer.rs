//! The store writer: the one thread that appends execution records (group-committed) and
//! saves the learner's snapshots, in order, so a snapshot's `last_execution` is exactly
//! what the state had learned (see ARCHITECTURE.md, `baton-store`). After each snapshot it
//! prunes the records the snapshots no longer need by the retention rule ([`Retention`]).

use baton_runtime::director::{Director, Mark, RecordSource};
use baton_store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which execution records are kept: at most so old, at most so many bytes (each `None`:
/// no bound). Records a restart still replays are kept whatever the rule says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Age, from the record's timestamp.
    pub age: Option<Duration>,
    /// The records' bytes (their JSON).
    pub bytes: Option<u64>,
}

/// What the server removed from its disk (for `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct DiskCounters {
    /// Execution records pruned by the retention rule.
    pub(crate) records_pruned: std::sync::atomic::AtomicU64,
    /// Their bytes.
    pub(crate) record_bytes_pruned: std::sync::atomic::AtomicU64,
    /// Uploaded modules and code directories removed once no function used them.
    pub(crate) uploads_removed: std::sync::atomic::AtomicU64,
}

/// How long the store writer waits for more records before committing a batch.
const GROUP_COMMIT: Duration = Duration::from_millis(5);

/// What the store writer thread is asked to do, in order.
enum Write {
    /// Append these records, and set their mark in the same transaction.
    Records(
        Vec<baton_trace::schema::ExecutionRecord>,
        RecordSource,
        Option<Mark>,
    ),
    /// Save this learner state (a copy; serialized on the writer's thread, outside any
    /// lock); it has learned every record sent before it.
    Snapshot(Box<baton_core::TdgState>),
    /// Answer once everything sent before is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The store writer: appends records off the request path (a commit costs ~0.1 ms here,
/// so consecutive requests' records share one), and saves snapshots in order with them,
/// so a snapshot's `last_execution` is exactly what the state had learned.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    sender: std::sync::mpsc::Sender<Write>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Records(records, ..) => write!(f, "Records({})", records.len()),
            Write::Snapshot(_) => f.write_str("Snapshot"),
            Write::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Writer {
    /// Starts the writer thread. In a cluster, the records of what this node ran are
    /// published once they are stored: a node killed before its commit has published
    /// nothing it would not find again in its own log after a restart (it does not learn
    /// its own records back from the cluster).
    pub(crate) fn start(
        store: Arc<Store>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        retention: Retention,
        disk: Arc<DiskCounters>,
    ) -> std::io::Result<Writer> {
        let (sender, receiver) = std::sync::mpsc::channel::<Write>();
        std::thread::Builder::new()
            .name("baton-store-writer".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut pending = vec![first];
                    // Group commit: records that come within a few milliseconds share one
                    // transaction (a commit costs ~0.1 ms of a core here, which the request
                    // path would otherwise compete with); a snapshot or a flush ends the
                    // wait at once.
                    let linger = Instant::now() + GROUP_COMMIT;
                    while matches!(pending.last(), Some(Write::Records(..))) {
                        let left = linger.saturating_duration_since(Instant::now());
                        match receiver.recv_timeout(left) {
                            Ok(write) => pending.push(write),
                            Err(_) => break,
                        }
                    }
                    pending.extend(receiver.try_iter());
                    let mut batch: Vec<baton_trace::schema::ExecutionRecord> = Vec::new();
                    let mut batch_source = RecordSource::Baton;
                    // The newest mark of the records in `batch` (a mark covers what came
                    // before it, so a later one of its key replaces an earlier one).
                    let mut batch_mark: Option<Mark> = None;
                    let flush = |batch: &mut Vec<_>,
                                 source: RecordSource,
                                 mark: &mut Option<Mark>| {
                        let mark = mark.take();
                        if !batch.is_empty() || mark.is_some() {
                            let pair = mark.as_ref().map(|m| (m.key.as_str(), m.value.as_str()));
                            match store.append_marked(batch, source.as_str(), pair) {
                                Ok(_) => {
                                    // What this node ran is the cluster's to learn; what it
                                    // learned from others (or ingested) is not sent back.
                                    if let (Some(cluster), RecordSource::Baton) = (&cluster, source)
                                    {
                                        cluster.publish_records(batch);
                                    }
                                }
                                Err(error) => {
                                    tracing::error!(
                                        "cannot append {} records: {error}",
                                        batch.len()
                                    );
                                }
                            }
                            batch.clear();
                        }
                    };
                    for write in pending {
                        match write {
                            Write::Records(records, source, mark) => {
                                let other_key = matches!(
                                    (&batch_mark, &mark),
                                    (Some(old), Some(new)) if old.key != new.key
                                );
                                if source != batch_source || other_key {
                                    flush(&mut batch, batch_source, &mut batch_mark);
                                    batch_source = source;
                                }
                                batch.extend(records);
                                if mark.is_some() {
                                    batch_mark = mark;
                                }
                            }
                            Write::Snapshot(state) => {
                                flush(&mut batch, batch_source, &mut batch_mark);
                                let state = match serde_json::to_string(&state) {
                                    Ok(state) => state,
                                    Err(error) => {
                                        tracing::error!("snapshot not serializable: {error}");
                                        continue;
                                    }
                                };
                                let saved = store
                                    .last_execution_id()
                                    .and_then(|last| store.save_snapshot(last, &state));
                                if let Err(error) = saved {
                                    tracing::error!("snapshot failed: {error}");
                                }
                                prune(&store, retention, &disk);
                            }
                            Write::Flush(done) => {
                                flush(&mut batch, batch_source, &mut batch_mark);
                                let _ = done.send(());
                            }
                        }
                    }
                    flush(&mut batch, batch_source, &mut batch_mark);
                }
            })?;
        Ok(Writer { sender })
    }

    pub(crate) fn records(
        &self,
        records: &[baton_trace::schema::ExecutionRecord],
        source: RecordSource,
        mark: Option<Mark>,
    ) {
        let _ = self
            .sender
            .send(Write::Records(records.to_vec(), source, mark));
    }

    /// Waits until everything sent so far is in the store.
    pub(crate) fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.sender.send(Write::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(30));
        }
    }
}

/// Saves a snapshot of the learner consistent with the execution log, and waits for it.
/// Prunes the execution records by `retention` (after a snapshot: what it learned is safe
/// to drop), counting what went.
fn prune(store: &Store, retention: Retention, disk: &DiskCounters) {
    use std::sync::atomic::Ordering;
    let before_ns = retention.age.map(|age| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.saturating_sub(age).as_nanos()).unwrap_or(i64::MAX)
    });
    if before_ns.is_none() && retention.bytes.is_none() {
        return;
    }
    match store.prune_executions(before_ns, retention.bytes) {
        Ok(pruned) => {
            disk.records_pruned
                .fetch_add(pruned.rows, Ordering::Relaxed);
            disk.record_bytes_pruned
                .fetch_add(pruned.bytes, Ordering::Relaxed);
        }
        Err(error) => tracing::error!("cannot prune execution records: {error}"),
    }
}

pub(crate) fn snapshot(director: &Director, writer: &Writer) -> Result<(), String> {
    // Copied and queued under the learner lock (so it follows exactly the records the
    // learner had seen), serialized by the writer outside it.
    director.with_learner(|tdg| {
        writer
            .sender
            .send(Write::Snapshot(Box::new(tdg.state())))
            .map_err(|_| "the store writer stopped".to_owned())
    })?;
    writer.flush();
    Ok(())
}
