//! Ids that never collide, across restarts, PIDs (PID 1 in every container) and nodes:
//! W3C trace-context ids for requests (128-bit trace id) and steps (64-bit span id), keyed
//! by the operating system's random source once per process, and time-ordered UUIDv7 ids
//! for invocations.
//! A caller's `traceparent` header continues its trace.

use thiserror::Error;

/// A request's trace id (W3C trace context: 16 bytes, never all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

/// A step's span id (W3C trace context: 8 bytes, never all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(u64);

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source does not fail on Linux once booted; if it ever did, a clock- and
    // counter-derived value keeps ids unique within this process at least.
    if getrandom::fill(&mut bytes).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mixed = now ^ FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (mixed.rotate_left(8 * (i as u32 % 8)) >> 56) as u8 ^ (i as u8);
        }
    }
    bytes
}

/// SplitMix64's finalizer: a bijection on `u64` that scatters consecutive inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The next of this process's ids: a counter scattered under two keys drawn once from the
/// OS random source. Within the process every draw differs (the mixing is a bijection of
/// the counter); across processes and restarts the keys differ, so ids collide no more
/// than random ones. One system call per process instead of one per id, which the request
/// path would otherwise pay on every step.
fn next_id() -> (u64, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static KEYS: OnceLock<[u64; 3]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(|| {
        let bytes: [u8; 24] = random_bytes();
        let word =
            |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        [word(0), word(1), word(2)]
    });
    let n = COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(keys[0]);
    (mix(n ^ keys[1]), mix(n.rotate_left(32) ^ keys[2]))
}

impl TraceId {
    /// A fresh trace id, unique in this process and random-looking across processes.
    pub fn random() -> TraceId {
        loop {
            let (high, low) = next_id();
            let id = (u128::from(high) << 64) | u128::from(low);
            if id != 0 {
                return TraceId(id);
            }
        }
    }
}

impl SpanId {
    /// A fresh span id, unique in this process and random-looking across processes.
    pub fn random() -> SpanId {
        loop {
            let (id, _) = next_id();
            if id != 0 {
                return SpanId(id);
            }
        }
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A time-ordered, globally unique invocation id (UUIDv7: 48 bits of Unix milliseconds,
/// then random bits).
pub fn invocation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A `traceparent` header (W3C trace context, version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace: TraceId,
    /// The caller's span.
    pub parent: SpanId,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Why a `traceparent` header was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TraceParentError {
    /// Not `VERSION-TRACEID-PARENTID-FLAGS` in lowercase hex of 2, 32, 16 and 2 digits.
    #[error("traceparent {0:?}: expected 00-<32 hex>-<16 hex>-<2 hex>")]
    Malformed(String),
    /// An all-zero trace or parent id, or the forbidden version ff.
    #[error("traceparent {0:?}: all-zero id or version ff")]
    Invalid(String),
}

fn hex_field(text: &str, digits: usize) -> Option<u128> {
    (text.len() == digits && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

impl TraceParent {
    /// Parses a header value. A future version's extra fields are ignored, as the
    /// specification asks; version 00 takes exactly four fields.
    pub fn parse(header: &str) -> Result<TraceParent, TraceParentError> {
        let malformed = || TraceParentError::Malformed(header.chars().take(80).collect());
        let mut fields = header.trim().split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed());
        };
        let version = hex_field(version, 2).ok_or_else(malformed)?;
        if version == 0 && fields.next().is_some() {
            return Err(malformed());
        }
        let trace = hex_field(trace, 32).ok_or_else(malformed)?;
        let parent = hex_field(parent, 16).ok_or_else(malformed)? as u64;
        let flags = hex_field(flags, 2).ok_or_else(malformed)? as u8;
        if version == 0xff || trace == 0 || parent == 0 {
            return Err(TraceParentError::Invalid(header.chars().take(80).collect()));
        }
        Ok(TraceParent {
            trace: TraceId(trace),
            parent: SpanId(parent),
            flags,
        })
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace, self.parent, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let traces: HashSet<String> = (0..10_000).map(|_| TraceId::random().to_string()).collect();
        assert_eq!(traces.len(), 10_000);
        assert!(traces.iter().all(|t| t.len() == 32));
        let spans: HashSet<String> = (0..10_000).map(|_| SpanId::random().to_string()).collect();
        assert_eq!(spans.len(), 10_000);
        let a = invocation_id();
        let b = invocation_id();
        assert_ne!(a, b);
        assert_eq!(&a[14..15], "7", "UUID version 7: {a}");
    }

    #[test]
    fn traceparent_round_trips_and_refuses_what_the_spec_refuses() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(header).unwrap();
        assert_eq!(parsed.to_string(), header);
        assert_eq!(parsed.flags, 1);
        // A later version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_ok()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
