//! Manifest, layer and config types, byte-compatible with Ollama's
//! (`manifest/manifest.go`, `manifest/layer.go`, `types/model/config.go`).

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::gojson;

/// Media type of the manifest itself.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of the config blob (`ConfigV2`).
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// GGUF weights (or safetensors for MLX models).
pub const MEDIA_TYPE_MODEL: &str = "application/vnd.ollama.image.model";
/// Vision/audio projector GGUF (mmproj).
pub const MEDIA_TYPE_PROJECTOR: &str = "application/vnd.ollama.image.projector";
/// LoRA adapter GGUF.
pub const MEDIA_TYPE_ADAPTER: &str = "application/vnd.ollama.image.adapter";
/// Go template text.
pub const MEDIA_TYPE_TEMPLATE: &str = "application/vnd.ollama.image.template";
/// Legacy name of the template layer.
pub const MEDIA_TYPE_PROMPT: &str = "application/vnd.ollama.image.prompt";
/// System prompt text.
pub const MEDIA_TYPE_SYSTEM: &str = "application/vnd.ollama.image.system";
/// JSON object of parameters.
pub const MEDIA_TYPE_PARAMS: &str = "application/vnd.ollama.image.params";
/// JSON array of messages.
pub const MEDIA_TYPE_MESSAGES: &str = "application/vnd.ollama.image.messages";
/// License text (the layer may repeat).
pub const MEDIA_TYPE_LICENSE: &str = "application/vnd.ollama.image.license";
/// Individual safetensors tensor (MLX models; `name` is set).
pub const MEDIA_TYPE_TENSOR: &str = "application/vnd.ollama.image.tensor";
/// Config JSON file of a safetensors model (`name` is its path).
pub const MEDIA_TYPE_JSON: &str = "application/vnd.ollama.image.json";
/// Draft model for speculative decoding.
pub const MEDIA_TYPE_DRAFT: &str = "application/vnd.ollama.image.draft";
/// Deprecated embeddings layer; ignored.
pub const MEDIA_TYPE_EMBED: &str = "application/vnd.ollama.image.embed";

/// Treat an explicit JSON `null` like a missing field, as Go's decoder does.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn none_or_empty(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A manifest file (Docker distribution v2 schema).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default, deserialize_with = "null_default")]
    pub schema_version: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub media_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub config: Layer,
    #[serde(default, deserialize_with = "null_default")]
    pub layers: Vec<Layer>,
}

impl Manifest {
    /// A schema-2 manifest with the given config and layers.
    pub fn new(config: Layer, layers: Vec<Layer>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            config,
            layers,
        }
    }

    /// Parse manifest bytes (the first JSON value, like Go's decoder).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        gojson::decode_first(bytes)
    }

    /// The bytes Ollama would write for this manifest (compact JSON and a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        gojson::encode(self).unwrap_or_default()
    }

    /// Sum of the layer sizes plus the config size (`/api/tags` `size`).
    pub fn size(&self) -> u64 {
        self.layers
            .iter()
            .chain(std::iter::once(&self.config))
            .fold(0u64, |acc, l| acc.saturating_add(l.size))
    }

    /// The layers with this media type, in manifest order.
    pub fn layers_of<'a>(&'a self, media_type: &'a str) -> impl Iterator<Item = &'a Layer> + 'a {
        self.layers
            .iter()
            .filter(move |l| l.media_type == media_type)
    }

    /// The weights layer (the last one wins, as in Ollama's `GetModel`).
    pub fn model_layer(&self) -> Option<&Layer> {
        self.layers_of(MEDIA_TYPE_MODEL).last()
    }

    /// Every valid digest the manifest refers to, config included.
    pub fn digests(&self) -> Vec<Digest> {
        self.layers
            .iter()
            .chain(std::iter::once(&self.config))
            .filter_map(|l| Digest::parse(&l.digest).ok())
            .collect()
    }
}

/// One layer (or the config) of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    #[serde(default, deserialize_with = "null_default")]
    pub media_type: String,
    /// `sha256:<hex>`, kept as written in the manifest.
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    #[serde(default, deserialize_with = "null_default")]
    pub size: u64,
    /// The parent model or source path this layer came from.
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub from: Option<String>,
    /// Tensor or file name for safetensors layers.
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub name: Option<String>,
}

impl Layer {
    /// A layer for an existing blob.
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Self {
        Layer {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            from: None,
            name: None,
        }
    }

    /// The layer's digest, validated.
    pub fn parsed_digest(&self) -> Result<Digest, StoreError> {
        Digest::parse(&self.digest)
    }
}

/// The `rootfs` member of the config blob.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

/// The config blob (`model.ConfigV2`). Unknown fields are ignored, missing or `null`
/// fields take their default; serialisation follows Go's field order and `omitempty`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigV2 {
    #[serde(default, deserialize_with = "null_default")]
    pub model_format: String,
    #[serde(default, deserialize_with = "null_default")]
    pub model_family: String,
    #[serde(default, deserialize_with = "null_default")]
    pub model_families: Vec<String>,
    /// Shown as `parameter_size`.
    #[serde(default, deserialize_with = "null_default")]
    pub model_type: String,
    /// Shown as `quantization_level`.
    #[serde(default, deserialize_with = "null_default")]
    pub file_type: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub renderer: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub parser: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub requires: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub remote_host: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub remote_model: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub capabilities: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub context_length: u64,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub embedding_length: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    #[serde(default, deserialize_with = "null_default")]
    pub rootfs: RootFs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_omits_empty_optionals() {
        let d = Digest::of_bytes(b"x");
        let mut l = Layer::new(MEDIA_TYPE_TEMPLATE, &d, 1);
        let s = serde_json::to_string(&l).unwrap();
        assert_eq!(
            s,
            format!(r#"{{"mediaType":"{MEDIA_TYPE_TEMPLATE}","digest":"{d}","size":1}}"#)
        );
        l.from = Some(String::new());
        assert_eq!(serde_json::to_string(&l).unwrap(), s);
        l.from = Some("llama3".into());
        assert!(serde_json::to_string(&l)
            .unwrap()
            .ends_with(r#""from":"llama3"}"#));
    }

    #[test]
    fn nulls_and_missing_fields_default() {
        let m = Manifest::from_bytes(br#"{"schemaVersion":2,"layers":null,"extra":1}"#).unwrap();
        assert_eq!(m.schema_version, 2);
        assert!(m.layers.is_empty());
        assert_eq!(m.config, Layer::default());
        let c: ConfigV2 =
            serde_json::from_str(r#"{"model_families":null,"context_length":null,"x":[1]}"#)
                .unwrap();
        assert_eq!(c, ConfigV2::default());
    }

    #[test]
    fn config_serialises_in_go_order() {
        let c = ConfigV2 {
            model_format: "gguf".into(),
            model_family: "llama".into(),
            model_families: vec!["llama".into()],
            model_type: "3.2B".into(),
            file_type: "Q4_K_M".into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec!["sha256:ab".into()],
            },
            ..ConfigV2::default()
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"3.2B","file_type":"Q4_K_M","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:ab"]}}"#
        );
    }

    #[test]
    fn size_and_model_layer() {
        let d = Digest::of_bytes(b"m");
        let m = Manifest::new(
            Layer::new(MEDIA_TYPE_CONFIG, &d, 10),
            vec![
                Layer::new(MEDIA_TYPE_MODEL, &d, 100),
                Layer::new(MEDIA_TYPE_LICENSE, &d, 5),
            ],
        );
        assert_eq!(m.size(), 115);
        assert_eq!(m.model_layer().map(|l| l.size), Some(100));
        assert_eq!(m.digests().len(), 3);
        assert!(m.to_bytes().ends_with(b"}\n"));
    }
}
