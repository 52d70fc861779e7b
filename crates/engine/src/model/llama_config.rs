//! Shape facts of llama-family GGUF models, shared by the CPU and candle paths.

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

/// Shape facts of a llama-family model, from `<arch>.*` GGUF keys.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_embd: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub context_length: usize,
    /// NEOX rotary layout (rotate halves) instead of interleaved pairs.
    pub neox_rope: bool,
}

impl LlamaConfig {
    pub fn from_gguf(gguf: &GgufFile, arch: &str) -> Result<Self> {
        let key = |k: &str| format!("{arch}.{k}");
        let n_head = gguf.get_u32(&key("attention.head_count"))? as usize;
        let n_kv_head = gguf
            .get_u32(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_head);
        let n_embd = gguf.get_u32(&key("embedding_length"))? as usize;
        if n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || !n_embd.is_multiple_of(n_head)
        {
            return Err(EngineError::InvalidModel(format!(
                "inconsistent head counts: {n_head} heads, {n_kv_head} kv heads, {n_embd} dims"
            )));
        }
        let head_dim = gguf
            .get_u32(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(n_embd / n_head);
        Ok(Self {
            n_layer: gguf.get_u32(&key("block_count"))? as usize,
            n_head,
            n_kv_head,
            head_dim,
            n_embd,
            rope_base: gguf.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0),
            rms_eps: gguf
                .get_f32(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            context_length: gguf.get_u32(&key("context_length")).unwrap_or(2048) as usize,
            neox_rope: arch == "qwen2",
        })
    }
}
