//! The cluster's one graph: each node publishes the records of what it ran and learns
//! the other nodes' records.

use super::*;

/// Publishes this node's record batches, one message per batch (a batch is whole
/// requests, so a consumer groups them as this node did).
pub(super) async fn publish_records(
    cluster: Arc<Cluster>,
    mut records: tokio::sync::mpsc::Receiver<Vec<ExecutionRecord>>,
) {
    let subject = format!("baton.records.{}", cluster.node);
    while let Some(batch) = records.recv().await {
        let mut lines = Vec::new();
        for record in &batch {
            let _ = record.write_line(&mut lines);
        }
        let published = match cluster.context.publish(subject.clone(), lines.into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match published {
            Ok(()) => {
                cluster
                    .counters
                    .records_published
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                cluster
                    .counters
                    .records_dropped
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("cluster: {} records not published: {error}", batch.len());
            }
        }
    }
}

/// Learns the other nodes' records (a durable consumer per node: a restart resumes where
/// it stopped).
pub(super) async fn learn_records(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
) -> Result<(), ClusterError> {
    let stream = cluster
        .context
        .get_stream(RECORDS)
        .await
        .map_err(|e| js(format!("stream {RECORDS}"))(e.to_string()))?;
    let name = format!("records-{}", cluster.node);
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: RECORDS_ACK_WAIT,
                max_ack_pending: 1000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| js(format!("consumer {name}"))(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| js(format!("consumer {name}"))(e.to_string()))?;
    let own = format!("baton.records.{}", cluster.node);
    let mut batch: Vec<jetstream::Message> = Vec::new();
    loop {
        // Messages that come within LEARN_EVERY of the first are learned together: one
        // graph publish per batch, not per message (a publish rebuilds the snapshot).
        let first = Instant::now();
        let mut ended = false;
        while batch.len() < LEARN_BATCH {
            let wait = if batch.is_empty() {
                Duration::from_secs(3600)
            } else {
                LEARN_EVERY.saturating_sub(first.elapsed())
            };
            match tokio::time::timeout(wait, messages.next()).await {
                Ok(Some(Ok(message))) => batch.push(message),
                Ok(Some(Err(error))) => tracing::warn!("cluster: records: {error}"),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(_) if batch.is_empty() => continue,
                Err(_) => break,
            }
        }
        let Some(state) = state.upgrade() else {
            return Ok(());
        };
        let mut records = Vec::new();
        for message in batch.iter().filter(|m| m.subject.as_str() != own) {
            let text = String::from_utf8_lossy(&message.payload);
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                match ExecutionRecord::parse(line) {
                    Ok(record) => records.push(record),
                    Err(error) => tracing::warn!(
                        "cluster: a record from {} (line {}) is skipped: {error}",
                        message.subject,
                        n + 1
                    ),
                }
            }
        }
        if !records.is_empty() {
            let learned = records.len() as u64;
            // Stored before they are acknowledged: a node killed in between gets them
            // again from the stream, never neither.
            let _ = tokio::task::spawn_blocking(move || {
                state.director.learn_records(&records);
                state.writer.flush();
            })
            .await;
            cluster
                .counters
                .records_learned
                .fetch_add(learned, Ordering::Relaxed);
        }
        for message in batch.drain(..) {
            if let Err(error) = message.ack().await {
                tracing::warn!("cluster: records ack: {error}");
            }
        }
        if ended {
            return Ok(());
        }
    }
}
