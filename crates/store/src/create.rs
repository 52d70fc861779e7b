//! Building a model's manifest the way Ollama's `createModel` does: base layers, then
//! template, system, license, params and messages layers, then the config blob.

use serde_json::{Map, Value};

use crate::error::{Result, StoreError};
use crate::gojson;
use crate::manifest::{
    ConfigV2, Layer, Manifest, RootFs, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LICENSE, MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_PARAMS, MEDIA_TYPE_PROMPT, MEDIA_TYPE_SYSTEM, MEDIA_TYPE_TEMPLATE,
};
use crate::name::ModelName;
use crate::store::Store;

/// The content of a model to create, once the caller has turned `files`/`from` into
/// layers whose blobs are already in the store.
#[derive(Debug, Clone, Default)]
pub struct NewModel {
    /// Base layers: the GGUF model layer (plus projector/adapter layers), or every layer
    /// of the `from` model (its template, system, params… are then inherited and
    /// overridden by the fields below, as in Ollama).
    pub layers: Vec<Layer>,
    /// Replaces any template layer when non-empty.
    pub template: Option<String>,
    /// Replaces any system layer when non-empty.
    pub system: Option<String>,
    /// Merged over inherited params (new keys win); written with sorted keys.
    pub params: Option<Map<String, Value>>,
    /// Each non-empty text becomes one more license layer.
    pub license: Vec<String>,
    /// Replaces any messages layer when non-empty. Each message should already be in
    /// Ollama's field order (`role`, `content`, …).
    pub messages: Vec<Value>,
    /// Model metadata. `rootfs` is filled in; empty `architecture`/`os` become
    /// `amd64`/`linux` like Ollama's.
    pub config: ConfigV2,
}

impl Store {
    /// Write the small layers and the config blob of `spec`, then the manifest of `name`
    /// (replacing an existing one). Returns the manifest written.
    ///
    /// The blobs of a replaced manifest are not touched; read it first with
    /// [`Store::manifest`] and call [`Store::remove_unreferenced_layers`] afterwards
    /// unless `OLLAMA_NOPRUNE` is set, as Ollama's create handler does.
    pub fn create_model(&self, name: &ModelName, spec: NewModel) -> Result<Manifest> {
        for layer in &spec.layers {
            let d = layer.parsed_digest()?;
            if !self.has_blob(&d) {
                return Err(StoreError::BlobNotFound(d));
            }
        }
        let mut layers = spec.layers;

        if let Some(t) = spec.template.as_deref().filter(|t| !t.is_empty()) {
            layers.retain(|l| {
                l.media_type != MEDIA_TYPE_TEMPLATE && l.media_type != MEDIA_TYPE_PROMPT
            });
            layers.push(self.write_blob_bytes(MEDIA_TYPE_TEMPLATE, t.as_bytes())?);
        }

        if let Some(s) = spec.system.as_deref().filter(|s| !s.is_empty()) {
            layers.retain(|l| l.media_type != MEDIA_TYPE_SYSTEM);
            layers.push(self.write_blob_bytes(MEDIA_TYPE_SYSTEM, s.as_bytes())?);
        }

        for text in spec.license.iter().filter(|t| !t.is_empty()) {
            layers.push(self.write_blob_bytes(MEDIA_TYPE_LICENSE, text.as_bytes())?);
        }

        let mut params = spec.params.unwrap_or_default();
        for layer in layers.iter().filter(|l| l.media_type == MEDIA_TYPE_PARAMS) {
            let d = layer.parsed_digest()?;
            if let Value::Object(existing) = self.read_json(&d)? {
                for (k, v) in existing {
                    params.entry(k).or_insert(v);
                }
            }
        }
        if !params.is_empty() {
            layers.retain(|l| l.media_type != MEDIA_TYPE_PARAMS);
            let bytes = encode(&gojson::sort_keys(Value::Object(params)))?;
            layers.push(self.write_blob_bytes(MEDIA_TYPE_PARAMS, &bytes)?);
        }

        if !spec.messages.is_empty() {
            layers.retain(|l| l.media_type != MEDIA_TYPE_MESSAGES);
            let bytes = encode(&Value::Array(spec.messages))?;
            layers.push(self.write_blob_bytes(MEDIA_TYPE_MESSAGES, &bytes)?);
        }

        let mut config = spec.config;
        if config.architecture.is_empty() {
            config.architecture = "amd64".into();
        }
        if config.os.is_empty() {
            config.os = "linux".into();
        }
        config.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
        };
        let config_layer = self.write_blob_bytes(MEDIA_TYPE_CONFIG, &encode(&config)?)?;

        let manifest = Manifest::new(config_layer, layers);
        self.write_manifest(name, &manifest)?;
        Ok(manifest)
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    gojson::encode(v).map_err(|e| StoreError::io("encoding JSON", std::io::Error::other(e)))
}
