//! A process function's code as it travels: its directory packed into a tar.gz by the
//! client ([`pack_dir`]) and unpacked by the server into a directory of its own
//! ([`unpack`]), which the jail then binds read-only.
//!
//! Unpacking trusts nothing in the archive: only regular files and directories, only
//! relative paths without `..`, at most [`MAX_ENTRIES`] entries and [`MAX_UNPACKED_BYTES`]
//! (a small archive cannot expand without bound), modes reduced to 0644/0755 (readable by
//! the jail's unprivileged user, never setuid). It unpacks into a fresh directory and
//! renames it into place, so a half-unpacked tree is never used. Before the tar reader
//! sees the archive, a first pass walks its headers ([`check_headers`]): the reader buffers
//! a GNU long name and a PAX header whole, so their sizes are bounded first
//! ([`MAX_LONG_NAME`], [`MAX_PAX`]), as is the whole stream. An entry that clashes with an
//! earlier one (a file `a`, then `a/b`) is the archive's fault, refused as such.

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
/// Largest GNU long-name (or long link name) entry, bytes.
pub const MAX_LONG_NAME: u64 = 4 << 10;
/// Largest PAX extended header, bytes.
pub const MAX_PAX: u64 = 64 << 10;

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
    /// The server's own file system failed (the path is for the server's log: never
    /// shown to a client).
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

/// A header field of octal digits (or GNU's base-256 form, high bit set), as a number.
fn header_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// Walks the archive's headers without keeping anything: refuses a long-name or PAX entry
/// over its bound and a stream that decompresses past what unpacking may write (plus its
/// headers), before the tar reader would buffer them.
pub fn check_headers(archive: &[u8]) -> Result<(), CodeError> {
    let limit = MAX_UNPACKED_BYTES + (MAX_ENTRIES as u64 * 4 + 4) * 512;
    let mut stream = GzDecoder::new(archive).take(limit + 1);
    let mut block = [0u8; 512];
    let mut read = 0u64;
    loop {
        match stream.read_exact(&mut block) {
            Ok(()) => read += 512,
            // Running out where a header would be: the tar reader names what is wrong.
            Err(_) => return Ok(()),
        }
        if read > limit {
            return Err(CodeError::TooLarge(format!(
                "decompresses to more than {} MiB",
                limit >> 20
            )));
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let size = header_number(&block[124..136])
            .ok_or_else(|| CodeError::Corrupt("a header's size is not a number".into()))?;
        let (kind, bound) = match block[156] {
            b'L' | b'K' => ("GNU long name", MAX_LONG_NAME),
            b'x' | b'g' => ("PAX header", MAX_PAX),
            _ => ("entry", MAX_UNPACKED_BYTES),
        };
        if size > bound {
            return Err(CodeError::TooLarge(format!(
                "a {kind} of {size} bytes (at most {bound})"
            )));
        }
        let padded = size.div_ceil(512) * 512;
        let skipped = std::io::copy(&mut (&mut stream).take(padded), &mut std::io::sink())
            .map_err(|e| CodeError::Corrupt(e.to_string()))?;
        read += skipped;
        if skipped < padded {
            return Ok(());
        }
    }
}

fn unpack_into(archive: &[u8], root: &Path) -> Result<(), CodeError> {
    use std::os::unix::fs::PermissionsExt;
    check_headers(archive)?;
    let io = |path: &Path, e: std::io::Error| CodeError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    // Inside the staging tree, a path that is a file where a directory must be (or the
    // reverse) is the archive's doing: refused, naming its entry, never the server's path.
    let inside = |shown: &str, target: &Path, e: std::io::Error| {
        use std::io::ErrorKind::{AlreadyExists, IsADirectory, NotADirectory};
        if matches!(e.kind(), NotADirectory | IsADirectory | AlreadyExists) {
            CodeError::Entry {
                entry: shown.to_owned(),
                reason: "clashes with an earlier entry (a file where a directory is, or the \
                         reverse)",
            }
        } else {
            io(target, e)
        }
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
            std::fs::create_dir_all(&target).map_err(|e| inside(&shown, &target, e))?;
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
            std::fs::create_dir_all(dir).map_err(|e| inside(&shown, dir, e))?;
        }
        let mut file = std::fs::File::create(&target).map_err(|e| inside(&shown, &target, e))?;
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

    /// A tar.gz of one raw 512-byte header of `kind` declaring `size` bytes, followed by
    /// `data` (which may be shorter than declared).
    fn raw_entry(kind: u8, size: u64, data: &[u8]) -> Vec<u8> {
        let mut header = [0u8; 512];
        header[..4].copy_from_slice(b"long");
        header[100..107].copy_from_slice(b"0000644");
        header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        header[156] = kind;
        header[257..263].copy_from_slice(b"ustar\0");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &header).unwrap();
        std::io::Write::write_all(&mut gz, data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_huge_long_name_or_pax_header_is_refused_before_it_is_read() {
        let out = tempfile::tempdir().unwrap();
        // 1 GiB declared, 64 MiB of it sent (it compresses to almost nothing): refused
        // from the header, before the tar reader would buffer it.
        let zeros = vec![b'a'; 64 << 20];
        for (kind, says) in [
            (b'L', "GNU long name"),
            (b'x', "PAX header"),
            (b'K', "GNU long name"),
        ] {
            let archive = raw_entry(kind, 1 << 30, &zeros);
            let error = unpack(&archive, &out.path().join("x")).unwrap_err();
            assert!(matches!(error, CodeError::TooLarge(_)), "{error}");
            assert!(error.to_string().contains(says), "{error}");
        }
        // Within the bound, a long name is fine.
        assert!(check_headers(&raw_entry(b'L', 300, &[b'a'; 512])).is_ok());
        assert_eq!(header_number(b"\x80\0\0\0\0\0\0\0\0\0\x01\0"), Some(256));
        assert_eq!(header_number(b"00000001000\0"), Some(512));
        assert_eq!(header_number(b"zz"), None);
    }

    #[test]
    fn an_entry_that_clashes_with_an_earlier_one_is_the_archives_fault() {
        let mut builder =
            tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, data) in [("a", &b"file"[..]), ("a/b", &b"under a file"[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_path(path).unwrap();
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        let archive = builder.into_inner().unwrap().finish().unwrap();
        let out = tempfile::tempdir().unwrap();
        let error = unpack(&archive, &out.path().join("code")).unwrap_err();
        assert!(matches!(error, CodeError::Entry { .. }), "{error}");
        let said = error.to_string();
        assert!(
            said.contains("\"a/b\"") && said.contains("clashes"),
            "{said}"
        );
        assert!(!said.contains(&out.path().display().to_string()), "{said}");
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
