//! Dense identifiers for tasks and context labels, and the interner that maps names to them.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A task (function) interned to a dense index; index into per-task vectors.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct TaskId(pub u32);

/// A context label (such as a request route) interned to a dense index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelId(pub u32);

impl TaskId {
    /// The id as a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task#{}", self.0)
    }
}

/// Maps names to dense ids and back. Ids are handed out in first-seen order and never reused.
/// Deserialising rebuilds the name index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "InternerWire")]
pub struct Interner {
    names: Vec<String>,
    #[serde(skip)]
    index: FxHashMap<String, u32>,
}

/// An interner as stored: its names in id order.
#[derive(Deserialize)]
struct InternerWire {
    names: Vec<String>,
}

impl From<InternerWire> for Interner {
    fn from(wire: InternerWire) -> Interner {
        let mut interner = Interner {
            names: wire.names,
            index: FxHashMap::default(),
        };
        interner.rebuild_index();
        interner
    }
}

impl Interner {
    /// The id of `name`, interning it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 interned names");
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        id
    }

    /// The id of `name` if it was interned.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The name of `id`; `"?"` for an id this interner never issued.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// Number of interned names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing was interned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Rebuilds the name index after deserialisation (the index is not serialised).
    pub fn rebuild_index(&mut self) {
        self.index = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
    }
}

/// A stable 128-bit content key of `bytes`: the first half of their SHA-256, then their
/// length. Names compiled modules in caches, module blobs in the store and uploads shared
/// in a cluster, so it must not change between builds (std's `DefaultHasher` may).
pub fn content_key(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{}", bytes.len())
}

/// A [`std::hash::Hasher`] over SHA-256, for keys made of `Hash` values that must stay the
/// same between builds (a compiled module's engine settings, say).
#[derive(Debug, Clone, Default)]
pub struct StableHasher(sha2::Sha256);

impl std::hash::Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    fn finish(&self) -> u64 {
        let digest = sha2::Digest::finalize(self.0.clone());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_are_sha256_and_fixed_across_builds() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(content_key(b"abc"), "ba7816bf8f01cfea414140de5dae2223-3");
        assert_ne!(content_key(b"abc"), content_key(b"abd"));
        use std::hash::{Hash, Hasher};
        let mut a = StableHasher::default();
        "engine".hash(&mut a);
        let mut b = StableHasher::default();
        "engine".hash(&mut b);
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn interning_is_stable_and_dense() {
        let mut interner = Interner::default();
        assert_eq!(interner.intern("a"), 0);
        assert_eq!(interner.intern("b"), 1);
        assert_eq!(interner.intern("a"), 0);
        assert_eq!(interner.name(1), "b");
        assert_eq!(interner.name(7), "?");
    }

    #[test]
    fn index_is_rebuilt_after_loading() {
        let mut interner = Interner::default();
        interner.intern("a");
        interner.intern("b");
        let mut loaded = Interner {
            names: interner.names.clone(),
            index: FxHashMap::default(),
        };
        assert_eq!(loaded.get("b"), None);
        loaded.rebuild_index();
        assert_eq!(loaded.get("b"), Some(1));
    }
}
