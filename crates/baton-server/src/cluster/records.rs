//! The cluster's one graph: each node publishes a summary of what it ran and learns the
//! other nodes' summaries. At most every `summary_every` ([`SUMMARY_EVERY`] unless
//! `--cluster-summary-ms` says otherwise; at once after a quiet spell) a
//! node's committed records are summarized per application (`baton_trace::summary`: requests alike become one
//! representative whose records carry their count), so what crosses NATS grows with the
//! variety of the requests, not their number, and are published on
//! `baton.records.<node>.<app>` (a node could learn only the applications it serves by
//! subject). A node's raw records stay in its own store. A message is signed with its
//! subject, so no one without the cluster's key can teach the nodes a graph (or pose as a
//! node by its subject).

use super::*;
use baton_runtime::director::Mark;
use std::collections::BTreeMap;

/// The store's `meta` key for which record messages this node has learned.
const LEARNED_KEY: &str = "cluster.records.learned";
/// At most this many ranges of learned messages are kept; beyond, the oldest go (a gap
/// between ranges is a message not learned yet, as rare as a lost delivery).
const LEARNED_RANGES: usize = 64;
/// By default a node publishes at most one summary per application this often: records committed
/// after a quiet spell go at once, those committed within the interval after a summary are
/// gathered into the next (the others learn them up to this much later; a node killed
/// loses at most this much of what it would have told).
pub const SUMMARY_EVERY: Duration = Duration::from_millis(250);
/// The header naming a summary message: its node's run (start, ns) and its number in it.
const BATCH: &str = "Baton-Batch";
/// Records gathered past this are summarized at once.
const SUMMARY_MAX_RECORDS: usize = 50_000;

/// An application's subject token: letters, digits, `-` and `_` kept, anything else `_`;
/// no application is `_`.
fn app_token(app: Option<&str>) -> String {
    match app {
        None | Some("") => "_".into(),
        Some(app) => app
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

/// Publishes summaries of this node's committed records (batches of whole requests, so
/// a summary never splits a request).
pub(super) async fn publish_records(
    cluster: Arc<Cluster>,
    mut records: tokio::sync::mpsc::Receiver<Vec<ExecutionRecord>>,
) {
    // Each message's id: this run's start and a number, signed with it, so a message put
    // again (a replay) is told from a new one.
    let boot = now_ns();
    let mut sequence = 0u64;
    let mut closed = false;
    // At most one summary per application every interval: what comes after a quiet
    // spell goes at once, what comes within the interval after it is gathered.
    let every = cluster.summary_every;
    let mut last = {
        let now = tokio::time::Instant::now();
        now.checked_sub(every).unwrap_or(now)
    };
    while !closed {
        let Some(first) = records.recv().await else {
            return;
        };
        let mut gathered = first;
        let until = last + every;
        while gathered.len() < SUMMARY_MAX_RECORDS && tokio::time::Instant::now() < until {
            match tokio::time::timeout_at(until, records.recv()).await {
                Ok(Some(batch)) => gathered.extend(batch),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        last = tokio::time::Instant::now();
        let mut by_app: BTreeMap<Option<String>, Vec<ExecutionRecord>> = BTreeMap::new();
        for record in gathered {
            by_app.entry(record.app.clone()).or_default().push(record);
        }
        for (app, records) in by_app {
            sequence += 1;
            let prefix = format!("{}-{}-{sequence}", cluster.node, now_ns());
            let summary = tokio::task::spawn_blocking(move || {
                baton_trace::summary::summarize(&records, app.as_deref(), &prefix)
            })
            .await
            .unwrap_or_default();
            let subject = format!(
                "baton.records.{}.{}",
                cluster.node,
                app_token(summary.records.first().and_then(|r| r.app.as_deref()))
            );
            let batch = format!("{boot}.{sequence}");
            publish_summary(&cluster, &subject, &batch, &summary).await;
        }
    }
}

/// Publishes one summary, signed with its subject.
async fn publish_summary(
    cluster: &Cluster,
    subject: &str,
    batch: &str,
    summary: &baton_trace::summary::Summary,
) {
    if summary.records.is_empty() {
        return;
    }
    let mut lines = Vec::new();
    for record in &summary.records {
        let _ = record.write_line(&mut lines);
    }
    let mut headers = HeaderMap::new();
    headers.insert(BATCH, batch);
    if let Some(signature) = cluster.trust.sign(
        Purpose::Records,
        &[subject.as_bytes(), batch.as_bytes(), &lines],
    ) {
        headers.insert(forward::SIGNATURE, signature.as_str());
    }
    let published = match cluster
        .context
        .publish_with_headers(subject.to_owned(), headers, lines.into())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let counters = &cluster.counters;
    match published {
        Ok(()) => {
            counters.records_published.fetch_add(1, Ordering::Relaxed);
            counters
                .requests_summarized
                .fetch_add(summary.requests, Ordering::Relaxed);
            counters
                .summary_records
                .fetch_add(summary.records.len() as u64, Ordering::Relaxed);
        }
        Err(error) => {
            counters.records_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "cluster: a summary of {} requests not published: {error}",
                summary.requests
            );
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
    // This node's own subjects (learned live): `baton.records.<node>.<app>`, and
    // `baton.records.<node>` as nodes before summaries published.
    let own = format!("baton.records.{}", cluster.node);
    let own_prefix = format!("{own}.");
    // Which messages this node has learned, as stored with their records (a stream made
    // anew, numbered from 1 again, starts an empty set).
    let created = stream
        .cached_info()
        .created
        .unix_timestamp_nanos()
        .to_string();
    let mut learned = match state.upgrade() {
        Some(state) => Learned::restore(state.store.mark(LEARNED_KEY).ok().flatten(), &created),
        None => return Ok(()),
    };
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
        let mut marked = learned.clone();
        for message in &batch {
            let sequence = message.info().ok().map(|info| info.stream_sequence);
            if let Some(sequence) = sequence {
                if marked.contains(sequence) {
                    cluster
                        .counters
                        .records_redelivered
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                marked.insert(sequence);
            }
            if message.subject.as_str() == own || message.subject.starts_with(&own_prefix) {
                continue;
            }
            let header = |name: &str| header(message.headers.as_ref(), name);
            let batch = header(BATCH).unwrap_or_default();
            if let Err(why) = cluster.trust.check(
                Purpose::Records,
                &[
                    message.subject.as_bytes(),
                    batch.as_bytes(),
                    &message.payload,
                ],
                header(forward::SIGNATURE).as_deref(),
            ) {
                cluster.reject(Purpose::Records, message.subject.as_str(), &why);
                continue;
            }
            // A signed message put again is a new stream message with an old id.
            let sender = message.subject.split('.').nth(2).unwrap_or_default();
            match parse_batch(&batch) {
                Some((run, number)) if !marked.first_time(sender, run, number) => {
                    cluster.reject(
                        Purpose::Records,
                        message.subject.as_str(),
                        &format!("batch {batch} was learned before (a replay)"),
                    );
                    continue;
                }
                Some(_) => {}
                None if cluster.trust.is_signed() => {
                    cluster.reject(Purpose::Records, message.subject.as_str(), &"no batch id");
                    continue;
                }
                None => {}
            }
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
            // Invocations they stand for (a summary's record counts many).
            let count = records.iter().map(|r| r.count.unwrap_or(1)).sum::<u64>();
            // Stored, with which messages they came from, before they are acknowledged: a
            // node killed in between gets them again from the stream and skips them.
            let mark = Mark {
                key: LEARNED_KEY.to_owned(),
                value: marked.to_json(),
            };
            let _ = tokio::task::spawn_blocking(move || {
                state.director.learn_records(&records, Some(&mark));
                state.writer.flush();
            })
            .await;
            cluster
                .counters
                .records_learned
                .fetch_add(count, Ordering::Relaxed);
        }
        // Its own messages (not learned) need no storing: they are skipped by subject.
        learned = marked;
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

/// A summary message's id, `RUN.NUMBER`.
fn parse_batch(batch: &str) -> Option<(u64, u64)> {
    let (run, number) = batch.split_once('.')?;
    Some((run.parse().ok()?, number.parse().ok()?))
}

/// Which messages of the records stream this node has learned (or passed over as its
/// own), as sorted, disjoint, inclusive ranges of stream sequences: usually one range, as
/// the stream delivers in order; a redelivery after a lost acknowledgement falls inside.
/// And, per sending node, the message numbers of its latest run learned, so that a signed
/// message put into the stream again is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Learned {
    /// The stream's creation time (ns since the epoch): a stream made anew numbers its
    /// messages from 1 again.
    stream: String,
    /// Sorted, disjoint, not adjacent.
    ranges: Vec<(u64, u64)>,
    /// Per sending node: its latest run (start, ns) and the numbers learned of it, as
    /// ranges.
    #[serde(default)]
    senders: std::collections::BTreeMap<String, (u64, Vec<(u64, u64)>)>,
}

impl Learned {
    /// The set stored as `stored` if it is of the stream created at `created`, else empty
    /// (a value that does not parse is reported and starts empty: at worst a redelivered
    /// message is learned twice).
    pub(super) fn restore(stored: Option<String>, created: &str) -> Learned {
        let fresh = Learned {
            stream: created.to_owned(),
            ..Learned::default()
        };
        let Some(stored) = stored else {
            return fresh;
        };
        match serde_json::from_str::<Learned>(&stored) {
            Ok(learned) if learned.stream == created => learned,
            Ok(_) => fresh,
            Err(error) => {
                tracing::warn!("cluster: the stored `{LEARNED_KEY}` is unreadable: {error}");
                fresh
            }
        }
    }

    pub(super) fn contains(&self, sequence: u64) -> bool {
        ranges_contain(&self.ranges, sequence)
    }

    pub(super) fn insert(&mut self, sequence: u64) {
        ranges_insert(&mut self.ranges, sequence);
    }

    /// Whether message `number` of `sender`'s run `run` is seen here for the first time
    /// (then it is noted): an earlier run, or a number of this run already learned, is a
    /// replay.
    pub(super) fn first_time(&mut self, sender: &str, run: u64, number: u64) -> bool {
        let (latest, numbers) = self
            .senders
            .entry(sender.to_owned())
            .or_insert((run, Vec::new()));
        if run < *latest {
            return false;
        }
        if run > *latest {
            *latest = run;
            numbers.clear();
        }
        if ranges_contain(numbers, number) {
            return false;
        }
        ranges_insert(numbers, number);
        true
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Whether sorted, disjoint ranges hold `value`.
fn ranges_contain(ranges: &[(u64, u64)], value: u64) -> bool {
    let at = ranges.partition_point(|&(_, end)| end < value);
    ranges.get(at).is_some_and(|&(start, _)| start <= value)
}

/// Adds `value` to sorted, disjoint, not adjacent ranges (at most [`LEARNED_RANGES`]: the
/// oldest go).
fn ranges_insert(ranges: &mut Vec<(u64, u64)>, value: u64) {
    let at = ranges.partition_point(|&(_, end)| end.saturating_add(1) < value);
    match ranges.get_mut(at) {
        Some((start, end)) if *start <= value.saturating_add(1) => {
            *start = (*start).min(value);
            *end = (*end).max(value);
            // It may now touch the next range.
            if let Some(&(next_start, next_end)) = ranges.get(at + 1) {
                if next_start <= ranges[at].1.saturating_add(1) {
                    ranges[at].1 = next_end;
                    ranges.remove(at + 1);
                }
            }
        }
        _ => {
            ranges.insert(at, (value, value));
            if ranges.len() > LEARNED_RANGES {
                ranges.remove(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_messages_merge_into_ranges_and_holes_stay_unlearned() {
        let mut learned = Learned::restore(None, "1");
        for sequence in [1, 2, 3, 5, 7, 6] {
            learned.insert(sequence);
        }
        assert_eq!(learned.ranges, vec![(1, 3), (5, 7)]);
        assert!(!learned.contains(4) && !learned.contains(8) && !learned.contains(0));
        assert!((1..=3).chain(5..=7).all(|s| learned.contains(s)));
        // Filling the hole joins the ranges; inserting twice changes nothing.
        learned.insert(4);
        learned.insert(4);
        assert_eq!(learned.ranges, vec![(1, 7)]);
        // Below the first range.
        learned.insert(0);
        assert_eq!(learned.ranges, vec![(0, 7)]);
        // Bounded: the oldest ranges go.
        for sequence in (0..200).map(|i| 100 + 2 * i) {
            learned.insert(sequence);
        }
        assert_eq!(learned.ranges.len(), LEARNED_RANGES);
        assert!(learned.contains(498) && !learned.contains(3));
    }

    #[test]
    fn a_message_put_again_is_a_replay_and_a_new_run_starts_afresh() {
        let mut learned = Learned::restore(None, "1");
        assert!(learned.first_time("n1", 100, 1));
        assert!(learned.first_time("n1", 100, 3));
        assert!(!learned.first_time("n1", 100, 1), "the same message again");
        assert!(
            learned.first_time("n1", 100, 2),
            "a later one, out of order"
        );
        assert!(learned.first_time("n2", 50, 1), "another node's");
        assert!(learned.first_time("n1", 200, 1), "the node started again");
        assert!(!learned.first_time("n1", 100, 9), "its earlier run");
        // Kept with the set.
        let back = Learned::restore(Some(learned.to_json()), "1");
        let mut again = back.clone();
        assert!(!again.first_time("n1", 200, 1));
        assert_eq!(parse_batch("12.3"), Some((12, 3)));
        assert_eq!(parse_batch("12"), None);
    }

    #[test]
    fn a_stored_set_is_kept_for_its_stream_only() {
        let mut learned = Learned::restore(None, "10");
        learned.insert(42);
        let stored = Some(learned.to_json());
        assert!(Learned::restore(stored.clone(), "10").contains(42));
        // The stream was made anew: its message 42 is another one.
        assert!(!Learned::restore(stored, "11").contains(42));
        assert!(!Learned::restore(Some("{not json".into()), "10").contains(42));
    }
}
