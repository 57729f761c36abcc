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

/// Reads a worker's stderr into `captured` until it closes, keeping at most [`OUTPUT_CAP`]
/// bytes between two takes.
pub(super) fn capture_stderr(
    mut stderr: std::process::ChildStderr,
    captured: Arc<Mutex<Captured>>,
) {
    use std::io::Read;
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stderr.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut captured = captured.lock().unwrap_or_else(|p| p.into_inner());
        let room = OUTPUT_CAP.saturating_sub(captured.bytes.len()).min(n);
        captured.bytes.extend_from_slice(&chunk[..room]);
        captured.dropped += (n - room) as u64;
    }
}
