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

/// A loopback port free now.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `command` (its output dropped) and waits up to 10 s until something listens on
/// loopback `port`; `what` names it if nothing does.
#[allow(dead_code)]
pub fn start_on_port(command: &mut Command, port: u16, what: &str) -> Served {
    let served = Served(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // A connection to itself is not a listener: the port is in the ephemeral range, so
    // while nothing listens yet, a connect may pick it as its own source port and
    // succeed (TCP simultaneous open).
    let listening = || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
    };
    while !listening() {
        assert!(
            std::time::Instant::now() < until,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    served
}
