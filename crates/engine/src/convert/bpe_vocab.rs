//! A Hugging Face byte-level BPE tokenizer (`tokenizer.json` with
//! `tokenizer_config.json`) as GGUF `gpt2` tokenizer metadata, as llama.cpp's converter
//! writes it: every id up to the model's vocabulary size (holes become `[PAD<id>]`,
//! unused), added tokens typed control or user-defined, the merges, the pre-tokenizer
//! named as llama.cpp names it, and the special vocabulary ([`super::special_vocab`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

use super::special_vocab::{looks_special, special_vocab};
use super::{
    read_json, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNUSED, TOKEN_TYPE_USER_DEFINED,
};
use crate::error::{EngineError, Result};
use crate::tokenizer::{LLAMA3_PATTERN, QWEN2_PATTERN};

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidModel(format!("tokenizer.json: {}", msg.into()))
}

/// The GGUF tokenizer keys for the directory's tokenizer; `vocab_size` is the model's
/// (`config.json`), which may exceed the tokenizer's.
pub(super) fn bpe_metadata(
    files: &BTreeMap<String, PathBuf>,
    config: &Json,
    vocab_size: usize,
) -> Result<Vec<(String, Value)>> {
    let tokenizer = read_json(files, "tokenizer.json")?
        .ok_or_else(|| EngineError::InvalidModel("tokenizer.json is missing".into()))?;
    let tokenizer_config = read_json(files, "tokenizer_config.json")?.unwrap_or(Json::Null);
    let model = &tokenizer["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(EngineError::UnsupportedArchitecture(format!(
            "tokenizer.json model type {} (wick imports byte-level BPE tokenizers)",
            model["type"]
        )));
    }
    if model["byte_fallback"].as_bool() == Some(true) {
        return Err(EngineError::UnsupportedArchitecture(
            "a SentencePiece-style tokenizer (BPE with byte fallback) is not imported yet; \
             convert the model to GGUF first"
                .into(),
        ));
    }
    let pre = pre_tokenizer_name(&tokenizer["pre_tokenizer"])?;

    let mut by_id: HashMap<u32, (String, i32)> = HashMap::new();
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is missing"))?;
    for (token, id) in vocab {
        let id = id.as_u64().and_then(|v| u32::try_from(v).ok());
        let id = id.ok_or_else(|| bad(format!("vocab entry {token:?} has no id")))?;
        by_id.insert(id, (token.clone(), TOKEN_TYPE_NORMAL));
    }
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(bad("an added token without id or content"));
        };
        let special = added["special"].as_bool().unwrap_or(false);
        let kind = if special || looks_special(content) {
            TOKEN_TYPE_CONTROL
        } else {
            TOKEN_TYPE_USER_DEFINED
        };
        let id = u32::try_from(id).map_err(|_| bad("an added token id out of range"))?;
        by_id.insert(id, (content.to_string(), kind));
    }
    let n = by_id
        .keys()
        .map(|&id| id as usize + 1)
        .max()
        .unwrap_or(0)
        .max(vocab_size);
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut id_of: HashMap<&str, u32> = HashMap::new();
    for id in 0..n as u32 {
        match by_id.get(&id) {
            Some((token, kind)) => {
                tokens.push(Value::String(token.clone()));
                types.push(Value::I32(*kind));
                id_of.entry(token.as_str()).or_insert(id);
            }
            None => {
                tokens.push(Value::String(format!("[PAD{id}]")));
                types.push(Value::I32(TOKEN_TYPE_UNUSED));
            }
        }
    }
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .ok_or_else(|| bad("model.merges is missing"))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(pair) => match (
                pair.first().and_then(Json::as_str),
                pair.get(1).and_then(Json::as_str),
            ) {
                (Some(a), Some(b)) if pair.len() == 2 => Ok(Value::String(format!("{a} {b}"))),
                _ => Err(bad("a merge that is not a pair")),
            },
            _ => Err(bad("a merge that is not a string or a pair")),
        })
        .collect::<Result<_>>()?;

    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ];
    m.extend(special_vocab(files, config, &tokenizer_config, &id_of)?);
    Ok(m)
}

/// llama.cpp's name for the pre-tokenizer `tokenizer.json` describes; one wick does
/// not know is refused rather than guessed.
fn pre_tokenizer_name(pre: &Json) -> Result<&'static str> {
    let parts: Vec<&Json> = match pre["type"].as_str() {
        Some("Sequence") => pre["pretokenizers"]
            .as_array()
            .into_iter()
            .flatten()
            .collect(),
        Some(_) => vec![pre],
        None => return Err(bad("no pre_tokenizer")),
    };
    let kinds: Vec<&str> = parts.iter().filter_map(|p| p["type"].as_str()).collect();
    let regex = parts
        .iter()
        .find(|p| p["type"] == "Split")
        .and_then(|p| p["pattern"]["Regex"].as_str());
    let name = match (kinds.as_slice(), regex) {
        (["Split", "ByteLevel"], Some(r)) if r == QWEN2_PATTERN => Some("qwen2"),
        (["Split", "ByteLevel"], Some(r)) if r == LLAMA3_PATTERN => Some("llama-bpe"),
        (["Digits", "ByteLevel"], None)
            if parts[0]["individual_digits"].as_bool() == Some(true)
                && parts[1]["use_regex"].as_bool() != Some(false) =>
        {
            Some("smollm")
        }
        (["ByteLevel"], None) if parts[0]["use_regex"].as_bool() != Some(false) => Some("gpt-2"),
        _ => None,
    };
    name.ok_or_else(|| {
        EngineError::UnsupportedArchitecture(format!(
            "tokenizer.json pre-tokenizer {} is not one wick knows (qwen2, llama-bpe, smollm, gpt-2)",
            serde_json::to_string(pre).unwrap_or_default()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_are_named_as_llama_cpp_names_them() {
        let smollm = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
        assert_eq!(pre_tokenizer_name(&smollm).ok(), Some("smollm"));
        let qwen = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]});
        assert_eq!(pre_tokenizer_name(&qwen).ok(), Some("qwen2"));
        let odd = json!({"type": "Whitespace"});
        assert!(pre_tokenizer_name(&odd).is_err());
    }
}
