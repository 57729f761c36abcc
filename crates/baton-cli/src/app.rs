//! The developer loop: an app manifest (`baton.toml`: functions and sequences in one file),
//! `baton new` (an app from a template, with its test), and `baton up` (a server on
//! loopback that deploys the app and redeploys it when its files change).
//!
//! ```toml
//! [[function]]            # as a function manifest; paths are taken from this file's directory
//! name = "hello"
//! kind = "process"
//! command = ["python3", "-u", "hello.py"]
//!
//! [sequences]
//! greet = ["hello", "shout"]
//! ```

use crate::server::{checked, deploy_spec, put_function};
use anyhow::{bail, Context, Result};
use baton_runtime::manifest::FunctionSpec;
use baton_server::client::Client;
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The app manifest's file name.
pub const APP_FILE: &str = "baton.toml";

/// One function of an app: its spec (paths resolved) and its manifest as the server
/// receives it.
#[derive(Debug, Clone)]
pub struct AppFunction {
    pub spec: FunctionSpec,
    pub manifest: String,
}

/// An app manifest, read.
#[derive(Debug, Clone)]
pub struct App {
    /// The directory of `baton.toml`.
    pub dir: PathBuf,
    pub functions: Vec<AppFunction>,
    pub sequences: BTreeMap<String, Vec<String>>,
}

/// The app manifest `path` names: `baton.toml` itself, or a directory holding one.
pub fn app_file(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        let file = path.join(APP_FILE);
        return file.is_file().then_some(file);
    }
    (path.file_name().is_some_and(|n| n == APP_FILE) && path.is_file()).then(|| path.to_owned())
}

/// Reads an app manifest; an error names the file and the function or field at fault.
pub fn load(file: &Path) -> Result<App> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not TOML", file.display()))?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let mut app = App {
        dir: dir.clone(),
        functions: Vec::new(),
        sequences: BTreeMap::new(),
    };
    for key in table.keys() {
        if key != "function" && key != "sequences" {
            bail!(
                "{}: unknown key `{key}` (an app has `[[function]]` tables and a `[sequences]` table)",
                file.display()
            );
        }
    }
    let functions = match table.get("function") {
        None => &Vec::new(),
        Some(toml::Value::Array(functions)) => functions,
        Some(_) => bail!(
            "{}: `function` must be `[[function]]` tables",
            file.display()
        ),
    };
    for (i, function) in functions.iter().enumerate() {
        let Some(function) = function.as_table() else {
            bail!("{}: function {} is not a table", file.display(), i + 1);
        };
        let manifest = toml::to_string(function)
            .with_context(|| format!("{}: function {}", file.display(), i + 1))?;
        let spec = FunctionSpec::from_toml_in(&manifest, &dir).with_context(|| {
            let name = function.get("name").and_then(|n| n.as_str()).unwrap_or("?");
            format!("{}: function {} (`{name}`)", file.display(), i + 1)
        })?;
        if app.functions.iter().any(|f| f.spec.name == spec.name) {
            bail!(
                "{}: function `{}` is declared twice",
                file.display(),
                spec.name
            );
        }
        app.functions.push(AppFunction { spec, manifest });
    }
    if let Some(sequences) = table.get("sequences") {
        let Some(sequences) = sequences.as_table() else {
            bail!(
                "{}: `sequences` must be a table of name = [steps]",
                file.display()
            );
        };
        for (name, steps) in sequences {
            let steps: Option<Vec<String>> = steps
                .as_array()
                .map(|s| s.iter().map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or(None);
            match steps {
                Some(steps) if !steps.is_empty() => {
                    app.sequences.insert(name.clone(), steps);
                }
                _ => bail!(
                    "{}: sequence `{name}` must be a non-empty list of function names",
                    file.display()
                ),
            }
        }
    }
    Ok(app)
}

/// What a deploy's line adds when a cluster node could not share it yet.
pub fn pending_note(response: &baton_server::client::Response) -> String {
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    match body["cluster_note"].as_str() {
        Some(note) if body["cluster"] == "pending" => format!(" ({})", crate::server::shown(note)),
        _ => String::new(),
    }
}

/// Deploys every function of `app`, then its sequences; writes one line each to `out`.
pub fn deploy_app(client: &Client, app: &App, out: &mut dyn std::io::Write) -> Result<()> {
    for function in &app.functions {
        let name = &function.spec.name;
        let body = deploy_spec(&function.spec, &function.manifest)
            .with_context(|| format!("function `{name}`"))?;
        let response = put_function(client, name, &body, &format!("deploying `{name}`"))?;
        let verb = if response.status == 201 {
            "deployed"
        } else {
            "replaced"
        };
        writeln!(out, "{verb} {name}{}", pending_note(&response))?;
    }
    for (name, steps) in &app.sequences {
        let body = serde_json::json!({ "steps": steps }).to_string();
        let response = client.request(
            "POST",
            &format!("/v1/sequences/{name}"),
            "application/json",
            body.as_bytes(),
        )?;
        checked(response, &format!("declaring the sequence `{name}`"))?;
        writeln!(out, "declared {name} = {}", steps.join(" → "))?;
    }
    Ok(())
}

/// Template languages for `baton new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A Python worker (the `baton_worker` helper is copied in) and a unittest.
    Python,
    /// A WebAssembly text guest (WASI preview 1) and a test script.
    Wat,
    /// A C guest built for `wasm32-wasi` with clang, and a test script.
    C,
}

/// `baton new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The app's name: its directory and its first function.
    name: String,
    /// The function's language.
    #[arg(long, value_enum, default_value = "python")]
    lang: Lang,
    /// Where to create the app's directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

const WORKER_HELPER: &str = include_str!("../../../examples/python/baton_worker.py");

/// The files of a new app (path in the app, contents).
fn template(name: &str, lang: Lang) -> Vec<(String, String)> {
    let readme = |run: &str, test: &str| {
        format!(
            "# {name}\n\nA baton app. `baton up` serves it on loopback and redeploys it when a file \
             changes;\nin another terminal:\n\n    baton invoke {name} --server 127.0.0.1:8080 --data hello\n    \
             baton logs --server 127.0.0.1:8080 --tail 5\n\n{run}Test: `{test}`.\n"
        )
    };
    match lang {
        Lang::Python => vec![
            (
                APP_FILE.into(),
                format!(
                    "# The app: its functions ([[function]], as function manifests) and sequences.\n\
                     [[function]]\nname = \"{name}\"\nkind = \"process\"\n\
                     command = [\"python3\", \"-u\", \"{name}.py\"]\npure = true\n\n\
                     # [sequences]\n# pipeline = [\"{name}\", \"another\"]\n"
                ),
            ),
            (
                format!("{name}.py"),
                format!(
                    "\"\"\"The function `{name}`: `handle` gets the payload, returns the output.\n\n\
                     baton runs it as a warm worker: `serve(handle)` (from baton_worker.py, beside this\n\
                     file) speaks baton's protocol on stdin/stdout, so print() goes to stderr, and a\n\
                     plain script that never calls serve() is not a baton function.\n\"\"\"\n\
                     import os\nimport sys\n\n\
                     sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n\
                     from baton_worker import serve  # noqa: E402\n\n\n\
                     def handle(payload: bytes) -> bytes:\n    \
                     return b\"hello, \" + (payload or b\"world\")\n\n\n\
                     if __name__ == \"__main__\":\n    serve(handle)\n"
                ),
            ),
            (
                format!("test_{name}.py"),
                format!(
                    "import unittest\n\nfrom {name} import handle\n\n\n\
                     class Test(unittest.TestCase):\n    def test_greets(self):\n        \
                     self.assertEqual(handle(b\"baton\"), b\"hello, baton\")\n\n    \
                     def test_greets_the_world_by_default(self):\n        \
                     self.assertEqual(handle(b\"\"), b\"hello, world\")\n\n\n\
                     if __name__ == \"__main__\":\n    unittest.main()\n"
                ),
            ),
            ("baton_worker.py".into(), WORKER_HELPER.into()),
            (
                "README.md".into(),
                readme("", &format!("python3 -m unittest test_{name}")),
            ),
        ],
        Lang::Wat => vec![
            (
                APP_FILE.into(),
                format!(
                    "[[function]]\nname = \"{name}\"\nkind = \"wasm\"\nmodule = \"{name}.wat\"\npure = true\n"
                ),
            ),
            (format!("{name}.wat"), WAT_TEMPLATE.into()),
            (
                "test.sh".into(),
                format!(
                    "#!/bin/sh\n# Runs the app on a throw-away server and checks one answer.\nset -eu\n\
                     cd \"$(dirname \"$0\")\"\nout=$(baton up --once {name} --data hello)\n\
                     [ \"$out\" = \"hello, hello\" ] || {{ echo \"got: $out\"; exit 1; }}\necho ok\n"
                ),
            ),
            ("README.md".into(), readme("", "sh test.sh")),
        ],
        Lang::C => vec![
            (
                APP_FILE.into(),
                format!(
                    "[[function]]\nname = \"{name}\"\nkind = \"wasm\"\nmodule = \"{name}.wasm\"\npure = true\n"
                ),
            ),
            (
                format!("{name}.c"),
                "/* The function: reads its payload on stdin, writes its output on stdout (WASI). */\n\
                 #include <stdio.h>\n\nint main(void) {\n    char buf[65536];\n    \
                 size_t n = fread(buf, 1, sizeof buf, stdin);\n    fputs(\"hello, \", stdout);\n    \
                 if (n == 0) fputs(\"world\", stdout); else fwrite(buf, 1, n, stdout);\n    return 0;\n}\n"
                    .into(),
            ),
            (
                "build.sh".into(),
                format!(
                    "#!/bin/sh\n# Builds {name}.wasm (Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32).\n\
                     set -eu\ncd \"$(dirname \"$0\")\"\nclang --target=wasm32-wasi -O2 -o {name}.wasm {name}.c\n"
                ),
            ),
            (
                "test.sh".into(),
                format!(
                    "#!/bin/sh\nset -eu\ncd \"$(dirname \"$0\")\"\nsh build.sh\n\
                     out=$(baton up --once {name} --data hello)\n\
                     [ \"$out\" = \"hello, hello\" ] || {{ echo \"got: $out\"; exit 1; }}\necho ok\n"
                ),
            ),
            (
                "README.md".into(),
                readme("Build first: `sh build.sh`.\n\n", "sh test.sh"),
            ),
        ],
    }
}

/// A WASI preview 1 guest that answers `hello, ` and its payload (or `world`).
const WAT_TEMPLATE: &str = r#";; The function: reads its payload on stdin, writes "hello, " and it on stdout (WASI p1).
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "hello, world")
  (func (export "_start")
    (local $n i32)
    ;; read the payload just after "hello, " (at 1031), up to 64 KiB
    (i32.store (i32.const 0) (i32.const 1031))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
    (local.set $n (i32.load (i32.const 16)))
    ;; nothing read: "world" is still there
    (if (i32.eqz (local.get $n)) (then (local.set $n (i32.const 5))))
    (i32.store (i32.const 32) (i32.const 1024))
    (i32.store (i32.const 36) (i32.add (i32.const 7) (local.get $n)))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 48)))))
"#;

/// `baton new`: an app directory from a template; never writes into an existing one.
pub fn new(args: NewArgs) -> Result<()> {
    let valid = args
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        bail!(
            "`{}`: an app's name starts with a letter and has letters, digits and `_` only \
             (it names a Python module too)",
            args.name
        );
    }
    let dir = args.dir.join(&args.name);
    if dir.exists() {
        bail!(
            "{} already exists: baton new never writes into it",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, contents) in template(&args.name, args.lang) {
        let path = dir.join(&file);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("created {}", path.display());
    }
    println!(
        "next: cd {} && baton up    (serves it on 127.0.0.1:8080 and redeploys on change)",
        dir.display()
    );
    Ok(())
}

/// `baton up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The app: `baton.toml` or its directory.
    #[arg(default_value = ".")]
    app: PathBuf,
    /// Address to listen on (loopback only: the server runs without a token). Default
    /// 127.0.0.1:8080, or any free port with --once.
    #[arg(long, env = "BATON_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where the server keeps its state (default: `.baton` in the app's directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Deploy, invoke FUNCTION once with --data, print its output and stop (for tests
    /// and scripts).
    #[arg(long, value_name = "FUNCTION")]
    once: Option<String>,
    /// The payload for --once.
    #[arg(long, default_value = "", requires = "once")]
    data: String,
    /// On a host with no working sandbox (no bubblewrap), run process functions unjailed,
    /// as your own user, instead of refusing them. Never on a machine others can reach.
    #[arg(long)]
    insecure_unjailed_process_functions: bool,
}

/// Newest modification time of the app's files (hidden entries, `__pycache__` and the
/// server's data directory left out), and how many there are.
fn app_state(dir: &Path, skip: &Path) -> (Option<SystemTime>, usize) {
    let mut newest = None;
    let mut count = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" || path == skip {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                count += 1;
                let modified = meta.modified().ok();
                newest = newest.max(modified);
            }
        }
    }
    (newest, count)
}

/// `baton up`: a server on loopback with the app deployed, redeployed when a file of the
/// app changes (checked twice a second), until Ctrl-C.
pub fn up(args: UpArgs) -> Result<()> {
    let listen = args.listen.unwrap_or_else(|| {
        let port = if args.once.is_some() { 0 } else { 8080 };
        SocketAddr::from(([127, 0, 0, 1], port))
    });
    if !listen.ip().is_loopback() {
        bail!(
            "baton up serves without a token, so only on loopback, not {listen}: use baton \
             serve --token for anything else"
        );
    }
    let Some(file) = app_file(&args.app) else {
        bail!(
            "{}: no {APP_FILE} here (baton new NAME makes an app)",
            args.app.display()
        );
    };
    let app = load(&file)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| app.dir.join(".baton"));
    let mut config = baton_server::ServerConfig::new(listen, data_dir.clone());
    config.allow_process_functions = true;
    config.unjailed_process_functions = args.insecure_unjailed_process_functions;
    let server = baton_server::RunningServer::start(config)
        .with_context(|| format!("starting the server in {}", data_dir.display()))?;
    if !server.sandboxed {
        // Fail closed, visibly: no jail means process functions are refused (or, by the
        // flag, run unjailed), and the developer is told which before the first deploy.
        eprint!("{}", server.detection);
    }
    let url = format!("http://{}", server.addr);
    let client = Client::new(&url, None)?;
    if let Some(function) = &args.once {
        // Only the function's output goes to stdout.
        deploy_app(&client, &app, &mut std::io::stderr())?;
        let payload = crate::server::payload(&args.data)?;
        let response = client.request(
            "POST",
            &format!("/v1/functions/{function}/invoke"),
            "application/octet-stream",
            &payload,
        )?;
        let response = checked(response, &format!("invoking {function}"))?;
        print!("{}", response.json()["output"].as_str().unwrap_or(""));
        server.stop();
        return Ok(());
    }
    deploy_app(&client, &app, &mut std::io::stdout())?;
    eprintln!(
        "baton listening on {url} (app {}, state in {})",
        file.display(),
        data_dir.display()
    );
    eprintln!("watching {} for changes (Ctrl-C stops)", app.dir.display());
    let dir = app.dir.clone();
    std::thread::Builder::new()
        .name("baton-up-watch".into())
        .spawn(move || watch(&client, &file, &dir, &data_dir))?;
    server.serve_until_signal()?;
    Ok(())
}

/// Redeploys the app whenever its files change; an app that does not load or deploy is
/// reported and the last good one keeps serving.
fn watch(client: &Client, file: &Path, dir: &Path, data_dir: &Path) {
    let mut seen = app_state(dir, data_dir);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = app_state(dir, data_dir);
        if now == seen {
            continue;
        }
        seen = now;
        eprintln!("change in {}: redeploying", dir.display());
        match load(file).and_then(|app| deploy_app(client, &app, &mut std::io::stderr())) {
            Ok(()) => eprintln!("redeployed"),
            Err(error) => eprintln!("not redeployed: {error:#}"),
        }
    }
}
