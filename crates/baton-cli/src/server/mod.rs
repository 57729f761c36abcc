//! `baton serve`, what every command that talks to a running server shares (the remote,
//! the connection, errors shown safely), and those commands (`deploy`, `invoke`, `logs`,
//! `top`: `talk.rs`).

mod talk;
pub use talk::*;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use baton_core::policy::spec::{PolicyName, PolicySpec};
use baton_server::client::{Client, Response};
use baton_server::{RunningServer, ServerConfig};
use clap::Args;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the server is and how to authenticate.
#[derive(Debug, Args)]
pub struct Remote {
    /// The server: http://HOST[:PORT], https://HOST[:PORT] or HOST:PORT (a private CA's
    /// certificates: BATON_CA_CERT=ca.pem).
    #[arg(
        long,
        global = true,
        env = "BATON_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// The bearer token.
    #[arg(long, global = true, env = "BATON_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    pub fn client(&self) -> Result<Client> {
        connect(&self.server, self.token.clone())
    }
}

/// A client for the server `url` as typed, trusting the CA certificates in the PEM file
/// `BATON_CA_CERT` names (for a server behind TLS with a private CA), if set.
pub fn connect(url: &str, token: Option<String>) -> Result<Client> {
    let client = Client::new(url, token)?;
    Ok(match std::env::var_os("BATON_CA_CERT") {
        Some(path) if !path.is_empty() => client.with_ca_file(std::path::Path::new(&path))?,
        _ => client,
    })
}

/// The server answered, and not with a success: what was asked failed there (the command
/// exits with [`crate::EXIT_FAILED_THERE`]).
#[derive(Debug)]
pub struct FailedThere {
    /// What was asked.
    pub what: String,
    /// The HTTP status.
    pub status: u16,
    /// The server's reason.
    pub message: String,
}

impl std::fmt::Display for FailedThere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: HTTP {}: {}", self.what, self.status, self.message)
    }
}

impl std::error::Error for FailedThere {}

/// Fails with the server's own error message unless the status is a success.
/// `text` fit for a terminal: control characters (escape sequences, bells, carriage
/// returns) written as `\u{…}` escapes; line breaks and tabs kept. What a server says can
/// come from a function or an ingested log.
pub(crate) fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if unsafe_char(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

pub(crate) fn checked(response: Response, what: &str) -> Result<Response> {
    if (200..300).contains(&response.status) {
        return Ok(response);
    }
    let message = response.json()["error"]
        .as_str()
        .map_or_else(|| response.text(), str::to_owned);
    // A function's error is the function's text: never raw control bytes on a terminal.
    let message = shown(&message).into_owned();
    Err(FailedThere {
        what: what.to_owned(),
        status: response.status,
        message,
    }
    .into())
}

/// `baton serve`. Every flag has an environment variable (`BATON_` and its name).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BATON_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the store, uploaded modules and compiled modules live.
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton-data")]
    data_dir: PathBuf,
    /// Bearer token clients must send.
    #[arg(
        long,
        env = "BATON_TOKEN",
        hide_env_values = true,
        conflicts_with = "no_auth"
    )]
    token: Option<String>,
    /// Serve without a token (loopback addresses only).
    #[arg(long, env = "BATON_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    no_auth: bool,
    /// Pre-warming policy: none, ttl, histogram, greedy-dual, next, mlp or chain (as
    /// `baton sim` runs them).
    #[arg(long, env = "BATON_POLICY", default_value = "chain")]
    policy: PolicyName,
    /// The policy's knob: multiplies its main setting (see `baton sim --help`).
    #[arg(long, env = "BATON_POLICY_KNOB", default_value_t = 1.0)]
    policy_knob: f64,
    /// Which idle worker of a function a call takes: `recent` (idle the shortest time: a
    /// burst's surplus ages out) or `oldest` (every worker renewed in turn: fewer cold
    /// starts, more idle memory). `baton sim --reuse` models the same.
    #[arg(long, env = "BATON_REUSE", default_value_t)]
    reuse: baton_core::exec::Reuse,
    /// Keep a finished instance this long, seconds, instead of the policy's own setting
    /// (`ttl`: 10 min × knob; `chain`: 1 min × knob, 10 min × knob for entry tasks, and
    /// shorter or re-warmed where a function's gaps show it pays).
    #[arg(long, env = "BATON_KEEP_ALIVE_SECS")]
    keep_alive_secs: Option<f64>,
    /// Requests waiting or running per function before 429.
    #[arg(long, env = "BATON_QUEUE_DEPTH", default_value_t = 64)]
    queue_depth: usize,
    /// Largest request body, MiB.
    #[arg(long, env = "BATON_MAX_BODY_MIB", default_value_t = 16)]
    max_body_mib: usize,
    /// HTTP connections served at once; past it, new ones wait in the kernel's backlog.
    #[arg(long, env = "BATON_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a client has to send a request's head; an idle keep-alive connection is
    /// closed after as long.
    #[arg(long, env = "BATON_HEADER_TIMEOUT_SECS", default_value_t = 30.0)]
    header_timeout_secs: f64,
    /// Seconds a client has to send a request's whole body, once its head has arrived
    /// (408 past it).
    #[arg(long, env = "BATON_BODY_TIMEOUT_SECS", default_value_t = 60.0)]
    body_timeout_secs: f64,
    /// Keep execution records this long (`90s`, `30m`, `12h`, `7d`; `forever`): older ones
    /// are pruned after each snapshot (never one a restart still replays).
    #[arg(long, env = "BATON_RETAIN_RECORDS", default_value = "7d", value_parser = parse_age)]
    retain_records: RetainAge,
    /// Keep at most this many MiB of execution records (0: no bound); the oldest go first.
    #[arg(long, env = "BATON_RETAIN_MIB", default_value_t = 1024)]
    retain_mib: u64,
    /// Seconds between snapshots of the learned graph.
    #[arg(long, env = "BATON_SNAPSHOT_SECS", default_value_t = 30)]
    snapshot_secs: u64,
    /// Accept process functions over HTTP: their code (a tar.gz) runs in the sandbox as
    /// an unprivileged user. Without it, only wasm functions are deployed.
    #[arg(
        long,
        env = "BATON_ALLOW_PROCESS_FUNCTIONS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_process_functions: bool,
    /// On a host with no working sandbox (no bubblewrap, or its probe fails), run process
    /// functions unjailed, as this server's user. Without it such a host refuses them at
    /// deploy and at every start, and says how to install the sandbox.
    #[arg(
        long,
        env = "BATON_INSECURE_UNJAILED_PROCESS_FUNCTIONS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    insecure_unjailed_process_functions: bool,
    /// Join a baton cluster through these NATS servers (JetStream on; comma-separated
    /// `nats://[USER:PASSWORD@]HOST:PORT`; a password is never printed): functions,
    /// sequences, the learned graph and asynchronous invocations are shared with every
    /// node. Without it, one node and SQLite only.
    #[arg(long, env = "BATON_CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
    /// This node's name in the cluster (letters, digits, `-`, `_`; unique). Default: the
    /// host's name and the port.
    #[arg(long, env = "BATON_NODE_NAME", requires = "cluster")]
    node_name: Option<String>,
    /// Talk to the NATS servers over TLS, trusting the CA certificates in this PEM file
    /// (`tls://HOST:PORT` asks for TLS too, trusting the system's roots).
    #[arg(long, env = "BATON_CLUSTER_CA", requires = "cluster")]
    cluster_ca: Option<PathBuf>,
    /// This node's TLS client certificate (PEM), for NATS servers that verify clients.
    #[arg(long, env = "BATON_CLUSTER_CERT", requires_all = ["cluster", "cluster_key"])]
    cluster_cert: Option<PathBuf>,
    /// The key of `--cluster-cert` (PEM).
    #[arg(long, env = "BATON_CLUSTER_KEY", requires = "cluster_cert")]
    cluster_key: Option<PathBuf>,
    /// NATS credentials: a `.creds` file, or a file holding a user's nkey seed (`baton
    /// cluster init` writes `node.nk`). A node refuses a NATS server that admits clients
    /// without credentials.
    #[arg(long, env = "BATON_CLUSTER_CREDS", requires = "cluster")]
    cluster_creds: Option<PathBuf>,
    /// The cluster's signing key (`baton cluster init` writes `cluster.key`; mode 600):
    /// every registry entry, invocation record and message a node writes is signed with
    /// it, and nothing read from NATS is believed without it.
    #[arg(long, env = "BATON_CLUSTER_SIGNING_KEY", requires = "cluster")]
    cluster_signing_key: Option<PathBuf>,
    /// Join a NATS server that admits anonymous clients, and run without a signing key if
    /// none is given: whoever reaches NATS then owns the cluster. A private test network
    /// only.
    #[arg(long, requires = "cluster")]
    cluster_insecure: bool,
    /// How often, at most, this node publishes a summary of its traffic per application,
    /// ms (at once after a quiet spell). Longer in a large cluster: every node receives
    /// every node's summaries (docs/scale.md).
    #[arg(long, env = "BATON_CLUSTER_SUMMARY_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=60_000), requires = "cluster")]
    cluster_summary_ms: u64,
    /// Learn calls that name no caller (foreign logs posted to /v1/logs, functions invoked
    /// one by one) with callers mined from timing: a call of another function of the same
    /// app starting within this many ms before it, and running around it when run times
    /// are exact, by a dependency seen often enough not to be chance
    /// (`baton_core::mining`). Off by default: each such call is a request of its own.
    #[arg(long, env = "BATON_MINE_CALLERS_MS", value_parser = parse_mine_window)]
    mine_callers_ms: Option<f64>,
    /// Send every execution record as a span to this OTLP/HTTP collector
    /// (`http://HOST:4318`; protobuf to `/v1/traces`), on the invocations' trace ids.
    #[arg(long, env = "BATON_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// `--mine-callers-ms`: a window from 1 ms to 10 min.
fn parse_mine_window(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ms) if ms.is_finite() && (1.0..=600_000.0).contains(&ms) => Ok(ms),
        _ => Err(format!("`{text}`: expected a window in ms, 1 to 600000")),
    }
}

/// `--retain-records`: how long records are kept (`None`: forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RetainAge(Option<Duration>);

/// `--retain-records`: a number with a unit (`s`, `m`, `h`, `d`), or `forever`.
fn parse_age(text: &str) -> Result<RetainAge, String> {
    if text == "forever" {
        return Ok(RetainAge(None));
    }
    let expected = || format!("{text:?}: expected a number with s, m, h or d (7d), or forever");
    let unit = text.chars().last().ok_or_else(expected)?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(expected()),
    };
    let number: u64 = text[..text.len() - 1].parse().map_err(|_| expected())?;
    if number == 0 {
        return Err(format!(
            "{text:?}: a retention of 0 keeps nothing; say forever or more"
        ));
    }
    number
        .checked_mul(seconds)
        .map(|s| RetainAge(Some(Duration::from_secs(s))))
        .ok_or_else(expected)
}

pub fn serve(args: ServeArgs) -> Result<()> {
    if args.token.is_none() && !args.no_auth {
        bail!("give --token T (or BATON_TOKEN), or --no-auth on a loopback address");
    }
    let mut config = ServerConfig::new(args.listen, args.data_dir.clone());
    config.token = args.token;
    config.policy = PolicySpec::with_knob(args.policy, args.policy_knob)?;
    config.reuse = args.reuse;
    if let Some(secs) = args.keep_alive_secs {
        if !(secs.is_finite() && secs >= 0.0) {
            bail!("--keep-alive-secs {secs}: expected a number of seconds, 0 or more");
        }
        config.policy.keep_alive_us = Some((secs * 1e6) as u64);
    }
    config.queue_depth = args.queue_depth;
    config.max_body_bytes = args.max_body_mib << 20;
    if args.max_connections == 0 {
        bail!("--max-connections 0: expected at least 1");
    }
    config.max_connections = args.max_connections;
    let secs = args.header_timeout_secs;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        bail!("--header-timeout-secs {secs}: expected a number of seconds above 0, at most a day");
    }
    config.header_read_timeout = Duration::from_secs_f64(secs);
    let secs = args.body_timeout_secs;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        bail!("--body-timeout-secs {secs}: expected a number of seconds above 0, at most a day");
    }
    config.body_read_timeout = Duration::from_secs_f64(secs);
    config.retention = baton_server::Retention {
        age: args.retain_records.0,
        bytes: (args.retain_mib > 0).then_some(args.retain_mib << 20),
    };
    config.snapshot_every = Duration::from_secs(args.snapshot_secs.max(1));
    config.allow_process_functions = args.allow_process_functions;
    config.unjailed_process_functions = args.insecure_unjailed_process_functions;
    config.otlp_endpoint = args.otlp_endpoint.clone();
    config.mine_callers = args
        .mine_callers_ms
        .map(|ms| baton_core::mining::MinerConfig::new((ms * 1000.0) as u64, true));
    if !args.cluster.is_empty() {
        config.cluster = Some(baton_server::ClusterConfig {
            servers: args.cluster.clone(),
            node: args.node_name.clone().unwrap_or_default(),
            ca: args.cluster_ca.clone(),
            client_cert: args.cluster_cert.clone().zip(args.cluster_key.clone()),
            creds: args.cluster_creds.clone(),
            signing_key: args.cluster_signing_key.clone(),
            insecure: args.cluster_insecure,
            summary_every: Duration::from_millis(args.cluster_summary_ms),
        });
    }
    let server = RunningServer::start(config)
        .with_context(|| format!("starting the server in {}", args.data_dir.display()))?;
    eprint!("{}", server.detection);
    let r = &server.restored;
    eprintln!(
        "restored from {}: {} functions, {} sequences, {} (+{} records replayed), async: {} re-run, {} failed",
        args.data_dir.display(),
        r.functions,
        r.sequences,
        if r.snapshot { "a graph snapshot" } else { "no snapshot" },
        r.replayed_records,
        r.rerun,
        r.failed
    );
    if r.removed_uploads > 0 {
        eprintln!(
            "removed {} uploads no function uses any more",
            r.removed_uploads
        );
    }
    if r.reclaimed_groups > 0 {
        eprintln!(
            "removed {} worker groups left by a killed predecessor",
            r.reclaimed_groups
        );
    }
    for skipped in &r.skipped {
        eprintln!("not restored: {skipped}");
    }
    if args.allow_process_functions && !server.sandboxed {
        if args.insecure_unjailed_process_functions {
            eprintln!(
                "WARNING: --insecure-unjailed-process-functions: uploaded code runs UNJAILED \
                 as this server's user"
            );
        } else {
            eprintln!("process functions are REFUSED: no working sandbox on this host (see above)");
        }
    }
    if let Some(node) = server.cluster_node() {
        let servers: Vec<String> = args
            .cluster
            .iter()
            .map(|s| baton_server::cluster::redact(s))
            .collect();
        eprintln!("joined the cluster at {} as node {node}", servers.join(","));
    }
    eprintln!(
        "baton listening on http://{} (policy {:?})",
        server.addr, args.policy
    );
    server.serve_until_signal()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped_and_plain_text_is_untouched() {
        assert!(matches!(
            shown("plain → text\n\tok"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            shown("red\u{1b}[31m bell\u{7} cr\r"),
            "red\\u{1b}[31m bell\\u{7} cr\\u{d}"
        );
    }

    #[test]
    fn a_retention_age_is_a_number_with_a_unit_or_forever() {
        let age = |s| Ok(RetainAge(Some(Duration::from_secs(s))));
        assert_eq!(parse_age("7d"), age(7 * 86_400));
        assert_eq!(parse_age("90s"), age(90));
        assert_eq!(parse_age("forever"), Ok(RetainAge(None)));
        for bad in ["", "7", "d", "0h", "7w", "-1d", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
