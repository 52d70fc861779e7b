//! A Gemma 3 text decoder in safetensors (`Gemma3ForCausalLM`, `model_type`
//! `gemma3_text`, or the language model of `Gemma3ForConditionalGeneration`,
//! `gemma3`, whose vision tower is left out) as GGUF, as llama.cpp's converter writes
//! it: the `gemma3.*` hyperparameters with the converter's defaults, gemma's norm
//! weights shifted by +1 (Gemma3RMSNorm scales by `1 + w`), the embedding cut to the
//! vocabulary, and the SentencePiece tokenizer ([`super::sentencepiece`]) without a
//! space prefix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QTensor;
use candle_core::DType;
use serde_json::Value as Json;

use super::decoder::{sort_as_llama_cpp, storage_type};
use super::sentencepiece::sentencepiece_metadata;
use super::tensor_names::{gguf_tensor_name, NormNames};
use super::{load_safetensors, require_u32, write_gguf};
use crate::error::{EngineError, Result};

/// `config.json` `model_type`s this module imports.
pub const GEMMA3_MODEL_TYPES: &[&str] = &["gemma3_text", "gemma3"];

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidModel(msg.into())
}

/// The text model's hyperparameters: the root of a `gemma3_text` config, the root
/// with its `text_config` laid over it for `gemma3`.
fn text_hparams(config: &Json) -> Json {
    let mut merged = config.clone();
    if let (Some(root), Some(text)) = (merged.as_object_mut(), config["text_config"].as_object()) {
        root.extend(text.clone());
    }
    merged
}

/// Convert a Gemma 3 directory (its parsed `config.json` is `config`) into a GGUF.
pub fn gemma3_to_gguf(files: &BTreeMap<String, PathBuf>, config: &Json, out: &Path) -> Result<()> {
    let h = text_hparams(config);
    let u32_or = |k: &str, default: u32| -> u32 {
        h[k].as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(default)
    };
    if !h["attn_logit_softcapping"].is_null() {
        return Err(EngineError::UnsupportedArchitecture(
            "a gemma3 config with attn_logit_softcapping (Gemma 3 has none)".into(),
        ));
    }
    let head_dim = u32_or("head_dim", 256);
    let key = |k: &str| format!("gemma3.{k}");
    let mut metadata: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String("gemma3".into()),
        ),
        (
            key("context_length"),
            Value::U32(u32_or("max_position_embeddings", 131_072)),
        ),
        (
            key("embedding_length"),
            Value::U32(require_u32(&h, "hidden_size")?),
        ),
        (
            key("block_count"),
            Value::U32(require_u32(&h, "num_hidden_layers")?),
        ),
        (
            key("feed_forward_length"),
            Value::U32(require_u32(&h, "intermediate_size")?),
        ),
        (
            key("attention.head_count"),
            Value::U32(u32_or("num_attention_heads", 8)),
        ),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(h["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32),
        ),
        (key("attention.key_length"), Value::U32(head_dim)),
        (key("attention.value_length"), Value::U32(head_dim)),
        ("general.file_type".into(), Value::U32(1)),
        (
            key("rope.freq_base"),
            Value::F32(h["rope_theta"].as_f64().unwrap_or(1_000_000.0) as f32),
        ),
        (
            key("attention.sliding_window"),
            Value::U32(require_u32(&h, "sliding_window")?),
        ),
        (
            key("attention.head_count_kv"),
            Value::U32(u32_or("num_key_value_heads", 4)),
        ),
    ];
    let scaling = &h["rope_scaling"];
    if !scaling.is_null() {
        let kind = scaling["rope_type"]
            .as_str()
            .or_else(|| scaling["type"].as_str());
        if kind != Some("linear") {
            return Err(EngineError::UnsupportedArchitecture(format!(
                "gemma3 rope_scaling type {} (the converter takes linear only)",
                scaling["rope_type"]
            )));
        }
        let factor = scaling["factor"]
            .as_f64()
            .ok_or_else(|| invalid("config.json: rope_scaling without a factor"))?;
        metadata.push((key("rope.scaling.type"), Value::String("linear".into())));
        metadata.push((key("rope.scaling.factor"), Value::F32(factor as f32)));
    }
    if let Some(name) = config["_name_or_path"].as_str().filter(|s| !s.is_empty()) {
        metadata.push(("general.name".into(), Value::String(name.to_string())));
    }
    let vocab_size = h["vocab_size"].as_u64().map(|v| v as usize);
    let tokenizer = sentencepiece_metadata(files, config, vocab_size)?;
    let n_tokens = tokenizer
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", Value::Array(a)) => Some(a.len()),
            _ => None,
        })
        .unwrap_or(0);
    metadata.extend(tokenizer);
    metadata.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)));

    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (hf, tensor) in load_safetensors(files)? {
        let hf = hf.replace("language_model.", "");
        if [
            "multi_modal_projector.",
            "vision_tower.",
            "multimodal_projector.",
            "vision_model.",
        ]
        .iter()
        .any(|p| hf.starts_with(p))
        {
            continue;
        }
        let Some(name) = gguf_tensor_name(&hf, NormNames::Gemma3) else {
            return Err(invalid(format!(
                "tensor '{hf}' has no place in a gemma3 model"
            )));
        };
        let mut tensor = tensor.to_dtype(DType::F32)?;
        if name == "token_embd.weight" && tensor.dim(0)? > n_tokens {
            tensor = tensor.narrow(0, 0, n_tokens)?;
        }
        if hf.ends_with("norm.weight") {
            tensor = (tensor + 1.0)?;
        }
        let dtype = storage_type(&tensor);
        tensors.push((name, QTensor::quantize(&tensor, dtype)?));
    }
    if !tensors.iter().any(|(n, _)| n == "token_embd.weight") {
        return Err(invalid(
            "no token embeddings found in the safetensors files",
        ));
    }
    sort_as_llama_cpp(&mut tensors);
    write_gguf(out, &metadata, &tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_text_config_of_a_multimodal_gemma3_is_laid_over_the_root() {
        let h = text_hparams(&json!({"model_type": "gemma3", "vocab_size": 1,
            "text_config": {"hidden_size": 2560, "vocab_size": 262208}}));
        assert_eq!(h["hidden_size"], 2560);
        assert_eq!(h["vocab_size"], 262208);
    }
}
