//! The store: `$OLLAMA_MODELS/{blobs,manifests}` laid out exactly as Ollama does, so an
//! existing `~/.ollama/models` is served as is. Lookups, listing and model resolution
//! live here; copy/delete/prune are in `ops.rs`, model creation in `create.rs`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Local};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::blob::{self, BlobWriter, PartialBlob, Upload};
use crate::digest::Digest;
use crate::error::{IoContext, Result, StoreError};
use crate::gojson;
use crate::manifest::{self, ConfigV2, Layer, Manifest};
use crate::name::ModelName;

/// An Ollama model store rooted at a directory holding `blobs/` and `manifests/`.
/// Cheap to clone; holds only paths, so it is `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    blobs: PathBuf,
    manifests: PathBuf,
}

/// One entry of [`Store::list`] (and the result of [`Store::manifest`]).
#[derive(Debug, Clone)]
pub struct ListedModel {
    /// The name with the case it has on disk.
    pub name: ModelName,
    pub manifest: Manifest,
    /// sha256 of the manifest file bytes, hex without prefix (`/api/tags` `digest`).
    pub digest_hex: String,
    /// Sum of layer sizes plus config size.
    pub size: u64,
    /// The manifest file's mtime.
    pub modified_at: DateTime<Local>,
}

/// Everything needed to serve a model, read from its manifest and small blobs.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The name with the case it has on disk.
    pub name: ModelName,
    pub manifest: Manifest,
    pub digest_hex: String,
    pub size: u64,
    pub modified_at: DateTime<Local>,
    /// The config blob (default when the manifest has no config digest).
    pub config: ConfigV2,
    /// Blob path of the weights (`…image.model`, last one wins); `None` for models
    /// without one (cloud stubs, safetensors-tensor models).
    pub model_path: Option<PathBuf>,
    /// The model layer's `from` (shown as `parent_model`).
    pub parent_model: Option<String>,
    pub projector_paths: Vec<PathBuf>,
    pub adapter_paths: Vec<PathBuf>,
    /// Template text (`…image.template` or legacy `…image.prompt`).
    pub template: Option<String>,
    pub system: Option<String>,
    /// The params layer, a JSON object.
    pub params: Option<Map<String, Value>>,
    /// The messages layer, a JSON array (empty when absent).
    pub messages: Vec<Value>,
    /// License texts, in layer order.
    pub license: Vec<String>,
}

impl Store {
    /// Open (and create when missing) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let store = Store {
            blobs: root.join("blobs"),
            manifests: root.join("manifests"),
            root,
        };
        for dir in [&store.blobs, &store.manifests] {
            fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        Ok(store)
    }

    /// Open the store at `$OLLAMA_MODELS`, or `~/.ollama/models`.
    pub fn from_env() -> Result<Self> {
        let root = Self::default_root().ok_or_else(|| {
            StoreError::io(
                "locating the model store (set OLLAMA_MODELS)",
                io::Error::new(io::ErrorKind::NotFound, "no home directory"),
            )
        })?;
        Self::open(root)
    }

    /// `$OLLAMA_MODELS` (trimmed of spaces and quotes, as Ollama's envconfig does) or
    /// `~/.ollama/models`.
    pub fn default_root() -> Option<PathBuf> {
        if let Ok(v) = std::env::var("OLLAMA_MODELS") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            if !v.is_empty() {
                return Some(PathBuf::from(v));
            }
        }
        let home = std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .filter(|h| !h.is_empty())?;
        Some(PathBuf::from(home).join(".ollama").join("models"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    pub fn manifests_dir(&self) -> &Path {
        &self.manifests
    }

    // ---- blobs ----

    /// `blobs/sha256-<hex>` (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.file_name())
    }

    /// Whether the blob file exists.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Start streaming a blob whose content must hash to `expected`.
    pub fn blob_writer(&self, expected: Digest) -> Result<BlobWriter> {
        fs::create_dir_all(&self.blobs).ctx(|| format!("creating {}", self.blobs.display()))?;
        BlobWriter::new(&self.blobs, expected)
    }

    /// An upload whose digest is named when it ends (a registry push into this store).
    pub fn upload(&self) -> Result<Upload> {
        Upload::new(&self.blobs)
    }

    /// A download of the blob `expected` that resumes where an interrupted one stopped.
    pub fn partial_blob(&self, expected: Digest) -> Result<PartialBlob> {
        PartialBlob::open(&self.blobs, expected)
    }

    /// Store a small blob (template, system, params, config…) and return its layer.
    /// Writing is skipped when the blob already exists.
    pub fn write_blob_bytes(&self, media_type: &str, bytes: &[u8]) -> Result<Layer> {
        let digest = Digest::of_bytes(bytes);
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer(digest.clone())?;
            w.write_all(bytes)?;
            w.commit()?;
        }
        Ok(Layer::new(media_type, &digest, bytes.len() as u64))
    }

    /// A layer for a blob already in the store (e.g. a GGUF uploaded via `/api/blobs`).
    pub fn layer_from_blob(&self, media_type: &str, digest: &Digest) -> Result<Layer> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Layer::new(media_type, digest, m.len())),
            Ok(_) => Err(StoreError::BlobNotFound(digest.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// The bytes of a blob.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => StoreError::io(format!("reading {}", path.display()), e),
        })
    }

    // ---- manifests ----

    /// Find `name`'s manifest, matching each path part case-insensitively (an exact
    /// match wins). Returns the path and the name with its on-disk case.
    pub fn locate(&self, name: &ModelName) -> Result<Option<(PathBuf, ModelName)>> {
        let mut dir = self.manifests.clone();
        let mut found: Vec<String> = Vec::with_capacity(4);
        for (i, part) in name.parts().iter().enumerate() {
            match match_entry(&dir, part, i < 3)? {
                Some(entry) => {
                    dir.push(&entry);
                    found.push(entry);
                }
                None => return Ok(None),
            }
        }
        let [host, ns, model, tag] = found.as_slice() else {
            return Ok(None);
        };
        Ok(ModelName::from_parts(host, ns, model, tag)
            .ok()
            .map(|canonical| (dir, canonical)))
    }

    /// Where a manifest for `name` should be written: an existing path that matches it
    /// case-insensitively (Ollama's `getExistingName`), else the name's own path.
    pub(crate) fn write_path(&self, name: &ModelName) -> Result<PathBuf> {
        let mut dir = self.manifests.clone();
        let parts = name.parts();
        for (i, part) in parts.iter().enumerate() {
            match match_entry(&dir, part, i < 3)? {
                Some(entry) => dir.push(entry),
                None => {
                    dir.extend(&parts[i..]);
                    return Ok(dir);
                }
            }
        }
        Ok(dir)
    }

    /// Read `name`'s manifest. `NotFound` when there is none.
    pub fn manifest(&self, name: &ModelName) -> Result<ListedModel> {
        let (path, canonical) = self
            .locate(name)?
            .ok_or_else(|| StoreError::NotFound(name.as_given().to_string()))?;
        read_manifest_file(&path, canonical).map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                StoreError::NotFound(name.as_given().to_string())
            }
            other => other,
        })
    }

    /// Write `manifest` for `name` atomically (temp file + rename), creating directories.
    /// An existing manifest whose path differs only in case is replaced.
    pub fn write_manifest(&self, name: &ModelName, manifest: &Manifest) -> Result<()> {
        self.write_manifest_bytes(name, &manifest.to_bytes())
    }

    /// `name`'s manifest file as stored (its sha256 is the model's digest), with the
    /// name in its on-disk case. `NotFound` when there is none.
    pub fn manifest_bytes(&self, name: &ModelName) -> Result<(Vec<u8>, ModelName)> {
        let (path, canonical) = self
            .locate(name)?
            .ok_or_else(|| StoreError::NotFound(name.as_given().to_string()))?;
        match fs::read(&path) {
            Ok(bytes) => Ok((bytes, canonical)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(name.as_given().to_string()))
            }
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Write manifest bytes as given (a pulled manifest keeps its digest), atomically.
    pub fn write_manifest_bytes(&self, name: &ModelName, bytes: &[u8]) -> Result<()> {
        let dest = self.write_path(name)?;
        fs::create_dir_all(&self.manifests)
            .ctx(|| format!("creating {}", self.manifests.display()))?;
        blob::write_atomic(&self.manifests, &dest, bytes)
    }

    /// Every model in the store, newest first. Entries that are not valid names or
    /// manifests are skipped with a warning; the listing itself only fails when
    /// `manifests/` cannot be read.
    pub fn list(&self) -> Result<Vec<ListedModel>> {
        let mut out = Vec::new();
        match fs::metadata(&self.manifests) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(StoreError::io(
                    format!("reading {}", self.manifests.display()),
                    e,
                ))
            }
        }
        for (path, name) in self.manifest_entries() {
            let Some(name) = name else {
                tracing::warn!(path = %path.display(), "skipping manifest with an invalid name");
                continue;
            };
            match read_manifest_file(&path, name) {
                Ok(m) => out.push(m),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable manifest"),
            }
        }
        out.sort_by(|a, b| {
            b.modified_at
                .cmp(&a.modified_at)
                .then_with(|| a.name.display_shortest().cmp(&b.name.display_shortest()))
        });
        Ok(out)
    }

    /// Every file at `manifests/<host>/<namespace>/<model>/<tag>`, with its name when the
    /// four parts form a valid one.
    pub(crate) fn manifest_entries(&self) -> Vec<(PathBuf, Option<ModelName>)> {
        let mut out = Vec::new();
        for (host, host_dir) in subdirs(&self.manifests) {
            for (ns, ns_dir) in subdirs(&host_dir) {
                for (model, model_dir) in subdirs(&ns_dir) {
                    for (tag, path) in files(&model_dir) {
                        let name = ModelName::from_parts(&host, &ns, &model, &tag).ok();
                        out.push((path, name));
                    }
                }
            }
        }
        out
    }

    /// Load `name`: its manifest, config, blob paths and small layers.
    pub fn resolve(&self, name: &ModelName) -> Result<ResolvedModel> {
        let listed = self.manifest(name)?;
        let corrupt = |reason: String| StoreError::CorruptManifest {
            path: listed.name.manifest_path(&self.root),
            reason,
        };
        let layer_digest = |l: &Layer| {
            Digest::parse(&l.digest).map_err(|_| {
                corrupt(format!(
                    "invalid digest {:?} in layer {}",
                    l.digest, l.media_type
                ))
            })
        };

        let config = if listed.manifest.config.digest.is_empty() {
            ConfigV2::default()
        } else {
            let d = layer_digest(&listed.manifest.config)?;
            let bytes = self.read_blob(&d)?;
            gojson::decode_first(&bytes).map_err(|e| StoreError::InvalidBlob {
                digest: d,
                reason: e.to_string(),
            })?
        };

        let mut r = ResolvedModel {
            name: listed.name.clone(),
            manifest: listed.manifest.clone(),
            digest_hex: listed.digest_hex.clone(),
            size: listed.size,
            modified_at: listed.modified_at,
            config,
            model_path: None,
            parent_model: None,
            projector_paths: Vec::new(),
            adapter_paths: Vec::new(),
            template: None,
            system: None,
            params: None,
            messages: Vec::new(),
            license: Vec::new(),
        };
        for layer in &listed.manifest.layers {
            let text = |d: &Digest| -> Result<String> {
                Ok(String::from_utf8_lossy(&self.read_blob(d)?).into_owned())
            };
            match layer.media_type.as_str() {
                manifest::MEDIA_TYPE_MODEL => {
                    let d = layer_digest(layer)?;
                    r.model_path = Some(self.existing_blob(&d)?);
                    r.parent_model = layer.from.clone().filter(|f| !f.is_empty());
                }
                manifest::MEDIA_TYPE_PROJECTOR => {
                    let d = layer_digest(layer)?;
                    r.projector_paths.push(self.existing_blob(&d)?);
                }
                manifest::MEDIA_TYPE_ADAPTER => {
                    let d = layer_digest(layer)?;
                    r.adapter_paths.push(self.existing_blob(&d)?);
                }
                manifest::MEDIA_TYPE_TEMPLATE | manifest::MEDIA_TYPE_PROMPT => {
                    r.template = Some(text(&layer_digest(layer)?)?);
                }
                manifest::MEDIA_TYPE_SYSTEM => r.system = Some(text(&layer_digest(layer)?)?),
                manifest::MEDIA_TYPE_LICENSE => r.license.push(text(&layer_digest(layer)?)?),
                manifest::MEDIA_TYPE_PARAMS => {
                    let d = layer_digest(layer)?;
                    r.params = match self.read_json(&d)? {
                        Value::Object(map) => Some(map),
                        Value::Null => None,
                        _ => return Err(invalid_blob(d, "params is not a JSON object")),
                    };
                }
                manifest::MEDIA_TYPE_MESSAGES => {
                    let d = layer_digest(layer)?;
                    r.messages = match self.read_json(&d)? {
                        Value::Array(items) => items,
                        Value::Null => Vec::new(),
                        _ => return Err(invalid_blob(d, "messages is not a JSON array")),
                    };
                }
                manifest::MEDIA_TYPE_EMBED => {
                    tracing::info!(model = %r.name, "ignoring deprecated embeddings layer");
                }
                _ => {}
            }
        }
        Ok(r)
    }

    fn existing_blob(&self, d: &Digest) -> Result<PathBuf> {
        let path = self.blob_path(d);
        if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::BlobNotFound(d.clone()))
        }
    }

    pub(crate) fn read_json(&self, d: &Digest) -> Result<Value> {
        let bytes = self.read_blob(d)?;
        gojson::decode_first(&bytes).map_err(|e| invalid_blob(d.clone(), &e.to_string()))
    }
}

fn invalid_blob(digest: Digest, reason: &str) -> StoreError {
    StoreError::InvalidBlob {
        digest,
        reason: reason.to_string(),
    }
}

/// Read and parse a manifest file.
pub(crate) fn read_manifest_file(path: &Path, name: ModelName) -> Result<ListedModel> {
    let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let manifest = Manifest::from_bytes(&bytes).map_err(|e| StoreError::CorruptManifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mtime = fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(ListedModel {
        name,
        size: manifest.size(),
        digest_hex: hex::encode(Sha256::digest(&bytes)),
        modified_at: DateTime::<Local>::from(mtime),
        manifest,
    })
}

/// The entry of `dir` named `part`, compared case-insensitively (exact match first),
/// that is a directory (`want_dir`) or a file. `None` when `dir` or the entry is missing.
fn match_entry(dir: &Path, part: &str, want_dir: bool) -> Result<Option<String>> {
    let is_kind = |p: &Path| match fs::metadata(p) {
        Ok(m) => m.is_dir() == want_dir && (want_dir || m.is_file()),
        Err(_) => false,
    };
    if is_kind(&dir.join(part)) {
        return Ok(Some(part.to_string()));
    }
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(StoreError::io(format!("reading {}", dir.display()), e)),
    };
    let mut matches: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.eq_ignore_ascii_case(part) && is_kind(&dir.join(n)))
        .collect();
    matches.sort();
    Ok(matches.into_iter().next())
}

/// Entries of `dir` with UTF-8 names, filtered by type; unreadable directories are
/// logged and yield nothing.
fn entries_of(dir: &Path, want_dir: bool) -> Vec<(String, PathBuf)> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read manifest directory");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in rd.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() != want_dir || (!want_dir && !meta.is_file()) {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => out.push((name, path)),
            Err(_) => {
                tracing::warn!(path = %path.display(), "skipping non-UTF-8 manifest path")
            }
        }
    }
    out
}

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    entries_of(dir, true)
}

fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    entries_of(dir, false)
}
