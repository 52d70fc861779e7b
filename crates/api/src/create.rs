//! `POST /api/create`, JSON form (the Modelfile is parsed by the client): a model from
//! one uploaded GGUF blob (`files`) or derived from an existing model (`from`), with
//! `template`, `system`, `parameters`, `license` and `messages` layers.
//!
//! Everything is checked before anything is written (a corrupt GGUF or a missing blob
//! leaves the store unchanged). Ollama's progress statuses (`parsing GGUF`,
//! `quantizing F16 model to Q4_K_M` with `total`/`completed`, `verifying conversion`,
//! `using existing layer …`, `creating new layer …`, `writing manifest`, `success`)
//! stream as NDJSON, or `{"status":"success"}` with `stream: false`. Failures get a
//! real status code, except one after quantizing has begun streaming, which ends the
//! stream with Ollama's `{"error": ...}` line.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use sha2::Digest as _;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wick_engine::quantize::FileType;
use wick_engine::{EngineError, GgufFacts};
use wick_store::{ConfigV2, Digest, Layer, ModelName, NewModel, Store, MEDIA_TYPE_MODEL};
use wick_templating::Message;

use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models::blocking;
use crate::options::OptionsPatch;
use crate::prompt::Template;
use crate::run::ndjson;
use crate::wire;
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct CreateRequest {
    pub model: Option<String>,
    pub name: Option<String>,
    pub from: Option<String>,
    pub files: Option<BTreeMap<String, String>>,
    pub adapters: Option<BTreeMap<String, String>>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Option<Value>,
    pub parameters: Option<Map<String, Value>>,
    pub messages: Option<Vec<Message>>,
    pub quantize: Option<String>,
    pub quantization: Option<String>,
    pub renderer: Option<String>,
    pub parser: Option<String>,
    pub requires: Option<String>,
    pub draft_files: Option<Value>,
    pub draft_quantize: Option<String>,
    pub info: Option<Value>,
    pub modelfile: Option<String>,
    pub path: Option<String>,
    pub stream: Option<bool>,
}

/// Where the weights come from.
#[derive(Debug)]
enum Source {
    /// An existing model to derive from.
    From(ModelName),
    /// One uploaded GGUF: its file name and digest.
    Gguf { file: String, digest: Digest },
    /// The uploaded files of a safetensors model directory, converted to GGUF.
    Safetensors(BTreeMap<String, Digest>),
}

/// A checked create request.
#[derive(Debug)]
pub struct ValidCreateRequest {
    name: ModelName,
    source: Source,
    template: Option<String>,
    system: Option<String>,
    license: Vec<String>,
    parameters: Option<Map<String, Value>>,
    messages: Vec<Value>,
    requires: String,
    stream: bool,
    /// `quantize`: the file type to quantize the model's weights to.
    quantize: Option<FileType>,
}

fn set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

fn set_value(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

impl CreateRequest {
    pub fn validate(self) -> Result<ValidCreateRequest> {
        let name = wire::model_name(self.model.as_deref(), self.name.as_deref())?;
        let quantize = match self.quantize.as_deref().or(self.quantization.as_deref()) {
            None | Some("") => None,
            Some(q) => Some(FileType::parse(q).ok_or_else(|| {
                ApiError::bad(format!(
                    "\"quantize\": unsupported quantization type {q} (q8_0, q4_0, q4_K_S, q4_K_M, q5_K_M and q6_K are)"
                ))
            })?),
        };
        if self.adapters.as_ref().is_some_and(|a| !a.is_empty()) {
            return Err(ApiError::Unsupported("adapters"));
        }
        for (field, given) in [
            ("renderer", set(&self.renderer)),
            ("parser", set(&self.parser)),
            ("draft_quantize", set(&self.draft_quantize)),
            ("draft_files", set_value(&self.draft_files)),
            ("info", set_value(&self.info)),
            ("modelfile", set(&self.modelfile)),
            ("path", set(&self.path)),
        ] {
            if given {
                return Err(ApiError::Unsupported(field));
            }
        }
        let source = match (self.from.filter(|f| !f.is_empty()), self.files) {
            (Some(from), _) => Source::From(ModelName::parse(&from)?),
            (None, Some(files)) => gguf_source(files)?,
            (None, None) => return Err(ApiError::bad("neither 'from' or 'files' was specified")),
        };
        let template = self.template.filter(|t| !t.is_empty());
        if let Some(t) = template.as_deref() {
            Template::compile(t).map_err(|e| ApiError::bad(format!("\"template\": {e}")))?;
        }
        let license = match self.license {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::bad(
                        "\"license\" must be a string or an array of strings",
                    )),
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(ApiError::bad(
                    "\"license\" must be a string or an array of strings",
                ))
            }
        };
        let parameters = match self.parameters {
            Some(p) => {
                OptionsPatch::from_map(&p)
                    .map_err(|e| ApiError::bad(format!("\"parameters\": {e}")))?;
                let p: Map<String, Value> = p.into_iter().filter(|(_, v)| !v.is_null()).collect();
                (!p.is_empty()).then_some(p)
            }
            None => None,
        };
        let messages = self
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|mut m| {
                m.role = m.role.to_lowercase();
                serde_json::to_value(m).map_err(ApiError::internal)
            })
            .collect::<Result<_>>()?;
        Ok(ValidCreateRequest {
            name,
            source,
            template,
            system: self.system.filter(|s| !s.is_empty()),
            license,
            parameters,
            messages,
            requires: self.requires.unwrap_or_default(),
            quantize,
            stream: self.stream.unwrap_or(true),
        })
    }
}

/// `files`: one GGUF, or the files of a safetensors model directory, each named by a
/// relative path and given as a digest.
fn gguf_source(files: BTreeMap<String, String>) -> Result<Source> {
    if files.is_empty() {
        return Err(ApiError::bad("\"files\" is empty"));
    }
    if files
        .keys()
        .any(|f| f.to_lowercase().ends_with(".safetensors"))
    {
        let mut checked = BTreeMap::new();
        for (file, digest) in files {
            checked.insert(file.clone(), checked_file(file, digest)?.1);
        }
        return Ok(Source::Safetensors(checked));
    }
    if files.len() > 1 {
        return Err(ApiError::bad(format!(
            "\"files\": only one GGUF file per model is supported yet, got {}",
            files.len()
        )));
    }
    let Some((file, digest)) = files.into_iter().next() else {
        return Err(ApiError::bad("\"files\" is empty"));
    };
    let (file, digest) = checked_file(file, digest)?;
    Ok(Source::Gguf { file, digest })
}

/// A `files` entry: a relative path without `..`, and a well-formed digest.
fn checked_file(file: String, digest: String) -> Result<(String, Digest)> {
    let path = std::path::Path::new(&file);
    if file.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(ApiError::bad(format!(
            "file path must be relative: {}",
            wick_store::go_quote(&file)
        )));
    }
    let digest = Digest::parse(&digest)
        .map_err(|_| ApiError::bad(format!("\"files\": invalid digest {digest:?} for {file:?}")))?;
    Ok((file, digest))
}

/// The base layers and config of the new model.
fn prepare(
    store: &Store,
    source: &Source,
    requires: &str,
    emit: &mut dyn FnMut(Value),
) -> Result<(Vec<Layer>, ConfigV2)> {
    match source {
        Source::From(base) => {
            let m = store.resolve(base)?;
            let parent = m.name.display_shortest();
            let layers = m
                .manifest
                .layers
                .iter()
                .map(|l| Layer {
                    from: Some(parent.clone()),
                    ..l.clone()
                })
                .collect();
            let mut config = m.config;
            if !requires.is_empty() {
                config.requires = requires.to_string();
            }
            Ok((layers, config))
        }
        Source::Safetensors(files) => {
            let mut paths = BTreeMap::new();
            for (file, digest) in files {
                if !store.has_blob(digest) {
                    return Err(missing_blob(file, digest));
                }
                paths.insert(file.clone(), store.blob_path(digest));
            }
            emit(status("converting model"));
            let digest = convert_to_blob(store, &paths)?;
            let path = store.blob_path(&digest);
            let facts = GgufFacts::read(&path, false)
                .map_err(|e| ApiError::internal(format!("converted model unreadable: {e}")))?;
            let layer = store.layer_from_blob(MEDIA_TYPE_MODEL, &digest)?;
            Ok((vec![layer], config_for(&facts, requires)))
        }
        Source::Gguf { file, digest } => {
            if !store.has_blob(digest) {
                return Err(missing_blob(file, digest));
            }
            let path = store.blob_path(digest);
            let mut magic = [0u8; 4];
            let is_gguf = std::fs::File::open(&path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
                && &magic == b"GGUF";
            if !is_gguf {
                let lower = file.to_lowercase();
                if lower.ends_with(".json") {
                    return Err(ApiError::bad(format!(
                        "{file:?}: a safetensors model needs its .safetensors files too"
                    )));
                }
                return Err(ApiError::bad(format!(
                    "{file:?} is not a GGUF file (no GGUF magic)"
                )));
            }
            emit(status("parsing GGUF"));
            let facts = GgufFacts::read(&path, false)
                .map_err(|e| ApiError::bad(format!("invalid GGUF file {file:?}: {e}")))?;
            wick_engine::model::check_supported(&path).map_err(|e| match e {
                EngineError::UnsupportedArchitecture(_)
                | EngineError::UnsupportedTensorType { .. } => ApiError::bad(e.to_string()),
                other => ApiError::bad(format!("invalid GGUF file {file:?}: {other}")),
            })?;
            let layer = store.layer_from_blob(MEDIA_TYPE_MODEL, digest)?;
            Ok((vec![layer], config_for(&facts, requires)))
        }
    }
}

fn missing_blob(file: &str, digest: &Digest) -> ApiError {
    ApiError::bad(format!(
        "blob \"{digest}\" for {file:?} not found; upload it first with POST /api/blobs/{digest}"
    ))
}

/// The config blob Ollama writes for a GGUF model.
fn config_for(facts: &GgufFacts, requires: &str) -> ConfigV2 {
    ConfigV2 {
        model_format: "gguf".into(),
        model_family: facts.architecture.clone(),
        model_families: vec![facts.architecture.clone()],
        model_type: facts.parameter_size(),
        file_type: facts.file_type.clone(),
        requires: requires.to_string(),
        ..ConfigV2::default()
    }
}

/// Convert a safetensors model into a GGUF blob; a bad directory is a 400 and leaves
/// nothing behind.
fn convert_to_blob(store: &Store, paths: &BTreeMap<String, std::path::PathBuf>) -> Result<Digest> {
    let tmp = tempfile::NamedTempFile::new_in(store.blobs_dir()).map_err(ApiError::internal)?;
    wick_engine::convert::safetensors_to_gguf(paths, tmp.path())
        .map_err(|e| ApiError::bad(format!("converting the safetensors model: {e}")))?;
    wick_engine::model::check_supported(tmp.path())
        .map_err(|e| ApiError::bad(format!("the converted model: {e}")))?;
    commit_file(store, tmp.path())
}

/// Replace the model layer with its weights quantized to `ftype` (a new blob).
fn quantize_layers(
    store: &Store,
    layers: &mut [Layer],
    config: &mut ConfigV2,
    ftype: FileType,
    emit: &mut dyn FnMut(Value),
) -> Result<()> {
    let layer = layers
        .iter_mut()
        .find(|l| l.media_type == MEDIA_TYPE_MODEL)
        .ok_or_else(|| ApiError::bad("\"quantize\": the model has no weights to quantize"))?;
    let src = store.blob_path(&layer.parsed_digest()?);
    let from = if config.file_type.is_empty() {
        "F16".to_string()
    } else {
        config.file_type.clone()
    };
    let what = format!("quantizing {from} model to {}", ftype.name());
    emit(status(&what));
    let size = layer.size;
    let tmp = tempfile::NamedTempFile::new_in(store.blobs_dir()).map_err(ApiError::internal)?;
    // Ollama's progress: the source layer's size as `total`, the share of its tensor
    // bytes done so far as `completed`, under a placeholder digest.
    let progress = |done: u64, total: u64| {
        let completed = if total == 0 {
            size
        } else {
            (size as f64 * done as f64 / total as f64) as u64
        };
        emit(
            json!({"status": what, "digest": QUANTIZE_DIGEST, "total": size, "completed": completed}),
        );
    };
    wick_engine::quantize::quantize_gguf(&src, tmp.path(), ftype, progress).map_err(|e| {
        if e.is_client_error() {
            ApiError::bad(e.to_string())
        } else {
            ApiError::internal(format!("quantizing: {e}"))
        }
    })?;
    emit(status("verifying conversion"));
    let digest = commit_file(store, tmp.path())?;
    *layer = store.layer_from_blob(MEDIA_TYPE_MODEL, &digest)?;
    config.file_type = ftype.name().to_string();
    Ok(())
}

/// The digest Ollama reports quantization progress under.
const QUANTIZE_DIGEST: &str = "0000000000000000000";

fn status(s: &str) -> Value {
    json!({ "status": s })
}

/// Hash a finished file and store it as a blob (atomically); its digest.
fn commit_file(store: &Store, path: &std::path::Path) -> Result<Digest> {
    let mut file = std::fs::File::open(path).map_err(ApiError::internal)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(ApiError::internal)?;
    let digest = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize())))?;
    if !store.has_blob(&digest) {
        let mut writer = store.blob_writer(digest.clone())?;
        let mut file = std::fs::File::open(path).map_err(ApiError::internal)?;
        std::io::copy(&mut file, &mut writer).map_err(ApiError::internal)?;
        writer.commit()?;
    }
    Ok(digest)
}

fn blob_names(store: &Store) -> HashSet<String> {
    std::fs::read_dir(store.blobs_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Create the model, reporting progress through `emit`.
fn create_blocking(
    store: &Store,
    req: ValidCreateRequest,
    no_prune: bool,
    emit: &mut dyn FnMut(Value),
) -> Result<()> {
    // Taken first, so a layer this request made (a conversion, a quantization) is new.
    let before = blob_names(store);
    let (mut layers, mut config) = prepare(store, &req.source, &req.requires, emit)?;
    if let Some(ftype) = req.quantize {
        quantize_layers(store, &mut layers, &mut config, ftype, emit)?;
    }
    let old = store.manifest(&req.name).ok();
    let manifest = store.create_model(
        &req.name,
        NewModel {
            layers,
            template: req.template,
            system: req.system,
            params: req.parameters,
            license: req.license,
            messages: req.messages,
            config,
        },
    )?;
    for layer in &manifest.layers {
        let existed = Digest::parse(&layer.digest)
            .map(|d| before.contains(&d.file_name()))
            .unwrap_or(true);
        let verb = if existed {
            "using existing layer"
        } else {
            "creating new layer"
        };
        emit(status(&format!("{verb} {}", layer.digest)));
    }
    emit(status("writing manifest"));
    if let Some(old) = old {
        if !no_prune && old.manifest != manifest {
            if let Err(e) = store.remove_unreferenced_layers(&old.manifest) {
                tracing::warn!(error = %e, "could not remove the replaced model's unused layers");
            }
        }
    }
    emit(status("success"));
    tracing::info!(model = %req.name, "model created");
    Ok(())
}

fn ndjson_line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// `POST /api/create`. Whatever fails before the long part (quantizing) begins is a
/// real status code, streamed or not; once quantizing reports progress the stream is
/// under way, and a later failure ends it with Ollama's `{"error": ...}` line.
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<Response> {
    let req = req.validate()?;
    let stream = req.stream;
    let store = state.store.clone();
    let no_prune = state.config.no_prune;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let job = tokio::spawn(blocking(move || {
        create_blocking(&store, req, no_prune, &mut |v| {
            let _ = tx.send(v);
        })
    }));
    if !stream {
        drop(rx);
        return match job.await {
            Ok(Ok(())) => Ok(Json(json!({ "status": "success" })).into_response()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(ApiError::internal(format!("create task failed: {e}"))),
        };
    }
    let mut sent = Vec::new();
    loop {
        match rx.recv().await {
            Some(v) => {
                let long_part = v.get("completed").is_some();
                sent.push(v);
                if long_part {
                    break;
                }
            }
            None => {
                // Done before any progress: answer with its statuses or its error.
                return match job.await {
                    Ok(Ok(())) => {
                        let body: String = sent.iter().map(ndjson_line).collect();
                        Ok(ndjson(Body::from(body)))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(ApiError::internal(format!("create task failed: {e}"))),
                };
            }
        }
    }
    let head = futures::stream::iter(sent.iter().map(ndjson_line).collect::<Vec<_>>());
    let rest = futures::stream::unfold((rx, Some(job)), |(mut rx, job)| async move {
        if let Some(v) = rx.recv().await {
            return Some((ndjson_line(&v), (rx, job)));
        }
        let error = match job?.await {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("create task failed: {e}"),
        };
        Some((ndjson_line(&json!({ "error": error })), (rx, None)))
    });
    Ok(ndjson(Body::from_stream(futures::StreamExt::map(
        futures::StreamExt::chain(head, rest),
        Ok::<_, std::convert::Infallible>,
    ))))
}
