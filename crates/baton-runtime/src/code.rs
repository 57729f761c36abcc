//! A process function's code as it travels: its directory packed into a tar.gz by the
//! client ([`pack_dir`]) and unpacked by the server into a directory of its own
//! ([`unpack`]), which the jail then binds read-only.
//!
//! Unpacking trusts nothing in the archive: only regular files and directories, only
//! relative paths without `..`, at most [`MAX_ENTRIES`] entries and [`MAX_UNPACKED_BYTES`]
//! (a small archive cannot expand without bound), modes reduced to 0644/0755 (readable by
//! the jail's unprivileged user, never setuid). It unpacks into a fresh directory and
//! renames it into place, so a half-unpacked tree is never used.

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 10_000;
/// Most bytes an archive may unpack to.
pub const MAX_UNPACKED_BYTES: u64 = 256 << 20;

/// Why code could not be packed or unpacked.
#[derive(Debug, Error)]
pub enum CodeError {
    /// The archive is not a readable tar.gz.
    #[error("code archive: not a readable tar.gz ({0})")]
    Corrupt(String),
    /// An entry the server refuses.
    #[error("code archive entry {entry:?}: {reason}")]
    Entry {
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Over a limit.
    #[error("code archive: {0}")]
    TooLarge(String),
    /// The server's own file system failed.
    #[error("unpacking code into {path}: {message}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The client's directory could not be packed.
    #[error("packing {path}: {message}")]
    Pack {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Packs the files under `dir` (following no links, skipping `__pycache__` and dot-files)
/// into a tar.gz.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, CodeError> {
    let failed = |message: String| CodeError::Pack {
        path: dir.to_owned(),
        message,
    };
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    builder.follow_symlinks(false);
    let mut pending = vec![PathBuf::new()];
    let mut entries = 0usize;
    while let Some(relative) = pending.pop() {
        let mut children: Vec<_> = std::fs::read_dir(dir.join(&relative))
            .map_err(|e| failed(format!("{}: {e}", relative.display())))?
            .flatten()
            .collect();
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let name = child.file_name();
            let skip = name.to_string_lossy().starts_with('.') || name == "__pycache__";
            let Ok(kind) = child.file_type() else {
                continue;
            };
            if skip || kind.is_symlink() {
                continue;
            }
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(failed(format!("more than {MAX_ENTRIES} files")));
            }
            let path = relative.join(&name);
            if kind.is_dir() {
                builder
                    .append_dir(&path, child.path())
                    .map_err(|e| failed(format!("{}: {e}", path.display())))?;
                pending.push(path);
            } else if kind.is_file() {
                builder
                    .append_path_with_name(child.path(), &path)
                    .map_err(|e| failed(format!("{}: {e}", path.display())))?;
            }
        }
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| failed(e.to_string()))
}

/// Whether `path` is a plain relative path (no root, no `..`, no `.` games).
fn is_plain_relative(path: &Path) -> bool {
    path.components().count() > 0
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

static NEXT_UNPACK: AtomicU64 = AtomicU64::new(0);

/// Unpacks `archive` into `dest` (which must not exist yet; if it does, it is kept as is:
/// the same content key means the same content).
pub fn unpack(archive: &[u8], dest: &Path) -> Result<(), CodeError> {
    if dest.is_dir() {
        return Ok(());
    }
    let io = |path: &Path, e: std::io::Error| CodeError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let staging = parent.join(format!(
        ".unpacking-{}-{}",
        std::process::id(),
        NEXT_UNPACK.fetch_add(1, Ordering::Relaxed)
    ));
    let result = unpack_into(archive, &staging);
    let result = result.and_then(|()| match std::fs::rename(&staging, dest) {
        Ok(()) => Ok(()),
        // Another deploy of the same content got there first.
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(io(dest, e)),
    });
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn unpack_into(archive: &[u8], root: &Path) -> Result<(), CodeError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path, e: std::io::Error| CodeError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    std::fs::create_dir(root).map_err(|e| io(root, e))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(root, e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(archive));
    let entries = tar
        .entries()
        .map_err(|e| CodeError::Corrupt(e.to_string()))?;
    let mut total = 0u64;
    for (index, entry) in entries.enumerate() {
        if index >= MAX_ENTRIES {
            return Err(CodeError::TooLarge(format!(
                "more than {MAX_ENTRIES} entries"
            )));
        }
        let mut entry = entry.map_err(|e| CodeError::Corrupt(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| CodeError::Corrupt(e.to_string()))?
            .into_owned();
        let shown = path.display().to_string();
        if !is_plain_relative(&path) {
            return Err(CodeError::Entry {
                entry: shown,
                reason: "not a plain relative path",
            });
        }
        let target = root.join(&path);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io(&target, e))?;
            continue;
        }
        if !kind.is_file() {
            return Err(CodeError::Entry {
                entry: shown,
                reason: "only regular files and directories are accepted",
            });
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let mut file = std::fs::File::create(&target).map_err(|e| io(&target, e))?;
        let budget = MAX_UNPACKED_BYTES - total;
        let written = std::io::copy(&mut (&mut entry).take(budget + 1), &mut file)
            .map_err(|e| CodeError::Corrupt(e.to_string()))?;
        total += written;
        if total > MAX_UNPACKED_BYTES {
            return Err(CodeError::TooLarge(format!(
                "unpacks to more than {} MiB",
                MAX_UNPACKED_BYTES >> 20
            )));
        }
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(&target, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_with(path: &str, kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let mut builder =
            tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o4755);
        // Written raw: the builder's own path checks would refuse what an attacker sends.
        let name = path.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, data).unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_directory_round_trips_with_safe_modes() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("lib")).unwrap();
        std::fs::write(src.path().join("main.py"), "print(1)").unwrap();
        std::fs::write(src.path().join("lib/util.py"), "x = 2").unwrap();
        std::fs::write(src.path().join(".secret"), "no").unwrap();
        let archive = pack_dir(src.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("code/abc");
        unpack(&archive, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("lib/util.py")).unwrap(),
            "x = 2"
        );
        assert!(!dest.join(".secret").exists(), "dot-files stay home");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join("main.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
        // Unpacking the same content again keeps what is there.
        unpack(&archive, &dest).unwrap();
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_is_left() {
        let out = tempfile::tempdir().unwrap();
        let cases = [
            (
                "../escape",
                tar::EntryType::Regular,
                "not a plain relative path",
            ),
            (
                "/etc/evil",
                tar::EntryType::Regular,
                "not a plain relative path",
            ),
            ("link", tar::EntryType::Symlink, "only regular files"),
            ("dev", tar::EntryType::Char, "only regular files"),
        ];
        for (index, (path, kind, expected)) in cases.into_iter().enumerate() {
            let dest = out.path().join(format!("d{index}"));
            let error = unpack(&archive_with(path, kind, b"x"), &dest).unwrap_err();
            assert!(error.to_string().contains(expected), "{path}: {error}");
            assert!(!dest.exists());
        }
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "no staging left"
        );
        let error = unpack(b"not gzip at all", &out.path().join("x")).unwrap_err();
        assert!(matches!(error, CodeError::Corrupt(_)), "{error}");
    }

    #[test]
    fn an_archive_cannot_expand_without_bound() {
        // 300 MiB of zeros compress to well under a MiB.
        let mut builder =
            tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut header = tar::Header::new_gnu();
        let size = 300u64 << 20;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_path("zeros").unwrap();
        header.set_cksum();
        builder
            .append(&header, std::io::repeat(0).take(size))
            .unwrap();
        let archive = builder.into_inner().unwrap().finish().unwrap();
        assert!(archive.len() < 2 << 20);
        let out = tempfile::tempdir().unwrap();
        let error = unpack(&archive, &out.path().join("bomb")).unwrap_err();
        assert!(matches!(error, CodeError::TooLarge(_)), "{error}");
    }
}
