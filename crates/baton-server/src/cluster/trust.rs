//! What a node believes of what it reads from NATS. NATS credentials decide who may write
//! to the cluster's subjects; they do not make what is written true: a node credential
//! leaked from one host, or a NATS account shared with other software, would otherwise
//! let its holder install code on every node, forge results and pose as a warm node. So
//! every registry entry, node advertisement, invocation record, queued invocation, record
//! batch and forwarded call or answer is signed with the cluster's key (ed25519, an nkey
//! seed of type cluster, held by every node in a file given at start), and a node checks
//! the signature before the entry changes what runs, what is served or what is learned.
//!
//! A signature covers a purpose (what the bytes are), the key or subject they are for
//! (so a signed entry cannot be moved under another name) and the bytes, each part
//! length-prefixed. A key file lists one or more seeds: the first signs, all verify, which
//! is how a key is rotated (docs/cluster.md).

use std::fmt;
use std::path::Path;
use thiserror::Error;

/// What signed bytes are; the `what` label of `baton_cluster_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A function's registry entry.
    Function,
    /// A sequence's registry entry.
    Sequence,
    /// A node's advertisement of its warm set.
    Node,
    /// An asynchronous invocation's record (state, outcome).
    Invocation,
    /// A queued asynchronous invocation (function and payload).
    Work,
    /// A batch of execution records.
    Records,
    /// A synchronous invocation handed to another node.
    Forward,
    /// The answer to a forwarded invocation.
    Answer,
}

impl Purpose {
    /// Every purpose, in the order `/metrics` lists them.
    pub const ALL: [Purpose; 8] = [
        Purpose::Function,
        Purpose::Sequence,
        Purpose::Node,
        Purpose::Invocation,
        Purpose::Work,
        Purpose::Records,
        Purpose::Forward,
        Purpose::Answer,
    ];

    /// Its name in signatures and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Function => "function",
            Purpose::Sequence => "sequence",
            Purpose::Node => "node",
            Purpose::Invocation => "invocation",
            Purpose::Work => "work",
            Purpose::Records => "records",
            Purpose::Forward => "forward",
            Purpose::Answer => "answer",
        }
    }

    /// Its index in [`Purpose::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key file cannot be used.
#[derive(Debug, Error)]
pub enum TrustError {
    /// The file could not be read.
    #[error("cluster signing key {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Other users may read or change it.
    #[error(
        "cluster signing key {path}: other users may read or change it (mode {mode:o}): chmod 600 it"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not a cluster seed.
    #[error(
        "cluster signing key {path}, line {line}: not a cluster key seed (`SC…`, as `baton cluster init` writes)"
    )]
    NotASeed {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
    },
    /// No seed at all.
    #[error("cluster signing key {path}: no key in the file")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Why signed bytes were not believed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejected {
    /// No signature where one is required.
    #[error("not signed")]
    Unsigned,
    /// A signature no key of this node's made.
    #[error("signature does not verify with the cluster's key")]
    BadSignature,
    /// The value's framing is broken.
    #[error("unreadable signed value")]
    Malformed,
}

/// The cluster's signing keys: the first signs, every one verifies.
pub struct ClusterKeys {
    keys: Vec<nkeys::KeyPair>,
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public: Vec<String> = self.keys.iter().map(|k| k.public_key()).collect();
        f.debug_struct("ClusterKeys")
            .field("public", &public)
            .finish()
    }
}

impl ClusterKeys {
    /// A new key file's text: one fresh seed and a comment.
    pub fn generate() -> String {
        let pair = nkeys::KeyPair::new_cluster();
        let seed = pair.seed().expect("a generated key pair has its seed");
        format!(
            "# baton cluster signing key (public {}). The first seed signs; every seed\n\
             # verifies. Keep it to the nodes: whoever holds it can install code on them.\n{seed}\n",
            pair.public_key()
        )
    }

    /// Reads a key file: lines of seeds, `#` comments; refused if other users may read or
    /// change it.
    pub fn load(path: &Path) -> Result<ClusterKeys, TrustError> {
        let shown = path.display().to_string();
        let unreadable = |e: std::io::Error| TrustError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if let Some(mode) = exposed(&meta) {
            return Err(TrustError::Exposed { path: shown, mode });
        }
        if meta.len() > 64 << 10 {
            return Err(TrustError::Unreadable {
                path: shown,
                reason: "over 64 KiB: not a key file".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        Self::parse(&text, &shown)
    }

    /// Parses a key file's text (`path` is for messages only; a seed is never shown).
    pub fn parse(text: &str, path: &str) -> Result<ClusterKeys, TrustError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let pair = nkeys::KeyPair::from_seed(line)
                .ok()
                .filter(|k| matches!(k.key_pair_type(), nkeys::KeyPairType::Cluster))
                .ok_or(TrustError::NotASeed {
                    path: path.to_owned(),
                    line: n + 1,
                })?;
            keys.push(pair);
        }
        if keys.is_empty() {
            return Err(TrustError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(ClusterKeys { keys })
    }

    /// The signing key's public half (shown in logs: which key a node signs with).
    pub fn public_key(&self) -> String {
        self.keys[0].public_key()
    }
}

/// The permission bits of a secret file that users other than its owner may read or
/// change (a jailed function runs as another user on the same host); `None` when only its
/// owner may.
pub(crate) fn exposed(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The bytes a signature covers.
fn signed_bytes(purpose: Purpose, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    out.extend_from_slice(b"baton-cluster-1\0");
    out.extend_from_slice(purpose.as_str().as_bytes());
    out.push(0);
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// How a node treats what it reads: signed and checked, or (`--cluster-insecure` without
/// a key) taken as it comes.
#[derive(Debug)]
pub enum Trust {
    /// Sign everything written, believe only what verifies.
    Signed(ClusterKeys),
    /// Sign nothing, believe everything (a private test network only).
    Unsigned,
}

/// The prefix of a signed key-value entry: `sig:<base64>\n` before the body.
const SIG_PREFIX: &[u8] = b"sig:";

impl Trust {
    /// Whether entries must verify.
    pub fn is_signed(&self) -> bool {
        matches!(self, Trust::Signed(_))
    }

    /// A signature of `parts` for `purpose` (base64), or `None` when unsigned.
    pub fn sign(&self, purpose: Purpose, parts: &[&[u8]]) -> Option<String> {
        use base64::Engine;
        let Trust::Signed(keys) = self else {
            return None;
        };
        let signature = keys.keys[0]
            .sign(&signed_bytes(purpose, parts))
            .expect("a seeded key pair signs");
        Some(base64::engine::general_purpose::STANDARD.encode(signature))
    }

    /// Whether `signature` is a signature of `parts` for `purpose` by one of the keys.
    pub fn check(
        &self,
        purpose: Purpose,
        parts: &[&[u8]],
        signature: Option<&str>,
    ) -> Result<(), Rejected> {
        use base64::Engine;
        let Trust::Signed(keys) = self else {
            return Ok(());
        };
        let signature = signature.ok_or(Rejected::Unsigned)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| Rejected::BadSignature)?;
        let input = signed_bytes(purpose, parts);
        keys.keys
            .iter()
            .any(|k| k.verify(&input, &signature).is_ok())
            .then_some(())
            .ok_or(Rejected::BadSignature)
    }

    /// A key-value entry's value: `body`, signed for `purpose` under `key`.
    pub fn seal(&self, purpose: Purpose, key: &str, body: &[u8]) -> Vec<u8> {
        match self.sign(purpose, &[key.as_bytes(), body]) {
            Some(signature) => {
                let mut out =
                    Vec::with_capacity(SIG_PREFIX.len() + signature.len() + 1 + body.len());
                out.extend_from_slice(SIG_PREFIX);
                out.extend_from_slice(signature.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(body);
                out
            }
            None => body.to_vec(),
        }
    }

    /// A key-value entry's body, once its signature for `purpose` under `key` verifies.
    pub fn open<'v>(
        &self,
        purpose: Purpose,
        key: &str,
        value: &'v [u8],
    ) -> Result<&'v [u8], Rejected> {
        let (signature, body) = match value.strip_prefix(SIG_PREFIX) {
            Some(rest) => {
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or(Rejected::Malformed)?;
                let signature =
                    std::str::from_utf8(&rest[..end]).map_err(|_| Rejected::Malformed)?;
                (Some(signature), &rest[end + 1..])
            }
            None => (None, value),
        };
        self.check(purpose, &[key.as_bytes(), body], signature)?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> Trust {
        Trust::Signed(ClusterKeys::parse(&ClusterKeys::generate(), "k").unwrap())
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_purpose_key_and_bytes() {
        let trust = signed();
        let value = trust.seal(Purpose::Function, "upper", b"{\"a\":1}");
        assert_eq!(
            trust.open(Purpose::Function, "upper", &value).unwrap(),
            b"{\"a\":1}"
        );
        // Moved under another name, or read as another kind of entry: refused.
        assert_eq!(
            trust.open(Purpose::Function, "lower", &value),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            trust.open(Purpose::Sequence, "upper", &value),
            Err(Rejected::BadSignature)
        );
        // One byte of the body changed.
        let mut changed = value.clone();
        *changed.last_mut().unwrap() = b']';
        assert_eq!(
            trust.open(Purpose::Function, "upper", &changed),
            Err(Rejected::BadSignature)
        );
        // Unsigned, or signed by another cluster's key.
        assert_eq!(
            trust.open(Purpose::Function, "upper", b"{\"a\":1}"),
            Err(Rejected::Unsigned)
        );
        let other = signed().seal(Purpose::Function, "upper", b"{\"a\":1}");
        assert_eq!(
            trust.open(Purpose::Function, "upper", &other),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            trust.open(Purpose::Function, "upper", b"sig:no newline"),
            Err(Rejected::Malformed)
        );
        // Length prefixes: the boundary between key and body is part of what is signed.
        let a = trust.sign(Purpose::Records, &[b"ab", b"c"]);
        assert!(trust
            .check(Purpose::Records, &[b"a", b"bc"], a.as_deref())
            .is_err());
    }

    #[test]
    fn a_rotated_file_verifies_with_every_key_and_signs_with_the_first() {
        let old = ClusterKeys::generate();
        let new = ClusterKeys::generate();
        let old_only = Trust::Signed(ClusterKeys::parse(&old, "old").unwrap());
        let both = Trust::Signed(ClusterKeys::parse(&format!("{new}{old}"), "both").unwrap());
        let by_old = old_only.seal(Purpose::Node, "n1", b"{}");
        assert!(both.open(Purpose::Node, "n1", &by_old).is_ok());
        let by_both = both.seal(Purpose::Node, "n1", b"{}");
        assert_eq!(
            old_only.open(Purpose::Node, "n1", &by_both),
            Err(Rejected::BadSignature),
            "the first seed (the new key) signs"
        );
    }

    #[test]
    fn key_files_are_checked_and_never_shown() {
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        let err = ClusterKeys::parse(&format!("# c\n\n{user}\n"), "f").unwrap_err();
        assert!(matches!(err, TrustError::NotASeed { line: 3, .. }), "{err}");
        assert!(!err.to_string().contains(&user));
        assert!(matches!(
            ClusterKeys::parse("# only a comment\n", "f"),
            Err(TrustError::Empty { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, ClusterKeys::generate()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClusterKeys::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ClusterKeys::load(&path).is_ok());
    }

    #[test]
    fn an_unsigned_cluster_believes_everything_and_signs_nothing() {
        let trust = Trust::Unsigned;
        assert_eq!(trust.seal(Purpose::Function, "f", b"x"), b"x");
        assert_eq!(trust.open(Purpose::Function, "f", b"x").unwrap(), b"x");
        assert!(trust.sign(Purpose::Work, &[b"x"]).is_none());
    }
}
