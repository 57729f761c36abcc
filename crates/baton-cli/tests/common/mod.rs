//! What the CLI's integration tests share: the `baton` binary run to its end, a child
//! process that is killed when dropped, a `baton` (serve or up) or another server started
//! until it says where it listens, and a CA with server and client certificates made by
//! `openssl`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

/// A running child, killed (SIGKILL) and reaped when dropped, so that a failing test
/// leaves no process behind.
pub struct Served(pub Child);

#[allow(dead_code)]
impl Served {
    /// SIGKILL: no shutdown, no last snapshot.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `baton` binary with `args` to its end.
#[allow(dead_code)]
pub fn baton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .output()
        .expect("the baton binary runs")
}

/// [`baton`], which must succeed: its stdout.
#[allow(dead_code)]
pub fn ok(args: &[&str]) -> String {
    let output = baton(args);
    assert!(
        output.status.success(),
        "baton {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Starts `baton serve` (process functions allowed, a snapshot every second) keeping its
/// data in `data`, and waits for its "listening" line; returns the server, its URL and
/// what it printed.
#[allow(dead_code)]
pub fn serve(data: &Path) -> (Served, String, String) {
    serve_under(&[], data)
}

/// [`serve`] with `wrapper` (a program and its arguments) in front of the binary.
#[allow(dead_code)]
pub fn serve_under(wrapper: &[&str], data: &Path) -> (Served, String, String) {
    let baton = env!("CARGO_BIN_EXE_baton");
    let (program, wrapped) = match wrapper.split_first() {
        Some((program, rest)) => (*program, [rest, &[baton]].concat()),
        None => (baton, Vec::new()),
    };
    let (served, url, log, _later) = start_listening(
        Command::new(program)
            .args(&wrapped)
            .args(serve_args(data))
            .args(["--allow-process-functions", "--snapshot-secs", "1"]),
        None,
    );
    (served, url, log)
}

/// Starts `command` with its stderr piped and reads it until `baton listening on URL`.
/// Returns the child, the URL, what it printed up to there, and its later stderr lines
/// (each also echoed with `tag` when one is given).
pub fn start_listening(
    command: &mut Command,
    tag: Option<&str>,
) -> (Served, String, String, Receiver<String>) {
    start_until(command, false, "baton listening on ", tag, "baton")
}

/// Spawns `command` with its stderr piped (and its stdout, when `stdout`), each read to the
/// end by a thread into one channel, so the child never blocks on a full pipe (every line
/// echoed with `tag` when one is given), and waits up to 30 s for a line with `marker`.
/// Returns the child, the word after the marker, what it printed up to there, and its
/// later lines. Panics, with that output, if `what` exits or prints no such line in time.
fn start_until(
    command: &mut Command,
    stdout: bool,
    marker: &str,
    tag: Option<&str>,
    what: &str,
) -> (Served, String, String, Receiver<String>) {
    if stdout {
        command.stdout(Stdio::piped());
    }
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut pipes: Vec<Box<dyn std::io::Read + Send>> = Vec::new();
    if stdout {
        pipes.extend(child.stdout.take().map(|out| Box::new(out) as _));
    }
    pipes.extend(child.stderr.take().map(|err| Box::new(err) as _));
    let served = Served(child);
    let (sender, lines) = std::sync::mpsc::channel();
    for pipe in pipes {
        let (sender, tag) = (sender.clone(), tag.map(str::to_owned));
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(tag) = &tag {
                    eprintln!("[{tag}] {line}");
                }
                let _ = sender.send(line);
            }
        });
    }
    drop(sender);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut log = String::new();
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!("{what} stopped or printed no `{marker}` ({e:?}):\n{log}"),
        };
        log.push_str(&line);
        log.push('\n');
        if let Some((_, rest)) = line.split_once(marker) {
            let word = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            return (served, word, log, lines);
        }
    }
}

/// Runs `openssl` with `args` in `dir`.
#[allow(dead_code)]
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// A CA (`ca.pem`), a server certificate for 127.0.0.1 (`server.pem`, `server.key`) and a
/// client certificate (`client.pem`, `client.key`), in `dir`.
#[allow(dead_code)]
pub fn certificates(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &key,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=baton test CA",
        ],
    ]
    .concat();
    openssl(dir, &ca);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (csr, pem, keyfile, ext) = (
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.key"),
            format!("{who}.ext"),
        );
        let subject = format!("/CN=baton {who}");
        let request = [
            &["req"][..],
            &key,
            &["-keyout", &keyfile, "-out", &csr, "-subj", &subject],
        ]
        .concat();
        openssl(dir, &request);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// The arguments of `baton serve` on a free loopback port, without auth, keeping its data
/// in `data`; a test adds its own after them.
#[allow(dead_code)]
pub fn serve_args(data: &Path) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--data-dir",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([data.display().to_string()])
    .collect()
}

/// Spawns `command`, which was told to listen on loopback port 0 (so the kernel picks a
/// free one, and no other test can take it between a choice and a bind), and reads its
/// stdout and stderr until a line with `marker` followed by `HOST:PORT`, the port it got.
#[allow(dead_code)]
pub fn start_announcing(command: &mut Command, marker: &str, what: &str) -> (Served, u16) {
    let (served, address, _, _) = start_until(command, true, marker, None, what);
    match address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
        Some(port) => (served, port),
        None => panic!("{what} printed `{marker}{address}`, without a port"),
    }
}
