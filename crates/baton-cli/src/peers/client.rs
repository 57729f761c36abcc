//! The bench's client: a minimal keep-alive HTTP/1.1 connection per system (as a real
//! client holds one), one call, waiting until a system answers, and chain throughput
//! at a fixed concurrency.

use anyhow::{bail, Context, Result};
use baton_server::client::Client;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD: &[u8] = br#"{"order":42,"items":["a","b"],"total":12.5}"#;

/// A keep-alive HTTP/1.1 connection to one target, as a real client holds one; it
/// reconnects (inside the timed call) when the server closed it.
pub(super) struct Conn {
    addr: String,
    path: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub(super) fn new(target: &(Client, String)) -> Conn {
        Conn {
            addr: target.0.url().trim_start_matches("http://").to_owned(),
            path: target.1.clone(),
            stream: None,
        }
    }

    fn exchange(&mut self) -> std::io::Result<(u16, Vec<u8>, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.stream = Some(BufReader::new(stream));
        }
        let Some(reader) = self.stream.as_mut() else {
            return Err(std::io::Error::other("no connection"));
        };
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.addr,
            PAYLOAD.len()
        )
        .into_bytes();
        request.extend_from_slice(PAYLOAD);
        reader.get_mut().write_all(&request)?;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
            close |= lower.starts_with("connection:") && lower.contains("close");
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk"))?;
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..])?;
                line.clear();
                reader.read_line(&mut line)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        } else {
            reader.read_to_end(&mut body)?;
            close = true;
        }
        Ok((status, body, close))
    }

    /// One request; its latency (including a reconnect if the server had closed).
    pub(super) fn call(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let result = match self.exchange() {
            Ok(ok) => Ok(ok),
            Err(_) => {
                self.stream = None;
                self.exchange()
            }
        };
        let (status, body, close) =
            result.with_context(|| format!("{}{}", self.addr, self.path))?;
        let took = started.elapsed();
        if close {
            self.stream = None;
        }
        if status != 200 {
            bail!(
                "{}{}: HTTP {status}: {}",
                self.addr,
                self.path,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(took)
    }
}

pub(super) fn call(target: &(Client, String)) -> Result<Duration> {
    Conn::new(target).call()
}

/// Waits until `target` answers 200 (or fails after `limit`).
pub(super) fn wait_ready(name: &str, target: &(Client, String), limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match call(target) {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                bail!("{name} did not answer within {limit:?}: {error:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub(super) fn throughput(
    target: &(Client, String),
    concurrency: usize,
    secs: f64,
) -> Result<(f64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (stop, done, failed, target) = (
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&failed),
                (target.0.clone(), target.1.clone()),
            );
            std::thread::spawn(move || {
                let mut conn = Conn::new(&target);
                while !stop.load(Ordering::Relaxed) {
                    match conn.call() {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((
        done.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    ))
}
