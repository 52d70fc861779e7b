//! Importing a Hugging Face safetensors model directory (`config.json`,
//! `tokenizer.json`, `*.safetensors`) as one GGUF file laid out as llama.cpp's
//! converter lays it out, the way Ollama's `create` imports such a directory:
//! BERT-class sentence-embedding models ([`bert`]), llama-family decoders
//! ([`decoder`]: llama and mistral, qwen2, qwen3) with their byte-level BPE
//! tokenizer and chat template ([`bpe_vocab`]), and Gemma 3 ([`gemma3`]) with its
//! SentencePiece tokenizer ([`sentencepiece`]).

mod bert;
mod bpe_vocab;
mod decoder;
mod gemma3;
mod sentencepiece;
mod special_vocab;
mod tensor_names;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value as Json;

use crate::error::{EngineError, Result};
use crate::gguf::write_gguf;

pub use bert::bert_to_gguf;
pub(crate) use decoder::llama3_rope_factors;
pub use decoder::{decoder_to_gguf, DECODER_MODEL_TYPES};
pub use gemma3::{gemma3_to_gguf, GEMMA3_MODEL_TYPES};
pub use sentencepiece::{
    ModelProto as SentencePieceModel, NormalizerSpec as SentencePieceNormalizer,
    Piece as SentencePiece, TrainerSpec as SentencePieceTrainer,
};
pub(crate) use tensor_names::{hf_tensor_name, NormNames};

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_UNUSED: i32 = 5;

/// Whether a set of uploaded files (relative name -> path) is a safetensors model.
pub fn is_safetensors_dir(files: &BTreeMap<String, PathBuf>) -> bool {
    files.keys().any(|k| k.ends_with(".safetensors"))
}

/// Convert the files of a safetensors model directory into a GGUF at `out`, by its
/// `config.json` `model_type`. An architecture wick cannot import is
/// [`EngineError::UnsupportedArchitecture`] naming it.
pub fn safetensors_to_gguf(files: &BTreeMap<String, PathBuf>, out: &Path) -> Result<()> {
    let config = read_json(files, "config.json")?
        .ok_or_else(|| EngineError::InvalidModel("config.json is missing".into()))?;
    let model_type = config["model_type"].as_str().unwrap_or("");
    match model_type {
        "bert" => bert_to_gguf(files, out),
        t if DECODER_MODEL_TYPES.contains(&t) => decoder_to_gguf(files, &config, out),
        t if GEMMA3_MODEL_TYPES.contains(&t) => gemma3_to_gguf(files, &config, out),
        other => Err(EngineError::UnsupportedArchitecture(format!(
            "safetensors model_type '{other}' (wick imports {}, {} and bert)",
            DECODER_MODEL_TYPES.join(", "),
            GEMMA3_MODEL_TYPES.join(", ")
        ))),
    }
}

fn read_json(files: &BTreeMap<String, PathBuf>, name: &str) -> Result<Option<Json>> {
    let Some(path) = files.get(name) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: name.to_string(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EngineError::InvalidModel(format!("{name}: {e}")))
}

fn require_u32(config: &Json, key: &str) -> Result<u32> {
    config[key]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| EngineError::InvalidModel(format!("config.json: missing integer '{key}'")))
}

/// Every tensor of every `*.safetensors` file, by name.
fn load_safetensors(files: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, Tensor>> {
    let mut tensors = BTreeMap::new();
    for (name, path) in files.iter().filter(|(n, _)| n.ends_with(".safetensors")) {
        let loaded = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| EngineError::InvalidModel(format!("{name}: {e}")))?;
        tensors.extend(loaded);
    }
    Ok(tensors)
}
