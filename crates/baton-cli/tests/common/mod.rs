//! What the CLI's integration tests share: a child process that is killed when dropped,
//! and a `baton` (serve or up) started until it says where it listens.

use std::io::{BufRead, BufReader};
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
