//! Copy, delete and pruning: the operations that share blobs between manifests and
//! must never delete a blob another manifest still uses.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::blob::{self, TEMP_PREFIX};
use crate::digest::{scan_digests, Digest};
use crate::error::{IoContext, Result, StoreError};
use crate::manifest::Manifest;
use crate::name::ModelName;
use crate::store::Store;

/// Temp files older than this are leftovers of a crash and removed by startup pruning.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);
/// How deep the reference scan follows directories (and symlinks) under `manifests/`.
const MAX_SCAN_DEPTH: usize = 8;

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub temp_files_removed: usize,
    /// Why nothing was pruned, when pruning was skipped.
    pub skipped: Option<String>,
}

impl Store {
    /// Copy `src`'s manifest to `dst` byte for byte; the blobs are shared.
    /// `NotFound(src)` when `src` does not exist. Copying onto itself is a no-op.
    pub fn copy(&self, src: &ModelName, dst: &ModelName) -> Result<()> {
        let not_found = || StoreError::NotFound(src.as_given().to_string());
        let (src_path, _) = self.locate(src)?.ok_or_else(not_found)?;
        let dst_path = self.write_path(dst)?;
        if dst_path == src_path {
            return Ok(());
        }
        let bytes = fs::read(&src_path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_found(),
            _ => StoreError::io(format!("reading {}", src_path.display()), e),
        })?;
        blob::write_atomic(self.manifests_dir(), &dst_path, &bytes)
    }

    /// Delete `name`: remove its manifest, prune empty directories under `manifests/`,
    /// then remove those of its blobs that no other manifest references.
    /// A manifest that does not parse is still deleted.
    pub fn delete(&self, name: &ModelName) -> Result<PruneReport> {
        let not_found = || StoreError::NotFound(name.as_given().to_string());
        let (path, _) = self.locate(name)?.ok_or_else(not_found)?;
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_found(),
            _ => StoreError::io(format!("reading {}", path.display()), e),
        })?;
        let candidates = match Manifest::from_bytes(&bytes) {
            Ok(m) => m.digests(),
            Err(_) => scan_digests(&bytes),
        };
        fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_found(),
            _ => StoreError::io(format!("removing {}", path.display()), e),
        })?;
        if let Err(e) = prune_empty_dirs(self.manifests_dir(), true) {
            tracing::warn!(error = %e, "could not prune empty manifest directories");
        }
        // The model is gone; failing to reclaim space is only worth a warning.
        match self.remove_blobs_if_unreferenced(&candidates) {
            Ok(report) => Ok(report),
            Err(e) => {
                tracing::warn!(model = %name, error = %e, "could not remove unused blobs");
                Ok(PruneReport::default())
            }
        }
    }

    /// Remove the blobs of `manifest` (layers and config) that no manifest in the store
    /// references any more. Used after `delete`, and by create/pull when they replace a
    /// manifest (Ollama's `RemoveLayers`; the caller skips it under `OLLAMA_NOPRUNE`).
    pub fn remove_unreferenced_layers(&self, manifest: &Manifest) -> Result<PruneReport> {
        self.remove_blobs_if_unreferenced(&manifest.digests())
    }

    fn remove_blobs_if_unreferenced(&self, candidates: &[Digest]) -> Result<PruneReport> {
        let referenced = self.referenced_digests()?;
        let mut report = PruneReport::default();
        let mut seen = HashSet::new();
        for d in candidates {
            if referenced.contains(d) || !seen.insert(d) {
                continue;
            }
            self.remove_blob(d, &mut report)?;
        }
        Ok(report)
    }

    fn remove_blob(&self, d: &Digest, report: &mut PruneReport) -> Result<()> {
        let path = self.blob_path(d);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(digest = %d, "removed unused blob");
                report.blobs_removed += 1;
                report.bytes_freed += size;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("removing {}", path.display()), e)),
        }
    }

    /// Every digest referred to by any file under `manifests/`, at any depth (newer
    /// Ollama nests some manifests five levels deep). Parsed manifests contribute their
    /// layers; every file also contributes each `sha256[:-]<hex>` string it contains,
    /// so a file we cannot parse still protects its blobs.
    fn referenced_digests(&self) -> Result<HashSet<Digest>> {
        let mut refs = HashSet::new();
        collect_refs(self.manifests_dir(), 0, &mut refs)?;
        Ok(refs)
    }

    /// Startup pruning: remove blobs no manifest references, stale temp files and
    /// empty manifest directories. Pass `no_prune = true` when `OLLAMA_NOPRUNE` is set.
    /// Like Ollama, nothing is pruned when a manifest is corrupt. Files in `blobs/` that
    /// are not named like a digest (e.g. partial downloads) are left alone.
    pub fn prune_unreferenced(&self, no_prune: bool) -> Result<PruneReport> {
        if no_prune {
            return Ok(PruneReport {
                skipped: Some("pruning disabled (OLLAMA_NOPRUNE)".into()),
                ..PruneReport::default()
            });
        }
        for (path, name) in self.manifest_entries() {
            if name.is_none() {
                continue;
            }
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| Manifest::from_bytes(&b).map_err(|e| e.to_string()));
            if let Err(reason) = parsed {
                let why = format!("corrupt manifest {}: {reason}", path.display());
                tracing::warn!("{why}; skipping prune. Re-pull or delete to clear");
                return Ok(PruneReport {
                    skipped: Some(why),
                    ..PruneReport::default()
                });
            }
        }

        let mut report = PruneReport::default();
        let now = SystemTime::now();
        for dir in [self.blobs_dir(), self.manifests_dir()] {
            report.temp_files_removed += remove_stale_temps(dir, now)?;
        }

        let referenced = self.referenced_digests()?;
        let rd = fs::read_dir(self.blobs_dir())
            .ctx(|| format!("reading {}", self.blobs_dir().display()))?;
        for entry in rd {
            let entry = entry.ctx(|| format!("reading {}", self.blobs_dir().display()))?;
            let Some(d) = entry.file_name().to_str().and_then(Digest::from_file_name) else {
                continue;
            };
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if !is_file || referenced.contains(&d) {
                continue;
            }
            // A legacy `sha256:` name is removed under its own name.
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += size;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {}", path.display()), e)),
            }
        }
        prune_empty_dirs(self.manifests_dir(), true)?;
        tracing::info!(
            removed = report.blobs_removed,
            bytes = report.bytes_freed,
            "pruned unused blobs"
        );
        Ok(report)
    }

    /// Rename legacy blob files named `sha256:<hex>` to `sha256-<hex>` (Ollama's
    /// `fixBlobs`). Returns how many were fixed.
    pub fn fix_legacy_blob_names(&self) -> Result<usize> {
        let dir = self.blobs_dir();
        let mut fixed = 0;
        let rd = fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))?;
        for entry in rd {
            let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("sha256:") {
                continue;
            }
            let Some(d) = Digest::from_file_name(name) else {
                continue;
            };
            let from = entry.path();
            let to = dir.join(d.file_name());
            let res = if to.exists() {
                fs::remove_file(&from)
            } else {
                fs::rename(&from, &to)
            };
            res.ctx(|| format!("renaming {}", from.display()))?;
            fixed += 1;
        }
        Ok(fixed)
    }
}

fn collect_refs(dir: &Path, depth: usize, refs: &mut HashSet<Digest>) -> Result<()> {
    if depth > MAX_SCAN_DEPTH {
        return Ok(());
    }
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(format!("reading {}", dir.display()), e)),
    };
    for entry in rd {
        let path = entry.ctx(|| format!("reading {}", dir.display()))?.path();
        // Follow symlinks: `list` does, so what it shows must be protected too.
        let Ok(meta) = fs::metadata(&path) else {
            continue; // dangling symlink
        };
        if meta.is_dir() {
            collect_refs(&path, depth + 1, refs)?;
        } else if meta.is_file() {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Removed meanwhile (e.g. a temp file renamed into place).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
            };
            if let Ok(m) = Manifest::from_bytes(&bytes) {
                refs.extend(m.digests());
            }
            refs.extend(scan_digests(&bytes));
        }
    }
    Ok(())
}

fn remove_stale_temps(dir: &Path, now: SystemTime) -> Result<usize> {
    let mut removed = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(format!("reading {}", dir.display()), e)),
    };
    for entry in rd.filter_map(|e| e.ok()) {
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        let Ok(meta) = entry.metadata() else { continue };
        if !is_temp || !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age >= STALE_TEMP_AGE && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Remove empty directories below `dir` (and `dir` itself unless `keep_root`).
/// Symlinks are not followed. Returns whether `dir` is now gone or empty.
fn prune_empty_dirs(dir: &Path, keep_root: bool) -> Result<bool> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::io(format!("reading {}", dir.display()), e)),
    };
    if !meta.is_dir() {
        return Ok(false);
    }
    let mut empty = true;
    for entry in fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let path = entry.ctx(|| format!("reading {}", dir.display()))?.path();
        if !prune_empty_dirs(&path, false)? {
            empty = false;
        }
    }
    if empty && !keep_root {
        match fs::remove_dir(dir) {
            Ok(()) => {}
            // Something was written meanwhile; keep it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return Ok(false),
        }
    }
    Ok(empty)
}
