//! Loaded models, one file per architecture family, behind one [`Model`] type.

pub mod llama;

use std::path::Path;

use candle_core::Device;

use crate::error::{EngineError, Result};
use crate::facts::GgufFacts;
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::tokenizer::GgufTokenizer;

enum Network {
    Llama(llama::LlamaModel),
}

/// A model ready to run: weights, tokenizer and the facts read from its GGUF header.
pub struct Model {
    network: Network,
    weights_bytes: u64,
    pub tokenizer: GgufTokenizer,
    pub facts: GgufFacts,
}

impl Model {
    /// Load a GGUF file. Unknown architectures and broken files are errors, never panics.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let mut gguf = GgufFile::open(path)?;
        let facts = GgufFacts::from_gguf(&gguf, false)?;
        let tokenizer = GgufTokenizer::from_gguf(&gguf)?;
        let network = match facts.architecture.as_str() {
            arch @ ("llama" | "qwen2") => {
                Network::Llama(llama::LlamaModel::from_gguf(&mut gguf, arch, device)?)
            }
            other => return Err(EngineError::UnsupportedArchitecture(other.to_string())),
        };
        let weights_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            network,
            weights_bytes,
            tokenizer,
            facts,
        })
    }

    /// Feed the next `tokens` of one sequence; logits of the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let logits = match &self.network {
            Network::Llama(m) => m.forward(tokens, cache)?,
        };
        Ok(logits.to_vec1::<f32>()?)
    }

    /// A fresh KV cache for one sequence of up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        match &self.network {
            Network::Llama(m) => {
                let c = &m.config;
                KvCache::new(c.n_layer, c.n_kv_head, c.head_dim, capacity, m.device())
            }
        }
    }

    /// Bytes of KV cache one position of one sequence costs.
    pub fn kv_bytes_per_position(&self) -> usize {
        match &self.network {
            Network::Llama(m) => {
                let c = &m.config;
                KvCache::bytes_per_position(c.n_layer, c.n_kv_head, c.head_dim)
            }
        }
    }

    /// Size of the weights file (what the weights take in memory, give or take).
    pub fn weights_bytes(&self) -> u64 {
        self.weights_bytes
    }

    /// The longest context the model was trained for.
    pub fn context_length(&self) -> usize {
        match &self.network {
            Network::Llama(m) => m.config.context_length,
        }
    }
}
