//! Converting a Hugging Face BERT-class sentence-embedding model (safetensors +
//! `config.json` + `tokenizer.json` + sentence-transformers pooling config) into a GGUF
//! file laid out as llama.cpp's converter does (`bert` architecture), the way Ollama's
//! `create` imports a safetensors directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use serde_json::Value as Json;

use super::{
    load_safetensors, read_json, require_u32, write_gguf, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL,
};
use crate::error::{EngineError, Result};

/// Convert the files of a BERT sentence-embedding model into a GGUF at `out`.
pub fn bert_to_gguf(files: &BTreeMap<String, PathBuf>, out: &Path) -> Result<()> {
    let config = read_json(files, "config.json")?
        .ok_or_else(|| EngineError::InvalidModel("config.json is missing".into()))?;
    let model_type = config["model_type"].as_str().unwrap_or("");
    if model_type != "bert" {
        return Err(EngineError::UnsupportedArchitecture(format!(
            "safetensors model_type '{model_type}' (only 'bert' embedding models convert)"
        )));
    }
    let tokenizer = read_json(files, "tokenizer.json")?
        .ok_or_else(|| EngineError::InvalidModel("tokenizer.json is missing".into()))?;
    let pooling = read_json(files, "1_Pooling/config.json")?;
    let pooling_type: u32 = match &pooling {
        Some(p) if p["pooling_mode_cls_token"].as_bool() == Some(true) => 2,
        _ => 1, // mean, sentence-transformers' default
    };

    let tensors: BTreeMap<String, Tensor> = load_safetensors(files)?;

    let n_layer = require_u32(&config, "num_hidden_layers")?;
    let metadata = bert_metadata(&config, &tokenizer, pooling_type, n_layer)?;
    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    for (hf, tensor) in &tensors {
        let hf = hf.strip_prefix("bert.").unwrap_or(hf);
        let Some(name) = gguf_tensor_name(hf) else {
            continue; // pooler and anything else llama.cpp drops
        };
        // Matrices in f16 (Ollama converts f32 weights to f16); vectors stay f32.
        let dtype = if tensor.rank() == 2 && !name.starts_with("token_types") {
            GgmlDType::F16
        } else {
            GgmlDType::F32
        };
        let tensor = tensor.to_dtype(candle_core::DType::F32)?;
        qtensors.push((name, QTensor::quantize(&tensor, dtype)?));
    }
    if !qtensors.iter().any(|(n, _)| n == "token_embd.weight") {
        return Err(EngineError::InvalidModel(
            "no word embeddings found in the safetensors files".into(),
        ));
    }
    write_gguf(out, &metadata, &qtensors)
}

fn bert_metadata(
    config: &Json,
    tokenizer: &Json,
    pooling_type: u32,
    n_layer: u32,
) -> Result<Vec<(String, Value)>> {
    let vocab = tokenizer["model"]["vocab"]
        .as_object()
        .ok_or_else(|| EngineError::InvalidModel("tokenizer.json: no WordPiece vocab".into()))?;
    let mut by_id: Vec<(u64, &str)> = vocab
        .iter()
        .filter_map(|(t, id)| id.as_u64().map(|id| (id, t.as_str())))
        .collect();
    by_id.sort();
    if by_id.iter().enumerate().any(|(i, (id, _))| *id != i as u64) {
        return Err(EngineError::InvalidModel(
            "tokenizer.json: vocabulary ids are not contiguous".into(),
        ));
    }
    let specials: Vec<&str> = tokenizer["added_tokens"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["content"].as_str()).collect())
        .unwrap_or_default();
    let id_of = |t: &str| vocab.get(t).and_then(Json::as_u64).map(|v| v as u32);
    // llama.cpp's WordPiece vocabulary: "##x" continues a word, other pieces start one
    // and carry the phantom space "▁"; bracketed specials stay as they are.
    let tokens: Vec<Value> = by_id
        .iter()
        .map(|(_, t)| {
            let t = if t.starts_with('[') && t.ends_with(']') {
                t.to_string()
            } else if let Some(rest) = t.strip_prefix("##") {
                rest.to_string()
            } else {
                format!("\u{2581}{t}")
            };
            Value::String(t)
        })
        .collect();
    let types: Vec<Value> = by_id
        .iter()
        .map(|(_, t)| {
            Value::I32(if specials.contains(t) {
                TOKEN_TYPE_CONTROL
            } else {
                TOKEN_TYPE_NORMAL
            })
        })
        .collect();
    let lowercase = tokenizer["normalizer"]["lowercase"]
        .as_bool()
        .unwrap_or(true);
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("bert".into())),
        ("general.file_type".into(), Value::U32(1)),
        ("bert.block_count".into(), Value::U32(n_layer)),
        (
            "bert.context_length".into(),
            Value::U32(require_u32(config, "max_position_embeddings")?),
        ),
        (
            "bert.embedding_length".into(),
            Value::U32(require_u32(config, "hidden_size")?),
        ),
        (
            "bert.feed_forward_length".into(),
            Value::U32(require_u32(config, "intermediate_size")?),
        ),
        (
            "bert.attention.head_count".into(),
            Value::U32(require_u32(config, "num_attention_heads")?),
        ),
        (
            "bert.attention.layer_norm_epsilon".into(),
            Value::F32(config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32),
        ),
        ("bert.attention.causal".into(), Value::Bool(false)),
        ("bert.pooling_type".into(), Value::U32(pooling_type)),
        ("tokenizer.ggml.model".into(), Value::String("bert".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.token_type_count".into(),
            Value::U32(config["type_vocab_size"].as_u64().unwrap_or(2) as u32),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(true)),
        ("wick.tokenizer.lowercase".into(), Value::Bool(lowercase)),
    ];
    for (key, text) in [
        ("tokenizer.ggml.unknown_token_id", "[UNK]"),
        ("tokenizer.ggml.seperator_token_id", "[SEP]"),
        ("tokenizer.ggml.padding_token_id", "[PAD]"),
        ("tokenizer.ggml.cls_token_id", "[CLS]"),
        ("tokenizer.ggml.mask_token_id", "[MASK]"),
    ] {
        if let Some(id) = id_of(text) {
            m.push((key.into(), Value::U32(id)));
        }
    }
    Ok(m)
}

/// llama.cpp's tensor names for Hugging Face BERT names; `None` for dropped tensors.
fn gguf_tensor_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "embeddings.word_embeddings.weight" => Some("token_embd.weight"),
        "embeddings.position_embeddings.weight" => Some("position_embd.weight"),
        "embeddings.token_type_embeddings.weight" => Some("token_types.weight"),
        "embeddings.LayerNorm.weight" => Some("token_embd_norm.weight"),
        "embeddings.LayerNorm.bias" => Some("token_embd_norm.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("encoder.layer.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let target = match module {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{target}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_follow_llama_cpp() {
        assert_eq!(
            gguf_tensor_name("encoder.layer.3.attention.self.query.bias").as_deref(),
            Some("blk.3.attn_q.bias")
        );
        assert_eq!(
            gguf_tensor_name("encoder.layer.0.output.LayerNorm.weight").as_deref(),
            Some("blk.0.layer_output_norm.weight")
        );
        assert_eq!(
            gguf_tensor_name("embeddings.word_embeddings.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_tensor_name("pooler.dense.weight"), None);
    }
}
