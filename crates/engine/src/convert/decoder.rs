//! A llama-family decoder in safetensors (llama and mistral, qwen2, qwen3) as GGUF,
//! as llama.cpp's `convert_hf_to_gguf.py` writes it: the `<arch>.*` hyperparameters
//! from `config.json`, llama.cpp's tensor names, llama's q/k rows permuted from the
//! Hugging Face rotary layout to ggml's interleaved pairs, llama 3's `rope_freqs`
//! factors, matrices in F16 and vectors in F32, and the tokenizer and chat template
//! ([`super::bpe_vocab`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;

use super::bpe_vocab::bpe_metadata;
use super::tensor_names::{gguf_tensor_name, NormNames};
use super::{load_safetensors, require_u32, write_gguf};
use crate::error::{EngineError, Result};

/// `config.json` `model_type`s this module imports.
pub const DECODER_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidModel(msg.into())
}

/// Convert a decoder directory (its parsed `config.json` is `config`) into a GGUF.
pub fn decoder_to_gguf(files: &BTreeMap<String, PathBuf>, config: &Json, out: &Path) -> Result<()> {
    let arch = match config["model_type"].as_str().unwrap_or("") {
        "llama" | "mistral" => "llama",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        other => {
            return Err(EngineError::UnsupportedArchitecture(format!(
                "safetensors model_type '{other}'"
            )))
        }
    };
    let n_embd = require_u32(config, "hidden_size")?;
    let n_head = require_u32(config, "num_attention_heads")?;
    let n_head_kv = config["num_key_value_heads"]
        .as_u64()
        .map_or(n_head, |v| v as u32);
    if n_head == 0 || n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) {
        return Err(invalid(format!(
            "config.json: {n_head} attention heads cannot share {n_head_kv} key/value heads"
        )));
    }
    let head_dim = config["head_dim"]
        .as_u64()
        .map_or(n_embd / n_head, |v| v as u32);
    let vocab_size = require_u32(config, "vocab_size")?;
    let rope_theta = config["rope_theta"].as_f64().unwrap_or(10_000.0);

    let key = |k: &str| format!("{arch}.{k}");
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.file_type".into(), Value::U32(1)),
        (
            key("block_count"),
            Value::U32(require_u32(config, "num_hidden_layers")?),
        ),
        (
            key("context_length"),
            Value::U32(require_u32(config, "max_position_embeddings")?),
        ),
        (key("embedding_length"), Value::U32(n_embd)),
        (
            key("feed_forward_length"),
            Value::U32(require_u32(config, "intermediate_size")?),
        ),
        (key("attention.head_count"), Value::U32(n_head)),
        (key("attention.head_count_kv"), Value::U32(n_head_kv)),
        (key("rope.freq_base"), Value::F32(rope_theta as f32)),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(config["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32),
        ),
        (key("vocab_size"), Value::U32(vocab_size)),
    ];
    if arch == "llama" {
        metadata.push((key("rope.dimension_count"), Value::U32(head_dim)));
    }
    if config["head_dim"].is_u64() {
        metadata.push((key("attention.key_length"), Value::U32(head_dim)));
        metadata.push((key("attention.value_length"), Value::U32(head_dim)));
    }
    if let Some(name) = config["_name_or_path"].as_str().filter(|s| !s.is_empty()) {
        metadata.push(("general.name".into(), Value::String(name.to_string())));
    }
    let rope_freqs = rope_scaling(config, &key, &mut metadata, rope_theta, head_dim as usize)?;
    metadata.extend(bpe_metadata(files, config, vocab_size as usize)?);

    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (hf, tensor) in load_safetensors(files)? {
        if hf.ends_with("rotary_emb.inv_freq") {
            continue; // recomputed from rope_theta, as llama.cpp drops it
        }
        let Some(name) = gguf_tensor_name(&hf, NormNames::Llama) else {
            return Err(invalid(format!(
                "tensor '{hf}' has no place in a {arch} model"
            )));
        };
        let tensor = tensor.to_dtype(DType::F32)?;
        let tensor = if arch == "llama" && name.ends_with("attn_q.weight") {
            permute_rotary_rows(&tensor, n_head as usize, head_dim as usize)?
        } else if arch == "llama" && name.ends_with("attn_k.weight") {
            permute_rotary_rows(&tensor, n_head_kv as usize, head_dim as usize)?
        } else {
            tensor
        };
        tensors.push((name, QTensor::quantize(&tensor, storage_type(&tensor))?));
    }
    if let Some(factors) = rope_freqs {
        let t = Tensor::from_vec(factors.clone(), factors.len(), &Device::Cpu)?;
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    }
    if !tensors.iter().any(|(n, _)| n == "token_embd.weight") {
        return Err(invalid(
            "no token embeddings found in the safetensors files",
        ));
    }
    sort_as_llama_cpp(&mut tensors);
    write_gguf(out, &metadata, &tensors)
}

/// `rope_scaling`: llama 3's factors become the `rope_freqs` tensor (returned); linear
/// scaling becomes its two keys; any other kind is refused by name.
fn rope_scaling(
    config: &Json,
    key: &dyn Fn(&str) -> String,
    metadata: &mut Vec<(String, Value)>,
    rope_theta: f64,
    head_dim: usize,
) -> Result<Option<Vec<f32>>> {
    let scaling = &config["rope_scaling"];
    if scaling.is_null() {
        return Ok(None);
    }
    let kind = scaling["rope_type"]
        .as_str()
        .or_else(|| scaling["type"].as_str())
        .unwrap_or("");
    let factor = scaling["factor"].as_f64().unwrap_or(1.0);
    match kind {
        "llama3" => {
            let low = scaling["low_freq_factor"].as_f64().unwrap_or(1.0);
            let high = scaling["high_freq_factor"].as_f64().unwrap_or(4.0);
            let old_ctx = scaling["original_max_position_embeddings"]
                .as_f64()
                .unwrap_or(8192.0);
            Ok(Some(llama3_rope_factors(
                head_dim,
                rope_theta as f32,
                factor as f32,
                low as f32,
                high as f32,
                old_ctx as f32,
            )))
        }
        "linear" => {
            metadata.push((key("rope.scaling.type"), Value::String("linear".into())));
            metadata.push((key("rope.scaling.factor"), Value::F32(factor as f32)));
            Ok(None)
        }
        "default" => Ok(None),
        other => Err(EngineError::UnsupportedArchitecture(format!(
            "config.json rope_scaling type '{other}' is not imported yet"
        ))),
    }
}

/// llama 3's per-frequency rope factors (what llama.cpp's converter stores as
/// `rope_freqs.weight`, computed in f32 as it computes them): high frequencies
/// unscaled, low ones divided by `factor`, a smooth blend between.
pub(crate) fn llama3_rope_factors(
    head_dim: usize,
    base: f32,
    factor: f32,
    low: f32,
    high: f32,
    old_ctx: f32,
) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Hugging Face keeps each head's rotary pairs as two halves (all first elements, then
/// all second ones); ggml's llama rope wants them interleaved. Row `h*d + 2*i + j` of
/// the result is row `h*d + j*d/2 + i` of `w`.
fn permute_rotary_rows(w: &Tensor, n_head: usize, head_dim: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if rows != n_head * head_dim || !head_dim.is_multiple_of(2) {
        return Err(invalid(format!(
            "a q/k projection of {rows} rows does not hold {n_head} heads of {head_dim}"
        )));
    }
    Ok(w.reshape((n_head, 2, head_dim / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// How the converter's F16 output stores a tensor: matrices in F16, vectors in F32.
pub(super) fn storage_type(tensor: &Tensor) -> GgmlDType {
    if tensor.rank() == 2 {
        GgmlDType::F16
    } else {
        GgmlDType::F32
    }
}

/// Global tensors first, then the blocks in order (as llama.cpp writes them; readers
/// do not depend on it, people reading a tensor list do).
pub(super) fn sort_as_llama_cpp(tensors: &mut [(String, QTensor)]) {
    let rank = |n: &str| -> (usize, usize, String) {
        match n.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((layer, rest)) => (1, layer.parse().unwrap_or(usize::MAX), rest.to_string()),
            None if n.starts_with("token_embd") || n.starts_with("rope_freqs") => {
                (0, 0, n.to_string())
            }
            None => (2, 0, n.to_string()),
        }
    };
    tensors.sort_by_cached_key(|(n, _)| rank(n));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_rows_interleave_each_head_s_halves() {
        // 2 heads of 4: HF rows per head are [a0 a1 | b0 b1]; ggml wants a0 b0 a1 b1.
        let w = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .and_then(|t| t.reshape((8, 1)))
            .expect("tensor");
        let p = permute_rotary_rows(&w, 2, 4).expect("permute");
        let rows: Vec<f32> = p.flatten_all().and_then(|t| t.to_vec1()).expect("rows");
        assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }

    #[test]
    fn llama3_factors_leave_high_frequencies_and_scale_low_ones() {
        let f = llama3_rope_factors(128, 500_000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }
}
