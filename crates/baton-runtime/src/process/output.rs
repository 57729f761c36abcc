//! A worker's stderr, captured by a reader thread: at most [`OUTPUT_CAP`] bytes kept between
//! two takes, the rest counted, never written into the server's own log.

use std::sync::{Arc, Mutex};

/// Most bytes of a worker's stderr kept per invocation; the rest is counted, not kept.
pub const OUTPUT_CAP: usize = 64 << 10;

/// What a worker wrote on stderr since the last [`Worker::take_output`], within the cap.
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
/// bytes between two takes.
pub(super) fn capture_stderr(
    mut stderr: std::fs::File,
    captured: Arc<Mutex<Captured>>,
    in_flight: InFlight,
) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stderr.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        in_flight.store(true, Ordering::SeqCst);
        let mut kept = captured.lock().unwrap_or_else(|p| p.into_inner());
        let room = OUTPUT_CAP.saturating_sub(kept.bytes.len()).min(n);
        kept.bytes.extend_from_slice(&chunk[..room]);
        kept.dropped += (n - room) as u64;
        drop(kept);
        in_flight.store(false, Ordering::SeqCst);
    }
}
