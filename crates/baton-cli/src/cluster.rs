//! `baton cluster init DIR`: the keys and NATS users of a new cluster, written once (an
//! existing file is never overwritten: a lost signing key cannot be regenerated).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// `baton cluster ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Write a new cluster's signing key (cluster.key), its NATS users' nkey seeds
    /// (node.nk for the nodes, reader.nk for dashboards) and nats-auth.conf, the
    /// authorization block that admits only them (include it from nats-server's
    /// configuration). Give every node cluster.key and node.nk: `baton serve --cluster URL
    /// --cluster-creds node.nk --cluster-signing-key cluster.key`.
    Init {
        /// The directory (made if missing; files already there are not overwritten).
        dir: PathBuf,
    },
}

/// Runs a `baton cluster` command.
pub fn cluster(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Init { dir } => init(&dir),
    }
}

fn init(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let files = baton_server::cluster::setup::init_files();
    let existing: Vec<String> = files
        .iter()
        .map(|f| dir.join(f.name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already there: a cluster's keys are written once (remove them to start a new cluster)",
            existing.join(", ")
        );
    }
    for file in &files {
        let path = dir.join(file.name);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        out.write_all(file.text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "next: start nats-server with `include nats-auth.conf` in its configuration (and TLS: \
         scripts/cluster-up.sh does both), then each node with\n  baton serve --cluster \
         tls://HOST:4222 --cluster-ca ca.pem --cluster-creds {0}/node.nk \
         --cluster-signing-key {0}/cluster.key",
        dir.display()
    );
    Ok(())
}
