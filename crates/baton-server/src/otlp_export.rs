//! `--otlp-endpoint`: the execution records of what this node ran, sent as OTLP/HTTP
//! protobuf spans (`POST {endpoint}/v1/traces`) to a collector, Jaeger or Tempo, on the
//! trace ids the invocations carry, so a baton chain appears beside the services that call
//! it. Off the request path: records are queued (bounded; a full queue drops and counts)
//! and a thread sends them in batches of up to [`BATCH_SPANS`] or every [`BATCH_EVERY`].

use crate::client::Client;
use baton_trace::schema::ExecutionRecord;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spans sent at most at once.
pub const BATCH_SPANS: usize = 512;
/// A batch waits at most this long for more spans.
pub const BATCH_EVERY: Duration = Duration::from_secs(1);
/// Record batches queued for the exporter before new ones are dropped.
const QUEUED: usize = 1024;
/// A failing collector is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What the exporter did.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans the collector refused or did not answer for.
    pub failed: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// The exporter's handle: queue records with [`Exporter::send`].
#[derive(Debug)]
pub struct Exporter {
    queue: SyncSender<Vec<ExecutionRecord>>,
    /// What it did.
    pub counters: Arc<ExportCounters>,
}

/// Longest one export may take.
const EXCHANGE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

impl Exporter {
    /// Starts the sending thread for `endpoint` (`http://HOST:PORT`, with or without
    /// `/v1/traces`); an endpoint that is not such a URL is an error naming it.
    pub fn start(endpoint: &str) -> Result<Exporter, String> {
        let base = endpoint.trim().trim_end_matches('/');
        let base = base.strip_suffix("/v1/traces").unwrap_or(base);
        // A collector that takes a batch and never answers holds the sender 10 s at most
        // (then the batch is counted failed and a warning is logged).
        let client = Client::new(base, None)
            .map_err(|e| {
                format!("--otlp-endpoint {endpoint}: {e} (expected http://HOST:PORT, OTLP/HTTP)")
            })?
            .within(EXCHANGE_WITHIN);
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUED);
        let counters = Arc::new(ExportCounters::default());
        let shared = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("baton-otlp".into())
            .spawn(move || run(&client, &records, &shared))
            .map_err(|e| format!("cannot start the OTLP exporter: {e}"))?;
        Ok(Exporter { queue, counters })
    }

    /// Queues records for export; never blocks.
    pub fn send(&self, records: &[ExecutionRecord]) {
        if records.is_empty() {
            return;
        }
        match self.queue.try_send(records.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(lost) | TrySendError::Disconnected(lost)) => {
                self.counters
                    .dropped
                    .fetch_add(lost.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

fn run(client: &Client, records: &Receiver<Vec<ExecutionRecord>>, counters: &ExportCounters) {
    let mut last_report: Option<Instant> = None;
    // Ends when the server drops its sender.
    while let Ok(first) = records.recv() {
        let mut batch = first;
        let until = Instant::now() + BATCH_EVERY;
        while batch.len() < BATCH_SPANS {
            match records.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(more) => batch.extend(more),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for chunk in batch.chunks(BATCH_SPANS) {
            let body = baton_trace::otlp_proto::encode_records(chunk, "baton");
            let sent = client.request("POST", "/v1/traces", "application/x-protobuf", &body);
            let n = chunk.len() as u64;
            match sent {
                Ok(response) if (200..300).contains(&response.status) => {
                    counters.exported.fetch_add(n, Ordering::Relaxed);
                }
                outcome => {
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                    let why = match outcome {
                        Ok(response) => format!("HTTP {}", response.status),
                        Err(e) => e.to_string(),
                    };
                    if last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                        tracing::warn!(
                            "OTLP export to {} failed ({why}); {n} spans lost (reported at most every 30 s)",
                            client.url()
                        );
                        last_report = Some(Instant::now());
                    }
                }
            }
        }
    }
}
