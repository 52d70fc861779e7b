//! What llama.cpp's converter takes from a model directory besides the vocabulary
//! itself, whatever the tokenizer kind: the special token ids (by their text in
//! `tokenizer_config.json`, else by id in `config.json`), the `add_*_token` flags, and
//! the chat template(s).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

use super::read_json;
use crate::error::{EngineError, Result};

/// The special-vocabulary GGUF keys; `id_of` finds a token's id by its text.
pub(super) fn special_vocab(
    files: &BTreeMap<String, PathBuf>,
    config: &Json,
    tokenizer_config: &Json,
    id_of: &HashMap<&str, u32>,
) -> Result<Vec<(String, Value)>> {
    let mut m = Vec::new();
    for (kind, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("unk", "tokenizer.ggml.unknown_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        let by_text = token_text(&tokenizer_config[format!("{kind}_token")])
            .and_then(|t| id_of.get(t).copied());
        let by_config = match &config[format!("{kind}_token_id")] {
            Json::Array(ids) => ids.first().and_then(Json::as_u64),
            other => other.as_u64(),
        }
        .and_then(|v| u32::try_from(v).ok());
        if let Some(id) = by_text.or(by_config) {
            m.push((key.into(), Value::U32(id)));
        }
    }
    for (flag, key) in [
        ("add_bos_token", "tokenizer.ggml.add_bos_token"),
        ("add_sep_token", "tokenizer.ggml.add_sep_token"),
        ("add_eos_token", "tokenizer.ggml.add_eos_token"),
    ] {
        if let Some(b) = tokenizer_config[flag].as_bool() {
            m.push((key.into(), Value::Bool(b)));
        }
    }
    m.extend(chat_templates(files, tokenizer_config)?);
    Ok(m)
}

/// `"<s>"` or `{"content": "<s>", ...}`.
fn token_text(v: &Json) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

/// llama.cpp's guess that an added token not marked special is a control token.
pub(super) fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `tokenizer.chat_template` (and named ones) from `chat_template.jinja`,
/// `chat_template.json` or `tokenizer_config.json`, in that order.
fn chat_templates(
    files: &BTreeMap<String, PathBuf>,
    tokenizer_config: &Json,
) -> Result<Vec<(String, Value)>> {
    if let Some(path) = files.get("chat_template.jinja") {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: "chat_template.jinja".into(),
            source,
        })?;
        return Ok(vec![(
            "tokenizer.chat_template".into(),
            Value::String(text),
        )]);
    }
    let from_json = read_json(files, "chat_template.json")?;
    let template = match &from_json {
        Some(j) => &j["chat_template"],
        None => &tokenizer_config["chat_template"],
    };
    let mut out = Vec::new();
    match template {
        Json::String(t) => out.push(("tokenizer.chat_template".into(), Value::String(t.clone()))),
        Json::Array(named) => {
            for entry in named {
                let (Some(name), Some(t)) = (entry["name"].as_str(), entry["template"].as_str())
                else {
                    continue;
                };
                let key = if name == "default" {
                    "tokenizer.chat_template".to_string()
                } else {
                    format!("tokenizer.chat_template.{name}")
                };
                out.push((key, Value::String(t.to_string())));
            }
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn added_tokens_that_look_special_are_control() {
        assert!(looks_special("<|im_start|>"));
        assert!(looks_special("<unused12>"));
        assert!(!looks_special("<think>"));
    }

    #[test]
    fn special_ids_come_by_text_first_then_by_config_id() {
        let id_of: HashMap<&str, u32> = [("<bos>", 2), ("<eos>", 1)].into_iter().collect();
        let config = json!({"eos_token_id": [1, 106], "pad_token_id": 0});
        let tokenizer_config = json!({"bos_token": {"content": "<bos>"}, "eos_token": "<nope>",
            "add_bos_token": true});
        let m = special_vocab(&BTreeMap::new(), &config, &tokenizer_config, &id_of)
            .expect("special vocab");
        let get = |k: &str| {
            m.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| format!("{v:?}"))
        };
        assert_eq!(get("tokenizer.ggml.bos_token_id"), Some("U32(2)".into()));
        assert_eq!(get("tokenizer.ggml.eos_token_id"), Some("U32(1)".into()));
        assert_eq!(
            get("tokenizer.ggml.padding_token_id"),
            Some("U32(0)".into())
        );
        assert_eq!(
            get("tokenizer.ggml.add_bos_token"),
            Some("Bool(true)".into())
        );
        assert_eq!(get("tokenizer.ggml.unknown_token_id"), None);
    }
}
