//! What the CLI's integration tests share: a child process that is killed when dropped,
//! a `baton` (serve or up) started until it says where it listens, and a CA with server and
//! client certificates made by `openssl`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

/// Starts `command` with its stderr piped and reads it until `baton listening on URL`.
/// Returns the child, the URL, what it printed up to there, and its later stderr lines
/// (read by a thread to the end, so the child never blocks on a full pipe; each also
/// echoed with `tag` when one is given).
pub fn start_listening(
    command: &mut Command,
    tag: Option<&str>,
) -> (Served, String, String, Receiver<String>) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let served = Served(child);
    let mut log = String::new();
    let url = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("stopped before listening:\n{log}");
        };
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.strip_prefix("baton listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let (sender, later) = std::sync::mpsc::channel();
    let tag = tag.map(str::to_owned);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(tag) = &tag {
                eprintln!("[{tag}] {line}");
            }
            let _ = sender.send(line);
        }
    });
    (served, url, log, later)
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
/// Its later output is read to the end by threads, so it never blocks on a full pipe.
/// Panics, with what it printed, if it exits or says nothing of the kind within 10 s.
#[allow(dead_code)]
pub fn start_announcing(command: &mut Command, marker: &str, what: &str) -> (Served, u16) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let (sender, lines) = std::sync::mpsc::channel();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
    for pipe in [out, err] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
    }
    drop(sender);
    let served = Served(child);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = String::new();
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!("{what} did not say where it listens ({e:?}):\n{log}"),
        };
        log.push_str(&line);
        log.push('\n');
        let Some((_, rest)) = line.split_once(marker) else {
            continue;
        };
        let address = rest.split_whitespace().next().unwrap_or_default();
        let port = address.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        match port {
            Some(port) => {
                // The rest of its output goes nowhere, but is read.
                std::thread::spawn(move || for _ in lines {});
                return (served, port);
            }
            None => panic!("{what} said {line:?}, without a port"),
        }
    }
}
