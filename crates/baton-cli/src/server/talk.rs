//! The commands that talk to a running server: `deploy` (manifests, apps, uploads),
//! `invoke`, `logs` (by function or trace) and `top`.

use super::*;

/// `baton deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Manifest files (TOML), or directories (each `.toml` in them, in name order), or an
    /// app (`baton.toml`, or a directory holding one: its functions, then its sequences);
    /// a wasm function's module is uploaded with it, and a process function runs in its
    /// manifest's directory.
    #[arg(required = true)]
    manifests: Vec<PathBuf>,
    #[command(flatten)]
    remote: Remote,
}

/// The request body deploying `path`: the manifest as written, with what the function
/// runs from: a wasm function's module, or a process function's directory (its `workdir`,
/// by default the manifest's own) packed as a tar.gz. The server opens no path of ours.
pub fn deploy_body(path: &Path) -> Result<Value> {
    let spec = baton_runtime::manifest::FunctionSpec::from_file(path)?;
    let manifest = std::fs::read_to_string(path)?;
    deploy_spec(&spec, &manifest)
}

/// [`deploy_body`] for a function already read: `manifest` as sent, `spec` with its paths
/// resolved.
pub fn deploy_spec(spec: &baton_runtime::manifest::FunctionSpec, manifest: &str) -> Result<Value> {
    let mut body = json!({ "manifest": manifest });
    let engine = &base64::engine::general_purpose::STANDARD;
    match &spec.kind {
        baton_runtime::manifest::FunctionKind::Wasm { module } => {
            let bytes = std::fs::read(module)
                .with_context(|| format!("reading the module {}", module.display()))?;
            body["module_base64"] = Value::from(engine.encode(bytes));
        }
        baton_runtime::manifest::FunctionKind::Process { .. } => {
            let dir = spec.workdir.as_deref().unwrap_or(Path::new("."));
            let archive = baton_runtime::code::pack_dir(dir)?;
            body["code_base64"] = Value::from(engine.encode(archive));
        }
    }
    Ok(body)
}

/// Deploys the manifest at `path` to the server of `client`; returns the function's name
/// and the server's response (2xx, else an error with the server's reason).
pub fn deploy_file(client: &Client, path: &Path) -> Result<(String, Response)> {
    let body = deploy_body(path).with_context(|| format!("{}", path.display()))?;
    let name = baton_runtime::manifest::FunctionSpec::from_file(path)?.name;
    let response = put_function(
        client,
        &name,
        &body,
        &format!("deploying {}", path.display()),
    )?;
    Ok((name, response))
}

/// `PUT /v1/functions/{name}` with a deploy body; the server's refusal is an error saying
/// `what` failed.
pub fn put_function(client: &Client, name: &str, body: &Value, what: &str) -> Result<Response> {
    let response = client.request(
        "PUT",
        &format!("/v1/functions/{name}"),
        "application/json",
        body.to_string().as_bytes(),
    )?;
    checked(response, what)
}

/// The manifests `paths` name: files as given, and each directory's `.toml` files in name
/// order (an error for a directory with none).
fn manifests_of(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect();
        if found.is_empty() {
            bail!("{}: a directory with no .toml manifest", path.display());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

pub fn deploy(args: DeployArgs) -> Result<()> {
    let client = args.remote.client()?;
    // An app (baton.toml, or a directory holding one) deploys as a whole; other paths are
    // function manifests.
    let mut manifests = Vec::new();
    for path in &args.manifests {
        match crate::app::app_file(path) {
            Some(file) => {
                crate::app::deploy_app(&client, &crate::app::load(&file)?, &mut std::io::stdout())?
            }
            None => manifests.push(path.clone()),
        }
    }
    for path in &manifests_of(&manifests)? {
        let (name, response) = deploy_file(&client, path)?;
        let verb = if response.status == 201 {
            "deployed"
        } else {
            "replaced"
        };
        println!("{verb} {name}{}", crate::app::pending_note(&response));
    }
    Ok(())
}

/// `baton invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function or sequence.
    name: String,
    /// The payload: text, @FILE, or @- for standard input.
    #[arg(long, default_value = "")]
    data: String,
    /// Return at once with an invocation id.
    #[arg(long)]
    r#async: bool,
    /// Print the whole response document.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

/// A payload as given on the command line: text, `@FILE`, or `@-` for standard input.
pub fn payload(data: &str) -> Result<Vec<u8>> {
    Ok(match data.strip_prefix('@') {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading the payload from standard input")?;
            bytes
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading {path}"))?,
        None => data.as_bytes().to_vec(),
    })
}

pub fn invoke(args: InvokeArgs) -> Result<()> {
    let client = args.remote.client()?;
    let payload = payload(&args.data)?;
    let path = format!(
        "/v1/functions/{}/invoke{}",
        args.name,
        if args.r#async { "?async=true" } else { "" }
    );
    let response = client.request("POST", &path, "application/octet-stream", &payload)?;
    let document = response.json();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&document)?);
        return checked(response, "invoke").map(drop);
    }
    let response = checked(response, &format!("invoking {}", args.name))?;
    if args.r#async {
        println!("{}", document["id"].as_str().unwrap_or(""));
        return Ok(());
    }
    let _ = response;
    if let Some(text) = document["output"].as_str() {
        println!("{text}");
    } else if let Some(encoded) = document["output_base64"].as_str() {
        println!("(binary, base64) {encoded}");
    }
    let steps = document["steps"].as_array().cloned().unwrap_or_default();
    let path: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{} ({}, {} µs)",
                s["task"].as_str().unwrap_or("?"),
                s["warmth"].as_str().unwrap_or("?"),
                s["duration_us"]
            )
        })
        .collect();
    eprintln!(
        "{} in {} µs: {}",
        if document["cold"] == true {
            "cold"
        } else {
            "warm"
        },
        document["timings"]["total_us"],
        path.join(" → ")
    );
    Ok(())
}

/// `baton logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// How many of the last records to show.
    #[arg(long, default_value_t = 20)]
    tail: usize,
    /// Only this function's records.
    #[arg(long)]
    function: Option<String>,
    /// Only the records of this invocation: the id `invoke --async` printed, or the trace
    /// id an invocation answered with (`"trace"`), with its whole chain.
    #[arg(long, value_name = "ID")]
    invocation: Option<String>,
    /// Keep printing records as they come (twice a second), until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Instead, send these log files (schema v1 JSONL or OTLP/JSON) for the graph to learn.
    #[arg(long, num_args = 1..)]
    ingest: Vec<PathBuf>,
    #[command(flatten)]
    remote: Remote,
}

pub fn logs(args: LogsArgs) -> Result<()> {
    let client = args.remote.client()?;
    if !args.ingest.is_empty() {
        for path in &args.ingest {
            let body =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let response = client.request("POST", "/v1/logs", "application/x-ndjson", &body)?;
            let report = checked(response, &format!("ingesting {}", path.display()))?.json();
            println!(
                "{}: {} records, {} requests learned, {} lines skipped",
                path.display(),
                report["records"],
                report["requests"],
                report["skipped"]
            );
            for error in report["errors"].as_array().into_iter().flatten() {
                eprintln!("  {}", error.as_str().unwrap_or(""));
            }
        }
        return Ok(());
    }
    let mut query = String::new();
    if let Some(function) = &args.function {
        query.push_str(&format!(
            "&function={}",
            crate::commands::query_escape(function)
        ));
    }
    if let Some(id) = &args.invocation {
        query.push_str(&format!(
            "&trace={}",
            crate::commands::query_escape(&trace_of(&client, id)?)
        ));
    }
    let tail = args.tail;
    let response = checked(client.get(&format!("/v1/logs?tail={tail}{query}"))?, "logs")?;
    print!("{}", response.text());
    if !args.follow {
        return Ok(());
    }
    let mut last = response
        .header("baton-last-id")
        .and_then(|id| id.parse::<i64>().ok())
        .unwrap_or(0);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let path = format!("/v1/logs?tail=10000{query}&after={last}");
        let response = checked(client.get(&path)?, "logs")?;
        let text = response.text();
        if !text.is_empty() {
            print!("{text}");
            std::io::Write::flush(&mut std::io::stdout())?;
        }
        if let Some(id) = response
            .header("baton-last-id")
            .and_then(|id| id.parse().ok())
        {
            last = id;
        }
    }
}

/// The trace an invocation id names: an asynchronous invocation's id (a UUID) is looked
/// up; anything else is taken as a trace id.
fn trace_of(client: &Client, id: &str) -> Result<String> {
    if !(id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4) {
        return Ok(id.to_owned());
    }
    let invocation = checked(
        client.get(&format!(
            "/v1/invocations/{}",
            crate::commands::query_escape(id)
        ))?,
        &format!("invocation {id}"),
    )?
    .json();
    match invocation["response"]["trace"].as_str() {
        Some(trace) => Ok(trace.to_owned()),
        None => bail!(
            "invocation {id} is {} and has no records yet",
            invocation["state"].as_str().unwrap_or("unknown")
        ),
    }
}

/// `baton top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one view and exit.
    #[arg(long)]
    once: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    #[command(flatten)]
    remote: Remote,
}

pub fn top(args: TopArgs) -> Result<()> {
    let client = args.remote.client()?;
    loop {
        let pool = checked(client.get("/v1/pool")?, "pool")?.json();
        let counters = &pool["counters"];
        let steps = counters["steps"].as_u64().unwrap_or(0);
        let hits = counters["prewarmed_steps"].as_u64().unwrap_or(0)
            + counters["hits"].as_u64().unwrap_or(0);
        // Redrawn in place on a terminal; elsewhere (a pipe, a file) one view after another.
        if !args.once && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "baton at {}  policy {}  {}",
            client.url(),
            pool["policy"].as_str().unwrap_or("?"),
            pool["limits"].as_str().unwrap_or("")
        );
        println!(
            "steps {steps}  cold {}  pre-warmed {} (late {})  warm-pool hits {}  hit rate {:.1}%  prediction hit ratio {:.2}",
            counters["cold_steps"],
            counters["prewarmed_steps"],
            counters["late_prewarms"],
            counters["hits"],
            100.0 * hits as f64 / steps.max(1) as f64,
            pool["prediction_hit_ratio"].as_f64().unwrap_or(0.0)
        );
        println!(
            "pre-warms {}  wasted {}  evictions {}  preemptions {}  idle memory {} MiB",
            counters["prewarms"],
            counters["prewarms_wasted"],
            counters["evictions"],
            counters["preemptions"],
            pool["idle_memory_mib"]
        );
        println!("\nwarm instances:");
        for instance in pool["warm_instances"].as_array().into_iter().flatten() {
            println!(
                "  {:<20} pid {:<8} {:>5} MiB  {:<10} expires in {} ms",
                instance["function"].as_str().unwrap_or("?"),
                instance["pid"],
                instance["memory_mib"],
                instance["plan"]
                    .as_str()
                    .unwrap_or(if instance["prewarmed"] == true {
                        "prewarmed"
                    } else {
                        "kept"
                    }),
                instance["expires_in_ms"]
            );
        }
        println!("\nreservations:");
        for (plan, list) in pool["reservations"].as_object().into_iter().flatten() {
            for r in list.as_array().into_iter().flatten() {
                println!(
                    "  {plan:<12} {:<11} p={:.2} {} MiB {} mcpu cores {}",
                    r["kind"].as_str().unwrap_or("?"),
                    r["probability"].as_f64().unwrap_or(0.0),
                    r["memory_mib"],
                    r["cpu_millicores"],
                    r["cores"]
                );
            }
        }
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.1)));
    }
}
