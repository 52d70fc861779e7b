//! The other direction of [`crate::convert`], for tests: a llama/qwen2/qwen3/gemma3
//! GGUF written out as a Hugging Face model directory (`config.json`,
//! `model.safetensors` in F32, `tokenizer.json` for a BPE vocabulary or
//! `tokenizer.model` for a SentencePiece one, `tokenizer_config.json`), laid out as
//! Hugging Face lays such models out (its names, the rotary halves of llama's q/k
//! rows, gemma's norms without their +1, added tokens, the pre-tokenizer spelled
//! out). Importing the directory must give the GGUF back.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value as Json};

use crate::convert::{
    hf_tensor_name, NormNames, SentencePiece, SentencePieceModel, SentencePieceNormalizer,
    SentencePieceTrainer,
};
use crate::error::{EngineError, Result};
use crate::tokenizer::{LLAMA3_PATTERN, QWEN2_PATTERN};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn missing(key: &str) -> EngineError {
    EngineError::MissingMetadata(key.to_string())
}

/// Write the GGUF at `gguf` as a Hugging Face directory `dir`; `extra_config` is
/// merged into `config.json` (e.g. a `rope_scaling` whose factors the GGUF holds as
/// `rope_freqs`, which is then left out).
pub fn write_hf_dir(gguf: &Path, dir: &Path, extra_config: Json) -> Result<()> {
    let mut file = BufReader::new(File::open(gguf).map_err(io(gguf))?);
    let content = Content::read(&mut file)
        .map_err(|e| EngineError::InvalidModel(format!("{}: {e}", gguf.display())))?;
    let meta = &content.metadata;
    let text = |k: &str| -> Result<String> {
        meta.get(k)
            .and_then(|v| v.to_string().ok().cloned())
            .ok_or_else(|| missing(k))
    };
    let arch = text("general.architecture")?;
    let num = |k: &str| -> Result<f64> {
        let v = meta.get(&format!("{arch}.{k}")).ok_or_else(|| missing(k))?;
        v.to_u32()
            .map(f64::from)
            .or_else(|_| v.to_f32().map(f64::from))
            .map_err(|_| missing(k))
    };
    let n_head = num("attention.head_count")? as usize;
    let n_head_kv = num("attention.head_count_kv").unwrap_or(n_head as f64) as usize;
    let n_embd = num("embedding_length")? as usize;
    let head_dim = num("attention.key_length").unwrap_or((n_embd / n_head) as f64) as usize;
    let tokens = string_array(meta, "tokenizer.ggml.tokens")?;

    let gemma3 = arch == "gemma3";
    let mut config = json!({
        "model_type": if gemma3 { "gemma3_text" } else { arch.as_str() },
        "hidden_size": n_embd,
        "intermediate_size": num("feed_forward_length")? as u64,
        "num_hidden_layers": num("block_count")? as u64,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "max_position_embeddings": num("context_length")? as u64,
        "rms_norm_eps": num("attention.layer_norm_rms_epsilon")?,
        "rope_theta": num("rope.freq_base").unwrap_or(10_000.0),
        "vocab_size": tokens.len(),
        "tie_word_embeddings": !content.tensor_infos.contains_key("output.weight"),
    });
    if meta.contains_key(&format!("{arch}.attention.key_length")) {
        config["head_dim"] = json!(head_dim);
    }
    if gemma3 {
        config["sliding_window"] = json!(num("attention.sliding_window")? as u64);
        if let Ok(factor) = num("rope.scaling.factor") {
            config["rope_scaling"] = json!({"rope_type": "linear", "factor": factor});
        }
    }
    for (kind, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = meta.get(key).and_then(|v| v.to_u32().ok()) {
            config[format!("{kind}_token_id")] = json!(id);
        }
    }
    if let (Some(c), Json::Object(extra)) = (config.as_object_mut(), extra_config) {
        c.extend(extra);
    }
    write_json(&dir.join("config.json"), &config)?;

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in content.tensor_infos.keys() {
        if name == "rope_freqs.weight" {
            continue;
        }
        let w = content
            .tensor(&mut file, name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        let w = if arch == "llama" && name.ends_with("attn_q.weight") {
            unpermute(&w, n_head, head_dim)?
        } else if arch == "llama" && name.ends_with("attn_k.weight") {
            unpermute(&w, n_head_kv, head_dim)?
        } else {
            w
        };
        // Gemma's RMS norm scales by 1 + w; the GGUF holds the sum.
        let w = if gemma3 && name.ends_with("norm.weight") {
            (w - 1.0)?
        } else {
            w
        };
        let norms = if gemma3 {
            NormNames::Gemma3
        } else {
            NormNames::Llama
        };
        let hf = hf_tensor_name(name, norms)
            .ok_or_else(|| EngineError::InvalidModel(format!("no Hugging Face name for {name}")))?;
        tensors.insert(hf, w);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;

    let tokenizer_config = if text("tokenizer.ggml.model")? == "llama" {
        let model = sentencepiece_model(meta, &tokens)?;
        std::fs::write(dir.join("tokenizer.model"), model.encode_model())
            .map_err(io(&dir.join("tokenizer.model")))?;
        let mut config = tokenizer_config(meta, &tokens);
        config.insert(
            "added_tokens_decoder".into(),
            added_tokens_decoder(meta, &tokens),
        );
        config
    } else {
        write_json(&dir.join("tokenizer.json"), &bpe_tokenizer(meta, &tokens)?)?;
        tokenizer_config(meta, &tokens)
    };
    write_json(
        &dir.join("tokenizer_config.json"),
        &Json::Object(tokenizer_config),
    )
}

fn token_types(meta: &HashMap<String, Value>, n: usize) -> Vec<i32> {
    match meta.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => vec![1; n],
    }
}

/// SentencePiece spells a space as U+2581.
fn spm_text(token: &str) -> String {
    token.replace(' ', "\u{2581}")
}

/// `tokenizer.model` for the GGUF's `llama` (SentencePiece) vocabulary: a BPE model
/// with byte fallback when it has byte pieces, its special ids, no normalization
/// rules, a dummy prefix unless the GGUF says there is no space prefix.
fn sentencepiece_model(
    meta: &HashMap<String, Value>,
    tokens: &[String],
) -> Result<SentencePieceModel> {
    let Some(Value::Array(scores)) = meta.get("tokenizer.ggml.scores") else {
        return Err(missing("tokenizer.ggml.scores"));
    };
    let types = token_types(meta, tokens.len());
    let id = |key: &str| {
        meta.get(key)
            .and_then(|v| v.to_u32().ok())
            .and_then(|v| i32::try_from(v).ok())
    };
    let unk = id("tokenizer.ggml.unknown_token_id");
    let pieces = tokens
        .iter()
        .zip(scores)
        .zip(&types)
        .enumerate()
        .map(|(i, ((token, score), &kind))| SentencePiece {
            piece: Some(spm_text(token)),
            score: Some(score.to_f32().unwrap_or(0.0)),
            // SentencePiece wants its unknown piece typed so; a converter retypes it
            // from tokenizer_config.json.
            kind: Some(if Some(i as i32) == unk { 2 } else { kind }),
        })
        .collect();
    let flag = |key: &str| meta.get(key).and_then(|v| v.to_bool().ok());
    Ok(SentencePieceModel {
        pieces,
        trainer_spec: Some(SentencePieceTrainer {
            model_type: Some(2),
            byte_fallback: Some(types.contains(&6)),
            unk_id: unk,
            bos_id: id("tokenizer.ggml.bos_token_id").or(Some(-1)),
            eos_id: id("tokenizer.ggml.eos_token_id").or(Some(-1)),
            pad_id: id("tokenizer.ggml.padding_token_id").or(Some(-1)),
        }),
        normalizer_spec: Some(SentencePieceNormalizer {
            name: Some("identity".into()),
            add_dummy_prefix: Some(flag("tokenizer.ggml.add_space_prefix").unwrap_or(true)),
            remove_extra_whitespaces: Some(false),
            escape_whitespaces: Some(true),
        }),
    })
}

/// Control and user-defined tokens as `tokenizer_config.json` lists them.
fn added_tokens_decoder(meta: &HashMap<String, Value>, tokens: &[String]) -> Json {
    let mut added = Map::new();
    for (id, (token, kind)) in tokens
        .iter()
        .zip(token_types(meta, tokens.len()))
        .enumerate()
    {
        if kind == 3 || kind == 4 {
            added.insert(
                id.to_string(),
                json!({"content": spm_text(token), "special": kind == 3, "lstrip": false,
                       "rstrip": false, "normalized": false, "single_word": false}),
            );
        }
    }
    Json::Object(added)
}

fn write_json(path: &Path, v: &Json) -> Result<()> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| EngineError::InvalidModel(e.to_string()))?;
    std::fs::write(path, text).map_err(io(path))
}

fn string_array(meta: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let Some(Value::Array(a)) = meta.get(key) else {
        return Err(missing(key));
    };
    a.iter()
        .map(|v| v.to_string().cloned().map_err(|_| missing(key)))
        .collect()
}

/// Hugging Face's rotary layout back from ggml's: each head's interleaved pairs as
/// two halves.
fn unpermute(w: &Tensor, n_head: usize, head_dim: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    Ok(w.reshape((n_head, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// `tokenizer.json` for the GGUF's `gpt2` tokenizer.
fn bpe_tokenizer(meta: &HashMap<String, Value>, tokens: &[String]) -> Result<Json> {
    let types = token_types(meta, tokens.len());
    let merges = string_array(meta, "tokenizer.ggml.merges")?;
    let pre = meta
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (token, kind)) in tokens.iter().zip(&types).enumerate() {
        vocab.insert(token.clone(), json!(id));
        if *kind == 3 || *kind == 4 {
            added.push(json!({"id": id, "content": token, "special": *kind == 3,
                "single_word": false, "lstrip": false, "rstrip": false, "normalized": *kind != 3}));
        }
    }
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            byte_level(false)]})
    };
    let pre_tokenizer = match pre.as_str() {
        "qwen2" => split(QWEN2_PATTERN),
        "llama-bpe" => split(LLAMA3_PATTERN),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        _ => byte_level(true),
    };
    let tokenizer = json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "decoder": byte_level(true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false,
                  "byte_fallback": false, "vocab": vocab, "merges": merges},
    });
    Ok(tokenizer)
}

/// `tokenizer_config.json`: the special tokens by text, the `add_*_token` flags, the
/// chat template.
fn tokenizer_config(meta: &HashMap<String, Value>, tokens: &[String]) -> Map<String, Json> {
    let mut config = Map::new();
    for (kind, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("unk", "tokenizer.ggml.unknown_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(t) = meta
            .get(key)
            .and_then(|v| v.to_u32().ok())
            .and_then(|id| tokens.get(id as usize))
        {
            config.insert(format!("{kind}_token"), json!(t));
        }
    }
    for flag in ["add_bos_token", "add_sep_token", "add_eos_token"] {
        if let Some(b) = meta
            .get(&format!("tokenizer.ggml.{flag}"))
            .and_then(|v| v.to_bool().ok())
        {
            config.insert(flag.into(), json!(b));
        }
    }
    if let Some(t) = meta
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
    {
        config.insert("chat_template".into(), json!(t));
    }
    config
}
