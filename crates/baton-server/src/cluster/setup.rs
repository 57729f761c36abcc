//! What `baton cluster init DIR` writes: the cluster's signing key, one NATS user per role
//! (nkey seeds, generated here: `nsc` is not in Debian) and the nats-server
//! `authorization` block that admits only those users, each limited to what its role needs.
//!
//! - `node`: what a baton node publishes and subscribes to: `baton.>` (records, the work
//!   queue, forwarded calls), baton's key-value buckets and object store, and the JetStream
//!   API of baton's streams only (create, info, read, consumers; never delete).
//! - `reader`: dashboards: reads the registry, invocation records and execution records;
//!   writes nothing, and cannot read queued payloads.
//!
//! A node user can still write what a node writes; what it writes is believed only when
//! signed with the cluster's key (`trust.rs`), which the reader never holds.

use super::trust::ClusterKeys;
use super::{FUNCTIONS, INVOCATIONS, MODULES, NODES, RECORDS, SEQUENCES, WORK};

/// A file `baton cluster init` writes: its name in the directory, its text, and its mode.
#[derive(Debug)]
pub struct SetupFile {
    /// The file's name.
    pub name: &'static str,
    /// Its content.
    pub text: String,
    /// Its permission bits (seeds and the signing key: owner only).
    pub mode: u32,
}

/// The key-value buckets' streams.
fn kv_streams() -> Vec<String> {
    [FUNCTIONS, SEQUENCES, INVOCATIONS, NODES]
        .iter()
        .map(|b| format!("KV_{b}"))
        .collect()
}

/// Every stream baton makes.
fn streams() -> Vec<String> {
    let mut all = kv_streams();
    all.extend([format!("OBJ_{MODULES}"), RECORDS.into(), WORK.into()]);
    all
}

/// `subjects` as a nats-server configuration list.
fn list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// What the node role may publish.
fn node_publish() -> Vec<String> {
    let mut allow = vec![
        "baton.>".to_owned(),
        "_INBOX.>".into(),
        "$JS.API.INFO".into(),
    ];
    for bucket in [FUNCTIONS, SEQUENCES, INVOCATIONS, NODES] {
        allow.push(format!("$KV.{bucket}.>"));
    }
    allow.push(format!("$O.{MODULES}.>"));
    for stream in streams() {
        for api in [
            "STREAM.INFO",
            "STREAM.CREATE",
            "STREAM.MSG.GET",
            "DIRECT.GET",
        ] {
            allow.push(format!("$JS.API.{api}.{stream}"));
        }
        allow.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
        // Consumers: CREATE, INFO, DELETE (`CONSUMER.x.S[.…]`), DURABLE.CREATE and
        // MSG.NEXT (`CONSUMER.x.y.S.…`).
        allow.push(format!("$JS.API.CONSUMER.*.{stream}"));
        allow.push(format!("$JS.API.CONSUMER.*.{stream}.>"));
        allow.push(format!("$JS.API.CONSUMER.*.*.{stream}.>"));
        allow.push(format!("$JS.ACK.{stream}.>"));
        allow.push(format!("$JS.FC.{stream}.>"));
    }
    // An object replaced under its name has its old chunks purged.
    allow.push(format!("$JS.API.STREAM.PURGE.OBJ_{MODULES}"));
    allow
}

/// What the reader role may publish: the read half of the API, on the streams it may
/// read.
fn reader_publish() -> Vec<String> {
    let mut allow = vec!["$JS.API.INFO".to_owned()];
    let mut readable = kv_streams();
    readable.push(RECORDS.into());
    for stream in readable {
        for api in [
            "STREAM.INFO",
            "STREAM.MSG.GET",
            "DIRECT.GET",
            "CONSUMER.CREATE",
        ] {
            allow.push(format!("$JS.API.{api}.{stream}"));
        }
        allow.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
        allow.push(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
        allow.push(format!("$JS.API.CONSUMER.INFO.{stream}.>"));
        allow.push(format!("$JS.FC.{stream}.>"));
    }
    allow
}

/// The files for a new cluster: `cluster.key`, `node.nk`, `reader.nk` and
/// `nats-auth.conf` (to `include` from nats-server's configuration).
pub fn init_files() -> Vec<SetupFile> {
    let node = nkeys::KeyPair::new_user();
    let reader = nkeys::KeyPair::new_user();
    let seed = |pair: &nkeys::KeyPair, role: &str| {
        format!(
            "# baton cluster: the NATS user of role {role} (public {}).\n{}\n",
            pair.public_key(),
            pair.seed().expect("a generated key pair has its seed")
        )
    };
    let auth = format!(
        "# Written by `baton cluster init`: the only users this NATS server admits.\n\
         # Include it from nats-server's configuration (`include nats-auth.conf`).\n\
         authorization {{\n\
         \x20 users = [\n\
         \x20   # node: every baton node (--cluster-creds node.nk)\n\
         \x20   {{\n\
         \x20     nkey: \"{node}\"\n\
         \x20     permissions: {{\n\
         \x20       publish: {{ allow: {node_pub} }}\n\
         \x20       subscribe: {{ allow: [\"_INBOX.>\", \"baton.node.*.invoke\"] }}\n\
         \x20     }}\n\
         \x20   }}\n\
         \x20   # reader: dashboards and scripts that only read (reader.nk)\n\
         \x20   {{\n\
         \x20     nkey: \"{reader}\"\n\
         \x20     permissions: {{\n\
         \x20       publish: {{ allow: {reader_pub} }}\n\
         \x20       subscribe: {{ allow: [\"_INBOX.>\"] }}\n\
         \x20     }}\n\
         \x20   }}\n\
         \x20 ]\n\
         }}\n",
        node = node.public_key(),
        reader = reader.public_key(),
        node_pub = list(&node_publish()),
        reader_pub = list(&reader_publish()),
    );
    vec![
        SetupFile {
            name: "cluster.key",
            text: ClusterKeys::generate(),
            mode: 0o600,
        },
        SetupFile {
            name: "node.nk",
            text: seed(&node, "node"),
            mode: 0o600,
        },
        SetupFile {
            name: "reader.nk",
            text: seed(&reader, "reader"),
            mode: 0o600,
        },
        SetupFile {
            name: "nats-auth.conf",
            text: auth,
            mode: 0o644,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_gets_its_own_key_and_only_its_subjects() {
        let files = init_files();
        let text = |name: &str| &files.iter().find(|f| f.name == name).unwrap().text;
        let auth = text("nats-auth.conf");
        for role in ["node.nk", "reader.nk"] {
            let seed = text(role).lines().last().unwrap();
            let pair = nkeys::KeyPair::from_seed(seed).unwrap();
            assert!(auth.contains(&pair.public_key()), "{role}");
            assert!(!auth.contains(seed), "a seed in the server's file");
        }
        assert!(ClusterKeys::parse(text("cluster.key"), "k").is_ok());
        // Nothing may delete or reconfigure a stream, and the reader writes nothing.
        assert!(!auth.contains("STREAM.DELETE") && !auth.contains("STREAM.UPDATE"));
        let reader = reader_publish();
        assert!(reader
            .iter()
            .all(|s| s.starts_with("$JS.API.") || s.starts_with("$JS.FC.")));
        assert!(!reader
            .iter()
            .any(|s| s.contains(WORK) || s.contains("$KV.")));
        for file in &files {
            if file.name != "nats-auth.conf" {
                assert_eq!(file.mode, 0o600, "{}", file.name);
            }
        }
    }
}
