//! Synchronous invocations in a cluster, routed to warmth: each node tells the others which
//! process functions it holds idle workers of (`baton-nodes`, every [`WARM_EVERY`] when it
//! changes, at least every second), and a node asked to run one it holds no idle worker of,
//! whose cold start here would cost more than [`FORWARD_MIN`], hands the invocation to a
//! node that holds one (NATS request-reply on `baton.node.<name>.invoke`). The whole chain
//! then runs there, so its hand-offs stay in one process. A wasm function is never
//! forwarded: instantiating it here costs microseconds, less than the hop.
//!
//! A node that is busy (all its forwarded-invocation slots taken), gone or slow to answer
//! is not waited for: the invocation runs here, cold.
//!
//! Warm sets, forwarded calls and their answers are signed (`trust.rs`): a call binds a
//! fresh nonce, its answer that nonce, so a client that may subscribe to a node's subject
//! can neither run functions there nor answer in its place (a forged answer is passed
//! over for the node's own).

use super::*;
use std::collections::{BTreeMap, HashMap};

/// The node's idle workers per function, as told to the others.
pub const NODES: &str = "baton-nodes";
/// How often a node looks at its idle workers to tell a change.
pub const WARM_EVERY: Duration = Duration::from_millis(250);
/// A node repeats its warm set this often even without a change (a heartbeat).
const WARM_REPEAT: Duration = Duration::from_secs(1);
/// A warm set older than this is not trusted (its node may be gone).
pub const WARM_STALE: Duration = Duration::from_secs(3);
/// A cold start expected to cost less than this runs here rather than hop (a loopback
/// NATS request-reply costs ~0.1–0.3 ms).
pub const FORWARD_MIN: Duration = Duration::from_millis(2);

/// What a node tells: its idle workers per function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct WarmSet {
    warm: BTreeMap<String, usize>,
    /// When it was told (ns since the epoch).
    #[serde(default)]
    told_ns: u64,
}

/// What this node knows of the others' warm sets.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    warm: HashMap<String, (BTreeMap<String, usize>, Instant)>,
}

/// A forwarded invocation's reply.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    status: u16,
    body: serde_json::Value,
}

impl Cluster {
    /// The node to hand a synchronous invocation of `name` to, if one should have it: this
    /// node holds no idle worker of its first function, a cold start of it here is a
    /// process start expected to cost [`FORWARD_MIN`] or more (or not measured yet), and
    /// another node told recently that it holds one (the one with the most).
    pub(crate) fn forward_target(&self, state: &AppState, name: &str) -> Option<String> {
        // The function a request for `name` starts with (a sequence's first step).
        let first =
            (state.director.steps_of(name).into_iter().next()).unwrap_or_else(|| name.to_owned());
        let pool = state.director.pool();
        let spec = pool.spec(&first)?;
        if !matches!(
            spec.kind,
            baton_runtime::manifest::FunctionKind::Process { .. }
        ) || pool.idle_count(&first) > 0
            || pool
                .cold_start_estimate(&first)
                .is_some_and(|cold| cold < FORWARD_MIN)
        {
            return None;
        }
        let peers = self.peers.lock().ok()?;
        peers
            .warm
            .iter()
            .filter(|(node, (_, seen))| **node != self.node && seen.elapsed() < WARM_STALE)
            .filter_map(|(node, (warm, _))| Some((warm.get(&first).copied()?, node)))
            .filter(|(idle, _)| *idle > 0)
            .max()
            .map(|(_, node)| node.clone())
    }

    /// Runs `name` on `peer` and returns its answer, with `node` added.
    pub(crate) async fn forward(
        &self,
        peer: &str,
        name: &str,
        payload: &[u8],
        caller: Option<TraceParent>,
        timeout: Duration,
    ) -> Forwarded {
        let subject = format!("baton.node.{peer}.invoke");
        // When it was sent and a unique token: a node refuses a call it has seen, or one
        // older than FORWARD_WINDOW (a captured call put again).
        let nonce = format!(
            "{}.{}",
            now_ns(),
            async_nats::Client::new_inbox(&self.context.client())
        );
        let traceparent = caller.map(|c| c.to_string()).unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert("Baton-Function", name);
        headers.insert("Baton-Nonce", nonce.as_str());
        if !traceparent.is_empty() {
            headers.insert("traceparent", traceparent.as_str());
        }
        let signed = [
            subject.as_bytes(),
            name.as_bytes(),
            traceparent.as_bytes(),
            nonce.as_bytes(),
            payload,
        ];
        if let Some(signature) = self.trust.sign(Purpose::Forward, &signed) {
            headers.insert(SIGNATURE, signature.as_str());
        }
        let client = self.context.client();
        let not_taken = |error: &dyn std::fmt::Display| {
            // No connection: nothing ran there.
            tracing::warn!("cluster: `{name}` not forwarded to {peer}: {error}");
            Forwarded::NotTaken
        };
        let inbox = client.new_inbox();
        let mut answers = match client.subscribe(inbox.clone()).await {
            Ok(answers) => answers,
            Err(error) => return not_taken(&error),
        };
        if let Err(error) = client
            .publish_with_reply_and_headers(subject, inbox, headers, payload.to_vec().into())
            .await
        {
            return not_taken(&error);
        }
        // The first answer that verifies; forged ones are counted and passed over.
        let deadline = tokio::time::Instant::now() + timeout;
        let message = loop {
            let message = match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return not_taken(&"the connection closed"),
                Err(_) => {
                    return Forwarded::Lost(format!(
                        "handed to node {peer}, which did not answer within {} ms",
                        timeout.as_millis()
                    ));
                }
            };
            if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                // The node is gone: nothing ran there.
                return not_taken(&"no responders");
            }
            let signature = header(message.headers.as_ref(), SIGNATURE);
            match self.trust.check(
                Purpose::Answer,
                &[nonce.as_bytes(), &message.payload],
                signature.as_deref(),
            ) {
                Ok(()) => break message,
                Err(why) => self.reject(Purpose::Answer, peer, &why),
            }
        };
        let Some((status, reply)) = serde_json::from_slice::<Reply>(&message.payload)
            .ok()
            .and_then(|r| Some((StatusCode::from_u16(r.status).ok()?, r)))
        else {
            return Forwarded::Lost(format!("node {peer} answered something unreadable"));
        };
        if status == StatusCode::SERVICE_UNAVAILABLE && reply.body["busy"] == true {
            return Forwarded::NotTaken;
        }
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut body = reply.body;
        if let Some(fields) = body.as_object_mut() {
            fields.insert("node".into(), peer.into());
        }
        Forwarded::Answered(status, body)
    }
}

/// What became of a forwarded invocation.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// The peer ran it: its status and body.
    Answered(StatusCode, serde_json::Value),
    /// The peer did not take it (busy, gone): run it here.
    NotTaken,
    /// It may have run there, but no answer came: run it here only if it is pure.
    Lost(String),
}

/// How old a forwarded call may be when it arrives (its nonce carries when it was sent;
/// nodes' clocks must agree this well). Within it, each nonce is taken once.
pub const FORWARD_WINDOW: Duration = Duration::from_secs(30);

/// Whether a forwarded call's `nonce` is fresh: sent within [`FORWARD_WINDOW`] of `now`
/// (ns) and not in `seen`, which it then joins (entries older than the window go).
fn fresh_nonce(seen: &mut HashMap<String, u64>, nonce: &str, now: u64) -> bool {
    let window = FORWARD_WINDOW.as_nanos() as u64;
    let Some(sent) = nonce
        .split_once('.')
        .and_then(|(t, _)| t.parse::<u64>().ok())
    else {
        return false;
    };
    if sent.abs_diff(now) > window {
        return false;
    }
    if seen.len() >= 4096 {
        seen.retain(|_, at| now.saturating_sub(*at) <= window);
    }
    seen.insert(nonce.to_owned(), sent).is_none()
}

/// The header that carries a message's signature.
pub(super) const SIGNATURE: &str = "Baton-Signature";

/// Answers the invocations other nodes hand to this one, at most `workers` at once (past
/// that it answers "busy" at once and the asker runs the invocation itself).
pub(super) async fn serve_forwarded(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
    workers: usize,
) -> Result<(), ClusterError> {
    let client = cluster.context.client();
    let subject = format!("baton.node.{}.invoke", cluster.node);
    let mut requests = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| js(format!("subscribing to {subject}"))(e.to_string()))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(workers));
    let mut seen: HashMap<String, u64> = HashMap::new();
    while let Some(request) = requests.next().await {
        let Some(reply_to) = request.reply.clone() else {
            continue;
        };
        let header = |name: &str| header(request.headers.as_ref(), name);
        let nonce = header("Baton-Nonce").unwrap_or_default();
        let (function, traceparent) = (
            header("Baton-Function").unwrap_or_default(),
            header("traceparent").unwrap_or_default(),
        );
        let signed = [
            subject.as_bytes(),
            function.as_bytes(),
            traceparent.as_bytes(),
            nonce.as_bytes(),
            &request.payload,
        ];
        if let Err(why) =
            cluster
                .trust
                .check(Purpose::Forward, &signed, header(SIGNATURE).as_deref())
        {
            // Not from a node of this cluster: nothing runs, and no answer is owed.
            cluster.reject(Purpose::Forward, &function, &why);
            continue;
        }
        if cluster.trust.is_signed() && !fresh_nonce(&mut seen, &nonce, now_ns()) {
            cluster.reject(
                Purpose::Forward,
                &function,
                &"a call seen before or sent too long ago (a replay)",
            );
            continue;
        }
        let answer = {
            let (cluster, client, reply_to, nonce) = (
                Arc::clone(&cluster),
                client.clone(),
                reply_to.clone(),
                nonce.clone(),
            );
            move |reply: Reply| async move {
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                let mut headers = HeaderMap::new();
                if let Some(signature) = cluster
                    .trust
                    .sign(Purpose::Answer, &[nonce.as_bytes(), &body])
                {
                    headers.insert(SIGNATURE, signature.as_str());
                }
                let _ = client
                    .publish_with_headers(reply_to, headers, body.into())
                    .await;
            }
        };
        let Some(state) = state.upgrade().filter(|_| !function.is_empty()) else {
            answer(Reply {
                status: 400,
                body: serde_json::json!({ "error": "a forwarded invocation names no function" }),
            })
            .await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            answer(Reply {
                status: 503,
                body: serde_json::json!({ "error": "busy", "busy": true }),
            })
            .await;
            continue;
        };
        let caller = (!traceparent.is_empty())
            .then(|| TraceParent::parse(&traceparent).ok())
            .flatten();
        let cluster = Arc::clone(&cluster);
        tokio::spawn(async move {
            let _slot = slot;
            let payload = request.payload.to_vec();
            let ran = tokio::task::spawn_blocking(move || {
                api::run_invocation(&state, &function, &payload, caller)
            })
            .await;
            let reply = match ran {
                Ok((status, body)) => Reply {
                    status: status.as_u16(),
                    body,
                },
                Err(e) => Reply {
                    status: 500,
                    body: serde_json::json!({ "error": format!("the invocation's thread failed: {e}") }),
                },
            };
            cluster
                .counters
                .served_for_others
                .fetch_add(1, Ordering::Relaxed);
            answer(reply).await;
        });
    }
    Ok(())
}

/// Tells the others this node's idle workers per function: when they change, and every
/// [`WARM_REPEAT`] anyway.
pub(super) async fn tell_warm(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
) -> Result<(), ClusterError> {
    let mut told: Option<(WarmSet, Instant)> = None;
    let mut tick = tokio::time::interval(WARM_EVERY);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return Ok(());
        };
        let mut now = WarmSet::default();
        for idle in state.director.pool().idle() {
            *now.warm.entry(idle.function).or_default() += 1;
        }
        drop(state);
        let fresh = told
            .as_ref()
            .is_some_and(|(set, at)| set.warm == now.warm && at.elapsed() < WARM_REPEAT);
        if !fresh {
            now.told_ns = now_ns();
            // NATS unreachable: told again at the next tick (the others take this node's
            // last set as stale meanwhile).
            if let Err(error) = cluster
                .put_json(
                    &cluster.nodes,
                    Purpose::Node,
                    &cluster.node,
                    &now,
                    "telling the warm set",
                )
                .await
            {
                tracing::debug!("cluster: {error}");
                continue;
            }
            told = Some((now, Instant::now()));
        }
    }
}

/// Keeps [`Peers`] current from the other nodes' warm sets.
pub(super) async fn watch_peers(cluster: Arc<Cluster>) -> Result<(), ClusterError> {
    let mut watch = cluster
        .nodes
        .watch_with_history(">")
        .await
        .map_err(|e| js(format!("watching {NODES}"))(e.to_string()))?;
    while let Some(entry) = watch.next().await {
        let Ok(entry) = entry else { continue };
        let told = match entry.operation {
            kv::Operation::Put => {
                let Some(set) = cluster.opened::<WarmSet>(Purpose::Node, &entry.key, &entry.value)
                else {
                    continue;
                };
                // Seen when it was told, not when it arrived: a dead node's last set,
                // replayed to a node that joins later, is already stale; and a signed set
                // put again later by someone else is as old as its own signed time says.
                let now = now_ns() as i128;
                let age = (now - entry.created.unix_timestamp_nanos())
                    .max(now - set.told_ns as i128)
                    .max(0);
                let age = Duration::from_nanos(u64::try_from(age).unwrap_or(u64::MAX));
                let seen = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                Some((set.warm, seen))
            }
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let Ok(mut peers) = cluster.peers.lock() else {
            continue;
        };
        match told {
            Some(told) => peers.warm.insert(entry.key, told),
            None => peers.warm.remove(&entry.key),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_call_is_taken_once_and_only_while_fresh() {
        let mut seen = HashMap::new();
        let now = 1_000_000_000_000u64;
        let window = FORWARD_WINDOW.as_nanos() as u64;
        let nonce = |t: u64, id: &str| format!("{t}.{id}");
        assert!(fresh_nonce(&mut seen, &nonce(now, "a"), now));
        assert!(!fresh_nonce(&mut seen, &nonce(now, "a"), now + 1), "twice");
        assert!(fresh_nonce(&mut seen, &nonce(now, "b"), now + 1));
        assert!(
            !fresh_nonce(&mut seen, &nonce(now - window - 1, "c"), now),
            "too old"
        );
        assert!(
            !fresh_nonce(&mut seen, &nonce(now + window + 1, "d"), now),
            "from the future"
        );
        assert!(!fresh_nonce(&mut seen, "no-time", now));
        // Bounded: old entries go once the set is large.
        for i in 0..5000 {
            fresh_nonce(&mut seen, &nonce(now, &format!("x{i}")), now);
        }
        let later = now + 2 * window;
        assert!(fresh_nonce(&mut seen, &nonce(later, "y"), later));
        assert!(seen.len() < 5000);
    }
}
