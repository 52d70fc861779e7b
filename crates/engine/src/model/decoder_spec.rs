//! One description of a decoder-only transformer, read from a GGUF's `<arch>.*` keys.
//!
//! The families wick runs differ in a handful of places: how rotary embeddings are laid
//! out and scaled, which layers see a sliding window, where RMS norms sit, how the
//! attention scores and logits are scaled or soft-capped, and the FFN's activation.
//! [`DecoderSpec`] carries exactly those differences as data, so one forward pass (and
//! the candle one) runs every family; tensor-level facts (biases, q/k norms, pre- and
//! post-norms, a tied output) are discovered from the tensors the file holds when the
//! weights are loaded.

use candle_core::quantized::gguf_file::Value;

use crate::cpu::ops;
pub use crate::cpu::ops::Yarn;
use crate::error::{EngineError, Result};
use crate::gguf::{value_as_u64, GgufFile};

/// Architectures the decoder runs, by their GGUF `general.architecture` name.
pub const DECODER_ARCHITECTURES: &[&str] = &[
    "llama", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "olmo2", "granite", "phi3",
    "gpt-oss",
];

/// Other names files give a family: Ollama's own gpt-oss files say `gptoss` (its
/// converter and loader take both spellings), with their keys under `gptoss.*`.
const ARCHITECTURE_ALIASES: &[(&str, &str)] = &[("gptoss", "gpt-oss")];

/// The family a `general.architecture` names, as [`DECODER_ARCHITECTURES`] spells it;
/// `None` when the decoder does not run it.
pub fn decoder_family(arch: &str) -> Option<&'static str> {
    DECODER_ARCHITECTURES
        .iter()
        .copied()
        .find(|&a| a == arch)
        .or_else(|| {
            ARCHITECTURE_ALIASES
                .iter()
                .find(|&&(alias, _)| alias == arch)
                .map(|&(_, family)| family)
        })
}

/// The FFN's gating activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up` (llama, qwen, olmo2, granite).
    Silu,
    /// `gelu_tanh(gate) * up` (gemma).
    GeluTanh,
    /// gpt-oss's clamped SwiGLU: `x * sigmoid(1.702 x) * (y + 1)` with the gate `x`
    /// clamped above and the up projection `y` on both sides at 7.
    SwigluOai,
}

impl Activation {
    /// `gate = act(gate, up)`, in place, for `rows` rows.
    pub fn apply(self, gate: &mut [f32], up: &[f32], rows: usize) {
        match self {
            Activation::Silu => ops::silu_mul(gate, up, rows),
            Activation::GeluTanh => ops::gelu_mul(gate, up),
            Activation::SwigluOai => ops::swiglu_oai_mul(gate, up, 1.702, 7.0),
        }
    }
}

/// How a mixture of experts weighs the experts it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertGating {
    /// Softmax over all experts, the top k picked, their probabilities renormalized
    /// (qwen3moe, mixtral).
    SoftmaxTopK,
    /// The top k router logits picked, then a softmax over those k (gpt-oss).
    TopKSoftmax,
}

impl ExpertGating {
    /// A row's `k` experts from its router logits, most probable first, each with its
    /// weight, appended to `out` (ties go to the lower index).
    pub fn pick(self, logits: &[f32], k: usize, out: &mut Vec<(usize, f32)>) {
        let scores = match self {
            ExpertGating::SoftmaxTopK => softmax(logits),
            ExpertGating::TopKSoftmax => logits.to_vec(),
        };
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let picked = &order[..k.min(order.len())];
        match self {
            ExpertGating::SoftmaxTopK => {
                let sum: f32 = picked.iter().map(|&e| scores[e]).sum();
                out.extend(picked.iter().map(|&e| (e, scores[e] / sum)));
            }
            ExpertGating::TopKSoftmax => {
                let picked_logits: Vec<f32> = picked.iter().map(|&e| scores[e]).collect();
                out.extend(picked.iter().copied().zip(softmax(&picked_logits)));
            }
        }
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Rotary position embedding of one family.
#[derive(Debug, Clone)]
pub struct RopeSpec {
    /// Base of full-attention layers.
    pub base: f32,
    /// Base of sliding-window layers (gemma3: 10,000 while global layers use 1e6).
    pub base_local: f32,
    /// Linear position scaling of full-attention layers (`1 / rope.scaling.factor`).
    pub freq_scale: f32,
    /// The same on sliding-window layers (gemma3 and olmo2 scale only global layers).
    pub freq_scale_local: f32,
    /// Rotated dimensions of each head (`rope.dimension_count`, else the head size).
    pub dims: usize,
    /// NEOX layout (pairs `i`, `i + dims/2`) instead of adjacent pairs.
    pub neox: bool,
    /// Multiplier of the rotated values (`rope.scaling.attn_factor`, LongRoPE's
    /// attention factor; ggml scales the cosines and sines by it).
    pub attn_factor: f32,
    /// The context the model was pre-trained with (`rope.scaling.original_context_length`):
    /// a sequence allowed more positions than this uses LongRoPE's long factors
    /// (`rope_factors_long`), otherwise the short ones, as llama.cpp chooses by context.
    pub original_context: Option<usize>,
    /// YaRN context extension (gpt-oss), on every layer.
    pub yarn: Option<Yarn>,
}

/// Shape and numerics of a decoder, shared by the CPU and candle executors.
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_embd: usize,
    pub rms_eps: f32,
    pub context_length: usize,
    pub rope: RopeSpec,
    pub activation: Activation,
    /// Multiplier of the token embeddings (gemma: `sqrt(n_embd)`; granite's
    /// `embedding_scale`).
    pub embed_scale: Option<f32>,
    /// Multiplier of `q . k`.
    pub attn_scale: f32,
    /// Whether the queries are multiplied by `attn_scale` before attention (gemma) rather
    /// than the scores after the dot product: the rounding differs, so follow llama.cpp.
    pub scale_queries: bool,
    /// `cap * tanh(score / cap)` on attention scores (gemma2).
    pub attn_softcap: Option<f32>,
    /// `cap * tanh(logit / cap)` on the output logits (gemma2).
    pub final_softcap: Option<f32>,
    /// Multiplier of each block's attention and FFN outputs (granite).
    pub residual_scale: Option<f32>,
    /// Divisor of the output logits (granite).
    pub logit_scale: Option<f32>,
    /// Keys older than this many positions are invisible on sliding-window layers.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses the sliding window.
    pub swa_layers: Vec<bool>,
    /// Experts per mixture-of-experts layer (`expert_count`; 0 for a dense model) and
    /// how many of them each token uses (`expert_used_count`).
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub expert_gating: ExpertGating,
    /// The tensor of the norm before the FFN (`ffn_norm`; gpt-oss names it
    /// `post_attention_norm`, and has no post-attention norm).
    pub ffn_norm_tensor: &'static str,
}

impl DecoderSpec {
    /// Read the description of `arch` from the file's metadata.
    pub fn from_gguf(gguf: &GgufFile, file_arch: &str) -> Result<Self> {
        let arch = decoder_family(file_arch)
            .ok_or_else(|| EngineError::UnsupportedArchitecture(file_arch.to_string()))?;
        // The keys sit under the file's own spelling; the family decides the rest.
        let key = |k: &str| format!("{file_arch}.{k}");
        let n_layer = block_count(gguf, file_arch)?;
        let n_head = gguf.get_u32(&key("attention.head_count"))? as usize;
        let n_kv_head = gguf
            .get_u32(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_head);
        let n_embd = gguf.get_u32(&key("embedding_length"))? as usize;
        if n_layer == 0
            || n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || !n_embd.is_multiple_of(n_head)
        {
            return Err(EngineError::InvalidModel(format!(
                "inconsistent shape: {n_layer} layers, {n_head} heads, {n_kv_head} kv heads, \
                 {n_embd} dims"
            )));
        }
        let head_dim = gguf
            .get_u32(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(n_embd / n_head);
        let value_dim = gguf
            .get_u32(&key("attention.value_length"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if value_dim != head_dim || head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(EngineError::InvalidModel(format!(
                "head sizes {head_dim} (keys) and {value_dim} (values) are not supported"
            )));
        }
        let rope_dims = gguf
            .get_u32(&key("rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if rope_dims == 0 || rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            return Err(EngineError::InvalidModel(format!(
                "{rope_dims} rotary dimensions for heads of {head_dim}"
            )));
        }
        let base = gguf.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0);
        let scaling = rope_scaling(gguf, file_arch)?;
        let freq_scale = match scaling {
            Some((_, factor)) => 1.0 / factor,
            None => 1.0,
        };
        let original_context = gguf
            .get_u32(&key("rope.scaling.original_context_length"))
            .ok()
            .map(|v| v as usize);
        let yarn = match scaling {
            Some((RopeScaling::Yarn, _)) => Some(Yarn {
                ext_factor: gguf
                    .get_f32(&key("rope.scaling.yarn_ext_factor"))
                    .ok()
                    .filter(|f| *f >= 0.0)
                    .unwrap_or(1.0),
                beta_fast: gguf
                    .get_f32(&key("rope.scaling.yarn_beta_fast"))
                    .unwrap_or(32.0),
                beta_slow: gguf
                    .get_f32(&key("rope.scaling.yarn_beta_slow"))
                    .unwrap_or(1.0),
                n_ctx_orig: original_context
                    .unwrap_or(gguf.get_u32(&key("context_length")).unwrap_or(2048) as usize),
            }),
            _ => None,
        };
        let opt_f32 = |k: &str| gguf.get_f32(&key(k)).ok().filter(|v| *v != 0.0);
        let gemma = arch.starts_with("gemma");
        let default_scale = 1.0 / (head_dim as f32).sqrt();

        let (sliding_window, period) = match arch {
            "gemma2" => (
                Some(
                    gguf.get_u32(&key("attention.sliding_window"))
                        .unwrap_or(4096) as usize,
                ),
                2,
            ),
            "gemma3" => (
                Some(gguf.get_u32(&key("attention.sliding_window"))? as usize),
                6,
            ),
            "gpt-oss" => (
                Some(gguf.get_u32(&key("attention.sliding_window"))? as usize),
                2,
            ),
            "olmo2" => (
                gguf.get_u32(&key("attention.sliding_window"))
                    .ok()
                    .map(|w| w as usize)
                    .filter(|&w| w > 0),
                4,
            ),
            _ => (None, 0),
        };
        let swa_layers = match sliding_window {
            None => vec![false; n_layer],
            Some(_) => sliding_pattern(gguf, &key("attention.sliding_window_pattern"), n_layer)
                .unwrap_or_else(|| {
                    // Every `period`-th layer (the last of each group) sees everything.
                    (0..n_layer).map(|il| il % period < period - 1).collect()
                }),
        };
        let base_local = match arch {
            "gemma3" => 10_000.0,
            _ => gguf.get_f32(&key("rope.freq_base_swa")).unwrap_or(base),
        };
        let neox = matches!(
            arch,
            "qwen2" | "qwen3" | "qwen3moe" | "gemma2" | "gemma3" | "olmo2" | "phi3" | "gpt-oss"
        );

        Ok(Self {
            arch: arch.to_string(),
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            n_embd,
            rms_eps: gguf
                .get_f32(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            context_length: gguf.get_u32(&key("context_length")).unwrap_or(2048) as usize,
            rope: RopeSpec {
                base,
                base_local,
                freq_scale,
                freq_scale_local: if matches!(arch, "gemma3" | "olmo2") {
                    1.0
                } else {
                    freq_scale
                },
                dims: rope_dims,
                neox,
                attn_factor: gguf
                    .get_f32(&key("rope.scaling.attn_factor"))
                    .ok()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .unwrap_or(1.0),
                original_context,
                yarn,
            },
            activation: if gemma {
                Activation::GeluTanh
            } else if arch == "gpt-oss" {
                Activation::SwigluOai
            } else {
                Activation::Silu
            },
            embed_scale: if gemma {
                Some((n_embd as f32).sqrt())
            } else if arch == "granite" {
                opt_f32("embedding_scale")
            } else {
                None
            },
            attn_scale: match arch {
                "granite" => opt_f32("attention.scale").unwrap_or(default_scale),
                _ => default_scale,
            },
            // llama.cpp scales the queries before attention for gemma and phi3.
            scale_queries: gemma || arch == "phi3",
            attn_softcap: match arch {
                "gemma2" => Some(opt_f32("attn_logit_softcapping").unwrap_or(50.0)),
                _ => None,
            },
            final_softcap: match arch {
                "gemma2" => Some(opt_f32("final_logit_softcapping").unwrap_or(30.0)),
                _ => None,
            },
            residual_scale: if arch == "granite" {
                opt_f32("residual_scale")
            } else {
                None
            },
            logit_scale: if arch == "granite" {
                opt_f32("logit_scale")
            } else {
                None
            },
            sliding_window,
            swa_layers,
            n_expert: gguf.get_u32(&key("expert_count")).unwrap_or(0) as usize,
            n_expert_used: gguf.get_u32(&key("expert_used_count")).unwrap_or(0) as usize,
            expert_gating: if arch == "gpt-oss" {
                ExpertGating::TopKSoftmax
            } else {
                ExpertGating::SoftmaxTopK
            },
            ffn_norm_tensor: if arch == "gpt-oss" {
                "post_attention_norm"
            } else {
                "ffn_norm"
            },
        })
    }
}

/// `<arch>.block_count`, refused when the file cannot hold that many layers (each has
/// tensors of its own): a header must not make the loader allocate per-layer state for
/// billions of layers.
pub(crate) fn block_count(gguf: &GgufFile, arch: &str) -> Result<usize> {
    let n_layer = gguf.get_u32(&format!("{arch}.block_count"))? as usize;
    let tensors = gguf.content.tensor_infos.len();
    if n_layer > tensors {
        return Err(EngineError::InvalidModel(format!(
            "{n_layer} layers declared but the file has only {tensors} tensors"
        )));
    }
    Ok(n_layer)
}

/// The rope scaling kinds wick runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeScaling {
    Linear,
    Yarn,
}

/// The rope scaling kind and factor, if the file declares one; other scaling kinds
/// are refused rather than silently ignored.
fn rope_scaling(gguf: &GgufFile, arch: &str) -> Result<Option<(RopeScaling, f32)>> {
    let kind = gguf
        .get_str(&format!("{arch}.rope.scaling.type"))
        .unwrap_or("linear");
    let factor = gguf
        .get_f32(&format!("{arch}.rope.scaling.factor"))
        .or_else(|_| gguf.get_f32(&format!("{arch}.rope.scale_linear")))
        .ok()
        .filter(|f| *f != 0.0 && *f != 1.0);
    match (kind, factor) {
        (_, None) | ("none", _) => Ok(None),
        ("linear", Some(f)) => Ok(Some((RopeScaling::Linear, f))),
        ("yarn", Some(f)) => Ok(Some((RopeScaling::Yarn, f))),
        (other, Some(_)) => Err(EngineError::InvalidModel(format!(
            "rope scaling '{other}' is not supported yet"
        ))),
    }
}

/// `attention.sliding_window_pattern` as a period (`u32`) or one flag per layer.
fn sliding_pattern(gguf: &GgufFile, key: &str, n_layer: usize) -> Option<Vec<bool>> {
    match gguf.get(key)? {
        Value::Array(flags) if flags.len() == n_layer => flags
            .iter()
            .map(|f| match f {
                Value::Bool(b) => Some(*b),
                other => value_as_u64(other).map(|v| v != 0),
            })
            .collect(),
        other => {
            let period = value_as_u64(other)? as usize;
            (period > 0).then(|| (0..n_layer).map(|il| il % period < period - 1).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF with `metadata` and no tensors, opened.
    fn header_only(metadata: &[(&str, Value)]) -> (tempfile::NamedTempFile, GgufFile) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        candle_core::quantized::gguf_file::write(file.as_file_mut(), &refs, &[]).expect("write");
        let gguf = GgufFile::open(file.path()).expect("open");
        (file, gguf)
    }

    /// Seen with the `gguf_reader` fuzz target: a 150-byte header declaring u32::MAX
    /// layers made the spec allocate a flag per layer (4 GB) before any tensor was read.
    #[test]
    fn more_layers_than_tensors_is_refused() {
        let (_file, gguf) = header_only(&[
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(u32::MAX)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.embedding_length", Value::U32(8)),
        ]);
        let Err(err) = DecoderSpec::from_gguf(&gguf, "llama") else {
            panic!("a header with more layers than tensors was accepted");
        };
        assert!(matches!(err, EngineError::InvalidModel(_)), "{err}");
        assert!(err.to_string().contains("layers"), "{err}");
    }
}
