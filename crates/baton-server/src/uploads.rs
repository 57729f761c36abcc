//! Uploaded things in the data directory: each function's wasm module or unpacked code,
//! made from the store's copy of its upload (never from a path a manifest names), and
//! removed once no stored function uses it.

use crate::DiskCounters;
use baton_runtime::manifest::{FunctionKind, FunctionSpec};
use baton_store::Store;
use std::path::PathBuf;

/// Where uploaded things live in the data directory: wasm modules and unpacked code.
#[derive(Debug, Clone)]
pub(crate) struct UploadDirs {
    pub(crate) modules: PathBuf,
    pub(crate) code: PathBuf,
}

/// Removes what `dirs` holds that no stored function uses (a redeploy's old module or code
/// directory, a deleted function's); staging directories (`.unpacking-…`) of installs
/// under way are left. Returns how many went. Callers hold `AppState::uploads` (or run
/// before serving).
pub(crate) fn sweep_uploads(store: &Store, dirs: &UploadDirs, disk: &DiskCounters) -> usize {
    let used: std::collections::HashSet<String> = match store.functions() {
        Ok(functions) => functions
            .into_iter()
            .filter_map(|f| f.module_hash)
            .collect(),
        // Nothing is removed on a guess.
        Err(error) => {
            tracing::error!("cannot list functions to sweep uploads: {error}");
            return 0;
        }
    };
    let mut removed = 0;
    for (dir, suffix) in [(&dirs.modules, ".wasm"), (&dirs.code, "")] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hash) = name.strip_suffix(suffix) else {
                continue;
            };
            if name.starts_with('.') || used.contains(hash) {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match gone {
                Ok(()) => removed += 1,
                Err(error) => tracing::warn!("cannot remove {}: {error}", path.display()),
            }
        }
    }
    disk.uploads_removed
        .fetch_add(removed as u64, std::sync::atomic::Ordering::Relaxed);
    removed
}

/// A stored manifest made runnable from its upload (never from a path the manifest names):
/// a wasm module is written to the modules directory, a process function's code archive
/// unpacked into the code directory (each only if missing), and the spec points there.
pub(crate) fn materialize(
    store: &Store,
    dirs: &UploadDirs,
    manifest: &str,
    upload_hash: Option<&str>,
) -> Result<FunctionSpec, String> {
    let mut spec = FunctionSpec::from_toml(manifest).map_err(|e| e.to_string())?;
    let Some(hash) = upload_hash else {
        return Err(
            "no uploaded module or code (deployed by an older baton with a server \
                    path): deploy it again"
                .into(),
        );
    };
    let upload = || -> Result<Vec<u8>, String> {
        store
            .module(hash)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("upload {hash} missing from the store"))
    };
    match &mut spec.kind {
        FunctionKind::Wasm { module } => {
            let path = dirs.modules.join(format!("{hash}.wasm"));
            if !path.exists() {
                std::fs::write(&path, upload()?).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            *module = path;
        }
        FunctionKind::Process { .. } => {
            let dir = dirs.code.join(hash);
            if !dir.is_dir() {
                baton_runtime::code::unpack(&upload()?, &dir).map_err(|e| e.to_string())?;
            }
            spec.workdir = Some(dir);
        }
    }
    Ok(spec)
}
