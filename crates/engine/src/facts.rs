//! What a GGUF header says about a model, for `/api/show`, `/api/tags` and `create`,
//! read without loading the weights.

use std::path::Path;

use serde_json::{Map, Value as Json};

use crate::error::Result;
use crate::gguf::{value_as_u64, value_to_json, GgufFile};

/// Facts from a GGUF header.
#[derive(Debug, Clone)]
pub struct GgufFacts {
    pub architecture: String,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub parameter_count: u64,
    /// Ollama's `file_type` name, e.g. `Q4_K_M`.
    pub file_type: String,
    pub chat_template: Option<String>,
    /// Has `<arch>.pooling_type`: an embedding model.
    pub is_embedding: bool,
    /// Every metadata key as JSON; big arrays are `null` unless read verbosely.
    pub model_info: Map<String, Json>,
}

impl GgufFacts {
    pub fn read(path: &Path, verbose: bool) -> Result<Self> {
        let gguf = GgufFile::open(path)?;
        Self::from_gguf(&gguf, verbose)
    }

    pub fn from_gguf(gguf: &GgufFile, verbose: bool) -> Result<Self> {
        let architecture = gguf.architecture()?;
        let key = |k: &str| format!("{architecture}.{k}");
        let int = |k: &str| gguf.get(k).and_then(value_as_u64);
        let parameter_count = int("general.parameter_count").unwrap_or_else(|| {
            gguf.content
                .tensor_infos
                .values()
                .map(|t| t.shape.elem_count() as u64)
                .sum()
        });
        let file_type = int("general.file_type")
            .map(file_type_name)
            .unwrap_or_else(|| "unknown".to_string());
        let max_array = if verbose { usize::MAX } else { 64 };
        let mut model_info = Map::new();
        let mut keys: Vec<&String> = gguf.metadata().keys().collect();
        keys.sort();
        for k in keys {
            if let Some(v) = gguf.get(k) {
                model_info.insert(k.clone(), value_to_json(v, max_array));
            }
        }
        model_info
            .entry("general.parameter_count".to_string())
            .or_insert(Json::from(parameter_count));
        Ok(Self {
            context_length: int(&key("context_length")),
            embedding_length: int(&key("embedding_length")),
            is_embedding: gguf.get(&key("pooling_type")).is_some(),
            chat_template: gguf.get_str("tokenizer.chat_template").map(str::to_string),
            architecture,
            parameter_count,
            file_type,
            model_info,
        })
    }

    /// Ollama's `parameter_size`, e.g. `135M`, `494.03M`, `8.0B`.
    pub fn parameter_size(&self) -> String {
        human_count(self.parameter_count)
    }
}

/// Ollama's `format.HumanNumber`-style parameter count.
pub fn human_count(n: u64) -> String {
    let (value, unit) = if n >= 1_000_000_000 {
        (n as f64 / 1e9, "B")
    } else if n >= 1_000_000 {
        (n as f64 / 1e6, "M")
    } else if n >= 1_000 {
        (n as f64 / 1e3, "K")
    } else {
        return n.to_string();
    };
    let s = format!("{value:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

/// llama.cpp's `llama_ftype` numbers as names.
pub fn file_type_name(t: u64) -> String {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        // MOSTLY_MXFP4_MOE: gpt-oss, its experts MXFP4.
        38 => "MXFP4",
        _ => "unknown",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_counts() {
        assert_eq!(human_count(134_515_008), "134.52M");
        assert_eq!(human_count(8_030_000_000), "8.03B");
        assert_eq!(human_count(999), "999");
    }
}
