//! A worker's stderr, captured by a reader thread: at most [`OUTPUT_CAP`] bytes kept between
//! two takes, the rest counted, never written into the server's own log.

use baton_core::sync::Unpoisoned;
use std::sync::{Arc, Mutex};

/// Most bytes of a worker's stderr kept per invocation; the rest is counted, not kept.
pub const OUTPUT_CAP: usize = 64 << 10;

/// What a worker wrote on stderr since the last [`super::Worker::take_output`], within the cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The bytes kept, as text (invalid UTF-8 replaced).
    pub text: String,
    /// Bytes written beyond [`OUTPUT_CAP`], dropped.
    pub dropped_bytes: u64,
}

#[derive(Debug, Default)]
pub(super) struct Captured {
    pub(super) bytes: Vec<u8>,
    pub(super) dropped: u64,
}

/// Set by the reader between taking bytes from the pipe and keeping them: with the pipe's
/// own count, what tells a take that output is still on its way.
pub(super) type InFlight = Arc<std::sync::atomic::AtomicBool>;

/// Reads a worker's stderr into `captured` until it closes, keeping at most [`OUTPUT_CAP`]
/// bytes between two takes. It marks itself in flight once the pipe is readable and before
/// it reads, so from the moment bytes are in the pipe until they are kept, either the
/// pipe's count or the flag tells a take to wait.
pub(super) fn capture_stderr(
    mut stderr: std::fs::File,
    captured: Arc<Mutex<Captured>>,
    in_flight: InFlight,
) {
    use rustix::event::{poll, PollFd, PollFlags};
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let mut chunk = [0u8; 8192];
    loop {
        let mut fds = [PollFd::new(&stderr, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        in_flight.store(true, Ordering::SeqCst);
        let n = match stderr.read(&mut chunk) {
            Ok(0) | Err(_) => {
                in_flight.store(false, Ordering::SeqCst);
                return;
            }
            Ok(n) => n,
        };
        let mut kept = captured.lock_unpoisoned();
        let room = OUTPUT_CAP.saturating_sub(kept.bytes.len()).min(n);
        kept.bytes.extend_from_slice(&chunk[..room]);
        kept.dropped += (n - room) as u64;
        drop(kept);
        in_flight.store(false, Ordering::SeqCst);
    }
}

/// The last lines of `text` (at most 500 bytes), as `; stderr: …` for an error that ends a
/// worker or a template; empty when there is none.
pub(super) fn stderr_tail(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        return String::new();
    }
    let mut start = text.len().saturating_sub(500);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("; stderr: {}", &text[start..])
}
