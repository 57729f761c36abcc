//! Asynchronous invocations in a cluster: recorded and queued before the 202, claimed by
//! compare-and-set, kept alive while they run, and acknowledged only after the outcome is
//! recorded. Records and queued messages are signed: a queued message that does not
//! verify is dropped unrun, and a record that does not verify is passed over for the
//! last earlier revision that does (the bucket keeps [`INVOCATION_HISTORY`]).

use super::*;

/// Most messages of the invocation bucket's stream read to list the latest invocations.
pub(crate) const MAX_SCANNED: u64 = 20_000;

impl Cluster {
    /// Records an accepted asynchronous invocation, then queues it (deduplicated by id).
    pub(crate) async fn enqueue(
        &self,
        id: &str,
        function: &str,
        payload: &[u8],
        pure: bool,
    ) -> Result<(), ClusterError> {
        let record = SharedInvocation {
            id: id.to_owned(),
            function: function.to_owned(),
            state: InvocationState::Queued,
            error: None,
            response: serde_json::Value::Null,
            node: self.node.clone(),
            runs: 0,
            pure,
            created_ns: now_ns(),
        };
        self.put_json(
            &self.invocations,
            Purpose::Invocation,
            id,
            &record,
            "recording invocation",
        )
        .await?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert("Baton-Id", id);
        headers.insert("Baton-Function", function);
        if let Some(signature) = self.trust.sign(
            Purpose::Work,
            &[id.as_bytes(), function.as_bytes(), payload],
        ) {
            headers.insert(forward::SIGNATURE, signature.as_str());
        }
        let published = self
            .context
            .publish_with_headers("baton.invoke", headers, payload.to_vec().into())
            .await;
        let acked = match published {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(reason) = acked {
            // Not queued: the record says so, and the caller gets an error, not a 202.
            let failed = SharedInvocation {
                state: InvocationState::Failed,
                error: Some(format!("not queued: {reason}")),
                ..record
            };
            let _ = self
                .put_json(
                    &self.invocations,
                    Purpose::Invocation,
                    id,
                    &failed,
                    "recording invocation",
                )
                .await;
            if reason.contains("maximum messages") || reason.contains("maximum bytes") {
                return Err(ClusterError::QueueFull);
            }
            return Err(js(format!("queueing invocation {id}"))(reason));
        }
        Ok(())
    }

    /// The latest asynchronous invocations of the whole cluster (of `function`, if given),
    /// newest first, at most `limit`: the invocation bucket's stream read back from its
    /// last message (one message per invocation: the bucket keeps one revision), at most
    /// [`MAX_SCANNED`] messages.
    pub(crate) async fn recent_invocations(
        &self,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SharedInvocation>, ClusterError> {
        let failed = |e: String| js("listing invocations".to_owned())(e);
        let mut stream = self.invocations.stream.clone();
        let state = stream
            .info()
            .await
            .map_err(|e| failed(e.to_string()))?
            .state
            .clone();
        let prefix = format!("$KV.{}.", self.invocations.name);
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<SharedInvocation> = Vec::new();
        let lowest = state
            .first_sequence
            .max(1)
            .max(state.last_sequence.saturating_sub(MAX_SCANNED - 1));
        let mut sequence = state.last_sequence;
        while sequence >= lowest && sequence > 0 && out.len() < limit {
            match stream.get_raw_message(sequence).await {
                Ok(message) => {
                    let key = message
                        .subject
                        .strip_prefix(prefix.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let removed = message.headers.get("KV-Operation").is_some();
                    // A revision that does not verify is passed over: an earlier one of
                    // the same invocation is its record.
                    let body = if removed {
                        Some(&message.payload[..0])
                    } else {
                        match self.trust.open(Purpose::Invocation, &key, &message.payload) {
                            Ok(body) => Some(body),
                            Err(why) => {
                                self.reject(Purpose::Invocation, &key, &why);
                                None
                            }
                        }
                    };
                    if let Some(body) = body {
                        if seen.insert(key) && !removed {
                            if let Ok(record) = serde_json::from_slice::<SharedInvocation>(body) {
                                if function.is_none_or(|f| record.function == f) {
                                    out.push(record);
                                }
                            }
                        }
                    }
                }
                // A revision since superseded or removed: a gap in the stream.
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(failed(e.to_string())),
            }
            sequence -= 1;
        }
        out.sort_by(|a, b| b.created_ns.cmp(&a.created_ns).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Removes an ended invocation's record from the cluster (whichever node ran it).
    pub(crate) async fn delete_invocation(
        &self,
        id: &str,
    ) -> Result<baton_store::Removal, ClusterError> {
        Ok(match self.invocation(id).await? {
            None => baton_store::Removal::Unknown,
            Some(record) if record.state.ended() => {
                self.invocations
                    .delete(id)
                    .await
                    .map_err(|e| js(format!("removing invocation {id}"))(e.to_string()))?;
                baton_store::Removal::Removed
            }
            Some(record) => baton_store::Removal::NotEnded(record.state),
        })
    }

    /// An asynchronous invocation's record, from whichever node ran it.
    pub(crate) async fn invocation(
        &self,
        id: &str,
    ) -> Result<Option<SharedInvocation>, ClusterError> {
        Ok(self
            .verified_invocation(id)
            .await?
            .map(|(record, _)| record))
    }

    /// An invocation's latest record that verifies, with the revision of its latest entry
    /// (a forged one included: a compare-and-set writes over it). `None`: no record, or
    /// removed.
    async fn verified_invocation(
        &self,
        id: &str,
    ) -> Result<Option<(SharedInvocation, u64)>, ClusterError> {
        let failed = |e: String| js(format!("reading invocation {id}"))(e);
        let entry = self
            .invocations
            .entry(id)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let latest = entry.revision;
        match self.trust.open(Purpose::Invocation, id, &entry.value) {
            Ok(body) => {
                return Ok(serde_json::from_slice(body).ok().map(|r| (r, latest)));
            }
            Err(why) => self.reject(Purpose::Invocation, id, &why),
        }
        // The earlier revisions, oldest first: the last that verifies is the record.
        let mut history = self
            .invocations
            .history(id)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut found = None;
        while let Some(entry) = history.next().await {
            let Ok(entry) = entry else { continue };
            if entry.operation != kv::Operation::Put {
                found = None;
                continue;
            }
            if let Ok(body) = self.trust.open(Purpose::Invocation, id, &entry.value) {
                if let Ok(record) = serde_json::from_slice::<SharedInvocation>(body) {
                    found = Some(record);
                }
            }
        }
        Ok(found.map(|record| (record, latest)))
    }
}

/// Takes invocations from the work queue, at most `workers` at once on this node (it asks
/// only for as many as it has room for, so none waits here while another node is idle).
pub(super) async fn run_queued(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
    workers: usize,
) -> Result<(), ClusterError> {
    let stream = cluster
        .context
        .get_stream(WORK)
        .await
        .map_err(|e| js(format!("stream {WORK}"))(e.to_string()))?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            "workers",
            consumer::pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: QUEUE_LIMIT,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| js("consumer workers")(e.to_string()))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(workers));
    loop {
        let Ok(first) = Arc::clone(&slots).acquire_owned().await else {
            return Ok(());
        };
        let room = 1 + slots.available_permits();
        let batch = consumer
            .batch()
            .max_messages(room)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!("cluster: fetching invocations: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut permit = Some(first);
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!("cluster: invocations: {error}");
                    continue;
                }
            };
            let slot = match permit.take() {
                Some(slot) => slot,
                None => match Arc::clone(&slots).acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return Ok(()),
                },
            };
            let Some(state) = state.upgrade() else {
                return Ok(());
            };
            let cluster = Arc::clone(&cluster);
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(error) = run_one(&cluster, state, message).await {
                    tracing::error!("cluster: {error}");
                }
            });
        }
    }
}

/// Claims, runs and records one queued invocation, keeping its message alive meanwhile.
async fn run_one(
    cluster: &Arc<Cluster>,
    state: Arc<AppState>,
    message: jetstream::Message,
) -> Result<(), ClusterError> {
    let header = |name: &str| header(message.headers.as_ref(), name);
    let (Some(id), Some(function)) = (header("Baton-Id"), header("Baton-Function")) else {
        tracing::warn!("cluster: a queued invocation without its id or function is dropped");
        let _ = message.ack_with(jetstream::AckKind::Term).await;
        return Ok(());
    };
    if let Err(why) = cluster.trust.check(
        Purpose::Work,
        &[id.as_bytes(), function.as_bytes(), &message.payload],
        header(forward::SIGNATURE).as_deref(),
    ) {
        // Not queued by a node of this cluster: dropped unrun, its record untouched.
        cluster.reject(Purpose::Work, &id, &why);
        let _ = message.ack_with(jetstream::AckKind::Term).await;
        return Ok(());
    }
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let Some((mut record, revision)) = cluster.verified_invocation(&id).await? else {
        // Its record expired (a day), or none verifies: nothing to report to.
        let _ = message.ack().await;
        return Ok(());
    };
    if record.id != id || record.function != function {
        cluster.reject(
            Purpose::Work,
            &id,
            &"names another invocation than its record",
        );
        let _ = message.ack_with(jetstream::AckKind::Term).await;
        return Ok(());
    }
    match record.state {
        InvocationState::Succeeded | InvocationState::Failed => {
            // Already ended (a duplicate delivery): acknowledged, not run again.
            let _ = message.ack().await;
            return Ok(());
        }
        InvocationState::Running => {
            // The queue gives a claimed invocation to another node only when its node
            // stopped signalling: that node is gone.
            let gone = record.node.clone();
            if !record.pure || delivered > MAX_RUNS {
                record.state = InvocationState::Failed;
                record.error = Some(if record.pure {
                    format!(
                        "interrupted {} times (last on node {gone}); not run again",
                        record.runs
                    )
                } else {
                    format!(
                        "interrupted: node {gone} stopped while running it; not re-run because the function is not pure"
                    )
                });
                record.node = cluster.node.clone();
                let value = cluster.sealed(Purpose::Invocation, &id, &record, "recording")?;
                if cluster
                    .invocations
                    .update(id.as_str(), value.into(), revision)
                    .await
                    .is_ok()
                {
                    cluster
                        .counters
                        .invocations_interrupted
                        .fetch_add(1, Ordering::Relaxed);
                }
                let _ = message.ack().await;
                return Ok(());
            }
            cluster
                .counters
                .invocations_rerun
                .fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    record.state = InvocationState::Running;
    record.node = cluster.node.clone();
    record.runs += 1;
    let claim = cluster.sealed(Purpose::Invocation, &id, &record, "claiming")?;
    let revision = match cluster
        .invocations
        .update(id.as_str(), claim.into(), revision)
        .await
    {
        Ok(revision) => revision,
        Err(_) => {
            // Another node claimed it first; its outcome will be recorded there.
            let _ = message.ack().await;
            return Ok(());
        }
    };
    let message = Arc::new(message);
    let alive = {
        let message = Arc::clone(&message);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = message.ack_with(jetstream::AckKind::Progress).await;
            }
        })
    };
    let payload = message.payload.to_vec();
    let runner = Arc::clone(&state);
    let name = function.clone();
    let ran =
        tokio::task::spawn_blocking(move || api::run_invocation(&runner, &name, &payload, None))
            .await;
    alive.abort();
    let (status, body) = match ran {
        Ok(outcome) => outcome,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": format!("the invocation's thread failed: {e}") }),
        ),
    };
    if status == StatusCode::OK {
        record.state = InvocationState::Succeeded;
        record.error = None;
    } else {
        record.state = InvocationState::Failed;
        record.error = body["error"].as_str().map(str::to_owned);
    }
    record.response = body;
    let value = cluster.sealed(
        Purpose::Invocation,
        &id,
        &record,
        "recording the outcome of",
    )?;
    cluster
        .invocations
        .update(id.as_str(), value.into(), revision)
        .await
        .map_err(|e| js(format!("recording the outcome of {id}"))(e.to_string()))?;
    cluster
        .counters
        .invocations_run
        .fetch_add(1, Ordering::Relaxed);
    let _ = message.double_ack().await;
    Ok(())
}
