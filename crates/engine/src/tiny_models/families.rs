//! What each family's file holds: the `<arch>.*` keys and the tensors, named, shaped
//! and laid out as llama.cpp's converter writes them (`convert_hf_to_gguf.py`) and its
//! loader (`src/llama-model.cpp`) reads them. Shapes here are candle's order (a matrix
//! is `[outputs, inputs]`); the GGUF file stores the reverse (`ne = {inputs, outputs}`).
//!
//! Facts a decoder must honour, beyond the keys themselves:
//! - gemma2/gemma3: norm weights are stored as llama.cpp uses them (the converter has
//!   already added gemma's +1); the input embedding is multiplied by sqrt(n_embd);
//!   layers are sliding-window by llama.cpp's fixed pattern (gemma2: every even layer;
//!   gemma3: five of every six, layer 5 global) and gemma3's sliding layers use rope
//!   base 10000 without the linear scaling of the global layers.
//! - llama3: `rope_freqs.weight` divides each rotary frequency (Llama 3.1 factors, with
//!   an original context of 64 so most pairs are scaled); output tied to the embeddings.
//! - phi3: fused `attn_qkv` (q, k, v rows) and `ffn_up` (gate rows, then up rows);
//!   llama.cpp picks `rope_factors_long` when its context exceeds
//!   `rope.scaling.original_context_length`, and multiplies cos/sin by
//!   `rope.scaling.attn_factor`; `attention.sliding_window` is ignored by llama.cpp.
//!   llama.cpp's vocabulary loader special-cases a `general.name` containing "phi3".
//! - granite: embeddings times `embedding_scale`, attention scores times
//!   `attention.scale`, each block output times `residual_scale`, logits divided by
//!   `logit_scale`.
//! - olmo2: no pre-norms; q/k norms over the whole projection (all heads together).
//! - gpt-oss: q/k/v/o biases, per-head attention sinks, the pre-FFN norm is named
//!   `post_attention_norm`, expert biases, every even layer sliding, YaRN rope; the
//!   experts are MXFP4 (as the converter repacks the checkpoint's), the rest cycles.

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;

use super::Builder;
use crate::error::{EngineError, Result};
use crate::gguf::GgmlType;

/// Typical standard deviation of the logits (nats): peaked but not one-hot.
const LOGIT_STD: f32 = 3.5;
/// Gain of the query and key projections: attention scores with a spread of ~2.
const QK_GAIN: f32 = 1.0;
/// Embedding entries of a tied model: small beside the blocks' outputs, so the logit
/// of the current token (its embedding dotted with itself) does not dominate.
const TIED_EMBD_STD: f32 = 0.1;
/// Gains of the block outputs (attention output, FFN down), and the mean of the post
/// norms: every block moves the residual stream as much as the embedding.
const OUT_GAIN: f32 = 0.8;
const DOWN_GAIN: f32 = 1.0;
const POST_NORM: f32 = 1.5;

pub(super) fn build(family: &str, b: &mut Builder) -> Result<()> {
    match family {
        "llama" => llama(b, false),
        "llama3" => llama(b, true),
        "qwen2" => qwen2(b),
        "qwen3" => qwen3(b, false),
        "qwen3moe" => qwen3(b, true),
        "gemma2" => gemma2(b),
        "gemma3" => gemma3(b),
        "phi3" => phi3(b),
        "granite" => granite(b),
        "olmo2" => olmo2(b),
        "gpt-oss" => gpt_oss(b),
        other => Err(EngineError::UnsupportedArchitecture(format!(
            "no tiny model for '{other}'"
        ))),
    }
}

/// How the norms around the query and key are laid out.
#[derive(Clone, Copy, PartialEq)]
enum QkNorm {
    None,
    /// `[head_dim]`, shared by the heads (qwen3, gemma3).
    PerHead,
    /// `[n_head * head_dim]` and `[n_kv_head * head_dim]` (olmo2).
    Full,
}

/// A mixture of experts in place of the dense FFN.
#[derive(Clone, Copy)]
struct Moe {
    n_expert: usize,
    n_used: usize,
    n_ff: usize,
    biases: bool,
    /// Experts stored as MXFP4, as llama.cpp's converter writes gpt-oss's.
    mxfp4: bool,
}

/// The per-block tensors of a family.
#[derive(Clone, Copy)]
struct BlockSpec {
    /// `attn_norm` before attention and a pre-FFN norm.
    pre_norms: bool,
    /// The name of the pre-FFN norm (`ffn_norm`; gpt-oss: `post_attention_norm`).
    ffn_norm: &'static str,
    /// `post_attention_norm` and `post_ffw_norm` on the block outputs.
    post_norms: bool,
    /// The mean of those post norms.
    post_norm: f32,
    qkv_bias: bool,
    out_bias: bool,
    qk_norm: QkNorm,
    fused_qkv: bool,
    fused_up: bool,
    sinks: bool,
    qk_gain: f32,
    moe: Option<Moe>,
}

const PLAIN: BlockSpec = BlockSpec {
    pre_norms: true,
    ffn_norm: "ffn_norm",
    post_norms: false,
    post_norm: POST_NORM,
    qkv_bias: false,
    out_bias: false,
    qk_norm: QkNorm::None,
    fused_qkv: false,
    fused_up: false,
    sinks: false,
    qk_gain: QK_GAIN,
    moe: None,
};

fn header(b: &mut Builder, arch: &str) {
    b.arch = arch.to_string();
    b.general("general.architecture", Value::String(arch.to_string()));
    // Not the family's name: llama.cpp's vocabulary loader patches token attributes of
    // models whose general.name contains "phi3" and would look up tokens this
    // vocabulary does not have.
    b.general("general.name", Value::String("wick tiny test model".into()));
    b.general("general.quantization_version", Value::U32(2));
}

/// The keys every family writes.
fn base_keys(b: &mut Builder, context: usize, rms_eps: f32) {
    let d = b.dims;
    b.key_u32("context_length", context);
    b.key_u32("embedding_length", d.n_embd);
    b.key_u32("block_count", d.n_layer);
    b.key_u32("feed_forward_length", d.n_ff);
    b.key_u32("attention.head_count", d.n_head);
    b.key_u32("attention.head_count_kv", d.n_kv_head);
    b.key_f32("attention.layer_norm_rms_epsilon", rms_eps);
}

fn head_dim_keys(b: &mut Builder) {
    let hd = b.dims.head_dim;
    b.key_u32("attention.key_length", hd);
    b.key_u32("attention.value_length", hd);
}

fn norm(b: &mut Builder, name: &str, n: usize, mean: f32) -> Result<()> {
    b.vector(name, n, mean, 0.15 * mean)
}

/// `token_embd` (entries of standard deviation `embd_std`), `output_norm`, and `output`
/// unless tied. `logit_std` is the spread the logits should have. The matrix that makes
/// the logits is F16: ggml pairs it with f16 activations, whose rounding is far finer
/// than the 8-bit activations of the quantized kinds, so the logits of two engines
/// agree to well within the test's tolerance; the embedding of an untied model is Q8_0.
fn embeddings(b: &mut Builder, embd_std: f32, tied: bool, logit_std: f32) -> Result<()> {
    let d = b.dims;
    let data = b.values(d.n_vocab * d.n_embd, 0.0, embd_std);
    let kind = if tied {
        GgmlDType::F16
    } else {
        GgmlDType::Q8_0
    };
    b.put("token_embd.weight", &[d.n_vocab, d.n_embd], data, kind)?;
    if tied {
        // logit = output_norm(h) . embedding row: spread sqrt(n_embd) * embd_std * norm.
        let mean = logit_std / ((d.n_embd as f32).sqrt() * embd_std);
        norm(b, "output_norm.weight", d.n_embd, mean)
    } else {
        norm(b, "output_norm.weight", d.n_embd, 1.0)?;
        b.matrix_as(
            "output.weight",
            &[d.n_vocab, d.n_embd],
            logit_std,
            GgmlDType::F16,
        )
    }
}

fn blocks(b: &mut Builder, s: BlockSpec) -> Result<()> {
    let d = b.dims;
    let (q_dim, kv_dim) = (d.n_head * d.head_dim, d.n_kv_head * d.head_dim);
    for i in 0..d.n_layer {
        let p = |t: &str| format!("blk.{i}.{t}");
        if s.pre_norms {
            norm(b, &p("attn_norm.weight"), d.n_embd, 1.0)?;
        }
        if s.fused_qkv {
            b.matrix(
                &p("attn_qkv.weight"),
                &[q_dim + 2 * kv_dim, d.n_embd],
                s.qk_gain,
            )?;
        } else {
            b.matrix(&p("attn_q.weight"), &[q_dim, d.n_embd], s.qk_gain)?;
            b.matrix(&p("attn_k.weight"), &[kv_dim, d.n_embd], s.qk_gain)?;
            b.matrix(&p("attn_v.weight"), &[kv_dim, d.n_embd], 1.0)?;
        }
        if s.qkv_bias {
            b.vector(&p("attn_q.bias"), q_dim, 0.0, 0.5)?;
            b.vector(&p("attn_k.bias"), kv_dim, 0.0, 0.5)?;
            b.vector(&p("attn_v.bias"), kv_dim, 0.0, 0.3)?;
        }
        match s.qk_norm {
            QkNorm::None => {}
            QkNorm::PerHead => {
                norm(b, &p("attn_q_norm.weight"), d.head_dim, QK_GAIN)?;
                norm(b, &p("attn_k_norm.weight"), d.head_dim, QK_GAIN)?;
            }
            QkNorm::Full => {
                norm(b, &p("attn_q_norm.weight"), q_dim, QK_GAIN)?;
                norm(b, &p("attn_k_norm.weight"), kv_dim, QK_GAIN)?;
            }
        }
        b.matrix(&p("attn_output.weight"), &[d.n_embd, q_dim], OUT_GAIN)?;
        if s.out_bias {
            b.vector(&p("attn_output.bias"), d.n_embd, 0.0, 0.3)?;
        }
        if s.sinks {
            b.vector(&p("attn_sinks.weight"), d.n_head, 0.5, 1.0)?;
        }
        if s.post_norms {
            norm(b, &p("post_attention_norm.weight"), d.n_embd, s.post_norm)?;
        }
        if s.pre_norms {
            norm(b, &p(&format!("{}.weight", s.ffn_norm)), d.n_embd, 1.0)?;
        }
        match s.moe {
            Some(m) => experts(b, i, m)?,
            None if s.fused_up => {
                b.matrix(&p("ffn_up.weight"), &[2 * d.n_ff, d.n_embd], 1.0)?;
                b.matrix(&p("ffn_down.weight"), &[d.n_embd, d.n_ff], DOWN_GAIN)?;
            }
            None => {
                b.matrix(&p("ffn_gate.weight"), &[d.n_ff, d.n_embd], 1.0)?;
                b.matrix(&p("ffn_up.weight"), &[d.n_ff, d.n_embd], 1.0)?;
                b.matrix(&p("ffn_down.weight"), &[d.n_embd, d.n_ff], DOWN_GAIN)?;
            }
        }
        if s.post_norms {
            norm(b, &p("post_ffw_norm.weight"), d.n_embd, s.post_norm)?;
        }
    }
    Ok(())
}

fn experts(b: &mut Builder, i: usize, m: Moe) -> Result<()> {
    let d = b.dims;
    let p = |t: &str| format!("blk.{i}.{t}");
    // The router stays F32, as in real files; a gain of 2 makes the choice decisive.
    b.matrix_as(
        &p("ffn_gate_inp.weight"),
        &[m.n_expert, d.n_embd],
        2.0,
        GgmlDType::F32,
    )?;
    if m.biases {
        b.vector(&p("ffn_gate_inp.bias"), m.n_expert, 0.0, 0.5)?;
    }
    let mut expert_matrix = |name: &str, shape: &[usize], gain: f32| {
        if m.mxfp4 {
            b.matrix_as(name, shape, gain, GgmlType::MXFP4)
        } else {
            b.matrix(name, shape, gain)
        }
    };
    expert_matrix(
        &p("ffn_gate_exps.weight"),
        &[m.n_expert, m.n_ff, d.n_embd],
        1.0,
    )?;
    expert_matrix(
        &p("ffn_up_exps.weight"),
        &[m.n_expert, m.n_ff, d.n_embd],
        1.0,
    )?;
    expert_matrix(
        &p("ffn_down_exps.weight"),
        &[m.n_expert, d.n_embd, m.n_ff],
        DOWN_GAIN,
    )?;
    if m.biases {
        let gate = b.values(m.n_expert * m.n_ff, 0.0, 0.3);
        b.put(
            &p("ffn_gate_exps.bias"),
            &[m.n_expert, m.n_ff],
            gate,
            GgmlDType::F32,
        )?;
        let up = b.values(m.n_expert * m.n_ff, 0.0, 0.3);
        b.put(
            &p("ffn_up_exps.bias"),
            &[m.n_expert, m.n_ff],
            up,
            GgmlDType::F32,
        )?;
        let down = b.values(m.n_expert * d.n_embd, 0.0, 0.3);
        b.put(
            &p("ffn_down_exps.bias"),
            &[m.n_expert, d.n_embd],
            down,
            GgmlDType::F32,
        )?;
    }
    Ok(())
}

fn moe_keys(b: &mut Builder, m: Moe) {
    b.key_u32("expert_count", m.n_expert);
    b.key_u32("expert_used_count", m.n_used);
    b.key_u32("expert_feed_forward_length", m.n_ff);
}

fn llama(b: &mut Builder, llama3: bool) -> Result<()> {
    header(b, "llama");
    let base = if llama3 { 500_000.0 } else { 10_000.0 };
    base_keys(b, if llama3 { 4096 } else { 2048 }, 1e-5);
    b.key_f32("rope.freq_base", base);
    b.key_u32("rope.dimension_count", b.dims.head_dim);
    b.key_u32("vocab_size", b.dims.n_vocab);
    // llama3 ties the output to the embeddings (as Llama 3.2 1B/3B and SmolLM2 do);
    // plain llama has its own output matrix.
    embeddings(
        b,
        if llama3 { TIED_EMBD_STD } else { 1.0 },
        llama3,
        LOGIT_STD,
    )?;
    if llama3 {
        // An original context of 64 (Llama 3.1 says 8192) so that most rotary pairs are
        // scaled within a 64-token test.
        let f = crate::convert::llama3_rope_factors(b.dims.head_dim, base, 8.0, 1.0, 4.0, 64.0);
        b.put("rope_freqs.weight", &[f.len()], f, GgmlDType::F32)?;
    }
    blocks(b, PLAIN)
}

/// A llama of realistic size for benchmarks ([`super::shaped`]): Llama 3's rope base,
/// its own output matrix, every matrix the next one `b` makes (random Q4_K there).
pub(super) fn llama_shaped(b: &mut Builder, context: usize) -> Result<()> {
    header(b, "llama");
    base_keys(b, context, 1e-5);
    b.key_f32("rope.freq_base", 500_000.0);
    b.key_u32("rope.dimension_count", b.dims.head_dim);
    b.key_u32("vocab_size", b.dims.n_vocab);
    let d = b.dims;
    // Embedding rows of spread ~1 (the first norm rescales them anyway).
    b.matrix(
        "token_embd.weight",
        &[d.n_vocab, d.n_embd],
        (d.n_embd as f32).sqrt(),
    )?;
    norm(b, "output_norm.weight", d.n_embd, 1.0)?;
    b.matrix("output.weight", &[d.n_vocab, d.n_embd], LOGIT_STD)?;
    blocks(b, PLAIN)
}

fn qwen2(b: &mut Builder) -> Result<()> {
    header(b, "qwen2");
    base_keys(b, 32768, 1e-6);
    b.key_f32("rope.freq_base", 1_000_000.0);
    embeddings(b, 1.0, false, LOGIT_STD)?;
    blocks(
        b,
        BlockSpec {
            qkv_bias: true,
            ..PLAIN
        },
    )
}

fn qwen3(b: &mut Builder, moe: bool) -> Result<()> {
    let arch = if moe { "qwen3moe" } else { "qwen3" };
    header(b, arch);
    let m = Moe {
        n_expert: 8,
        n_used: 2,
        n_ff: 256,
        biases: false,
        mxfp4: false,
    };
    if !moe {
        // Qwen3's heads are wider than n_embd / n_head.
        b.dims.head_dim = 128;
    }
    base_keys(b, 40960, 1e-6);
    b.key_f32("rope.freq_base", 1_000_000.0);
    head_dim_keys(b);
    if moe {
        moe_keys(b, m);
    }
    embeddings(b, 1.0, false, LOGIT_STD)?;
    blocks(
        b,
        BlockSpec {
            qk_norm: QkNorm::PerHead,
            moe: moe.then_some(m),
            ..PLAIN
        },
    )
}

/// Gemma's embeddings enter multiplied by sqrt(n_embd): small entries keep the
/// residual stream near unit scale, the tied output norm restores the logit spread.
const GEMMA_EMBD_STD: f32 = 0.06;

fn gemma2(b: &mut Builder) -> Result<()> {
    header(b, "gemma2");
    b.dims.n_layer = 4;
    base_keys(b, 8192, 1e-6);
    head_dim_keys(b);
    b.key_u32("attention.sliding_window", 16);
    b.key_f32("attn_logit_softcapping", 8.0);
    b.key_f32("final_logit_softcapping", 30.0);
    embeddings(b, GEMMA_EMBD_STD, true, LOGIT_STD)?;
    blocks(
        b,
        BlockSpec {
            post_norms: true,
            ..PLAIN
        },
    )
}

/// With six layers of post-normed blocks at [`POST_NORM`], llama.cpp's own batched and
/// one-by-one runs of the file differed by 0.017 in probability (0.026 at 1.0, 0.025
/// at 3.0); at 2.0 they differ by 0.007, the file is well conditioned and its logits
/// as peaked as the other families'.
const GEMMA3_POST_NORM: f32 = 2.0;

fn gemma3(b: &mut Builder) -> Result<()> {
    header(b, "gemma3");
    // Six layers: llama.cpp makes layers 0-4 sliding and layer 5 global.
    b.dims.n_layer = 6;
    base_keys(b, 32768, 1e-6);
    head_dim_keys(b);
    b.key_u32("attention.sliding_window", 16);
    b.key_f32("rope.freq_base", 1_000_000.0);
    b.key("rope.scaling.type", Value::String("linear".into()));
    b.key_f32("rope.scaling.factor", 4.0);
    embeddings(b, GEMMA_EMBD_STD, true, LOGIT_STD)?;
    blocks(
        b,
        BlockSpec {
            post_norms: true,
            post_norm: GEMMA3_POST_NORM,
            qk_norm: QkNorm::PerHead,
            ..PLAIN
        },
    )
}

fn phi3(b: &mut Builder) -> Result<()> {
    header(b, "phi3");
    let (context, original) = (4096usize, 256usize);
    base_keys(b, context, 1e-5);
    b.key_f32("rope.freq_base", 10_000.0);
    b.key_u32("rope.dimension_count", b.dims.head_dim);
    b.key_u32("rope.scaling.original_context_length", original);
    // The converter's attention factor for LongRoPE: sqrt(1 + ln(s) / ln(original)).
    let s = context as f32 / original as f32;
    b.key_f32(
        "rope.scaling.attn_factor",
        (1.0 + s.ln() / (original as f32).ln()).sqrt(),
    );
    // Phi-3 configs carry a sliding window; llama.cpp ignores it (PR 13676). Shorter
    // than the test sequence, so a decoder that applies it shows up.
    b.key_u32("attention.sliding_window", 48);
    embeddings(b, 1.0, false, LOGIT_STD)?;
    let half = b.dims.head_dim / 2;
    let long: Vec<f32> = (0..half).map(|i| 1.0 + 0.25 * i as f32).collect();
    let short: Vec<f32> = (0..half).map(|i| 1.0 + 0.02 * i as f32).collect();
    b.put("rope_factors_long.weight", &[half], long, GgmlDType::F32)?;
    b.put("rope_factors_short.weight", &[half], short, GgmlDType::F32)?;
    blocks(
        b,
        BlockSpec {
            fused_qkv: true,
            fused_up: true,
            ..PLAIN
        },
    )
}

fn granite(b: &mut Builder) -> Result<()> {
    header(b, "granite");
    let (embedding_scale, logit_scale) = (6.0, 2.5);
    base_keys(b, 4096, 1e-5);
    b.key_f32("rope.freq_base", 10_000.0);
    b.key_u32("vocab_size", b.dims.n_vocab);
    b.key_f32("attention.scale", 0.25);
    b.key_f32("embedding_scale", embedding_scale);
    b.key_f32("residual_scale", 0.5);
    b.key_f32("logit_scale", logit_scale);
    embeddings(b, 1.0 / embedding_scale, false, LOGIT_STD * logit_scale)?;
    // attention.scale 0.25 is twice 1/sqrt(64): a smaller gain keeps the scores' spread.
    blocks(
        b,
        BlockSpec {
            qk_gain: 1.0,
            ..PLAIN
        },
    )
}

fn olmo2(b: &mut Builder) -> Result<()> {
    header(b, "olmo2");
    base_keys(b, 4096, 1e-6);
    b.key_f32("rope.freq_base", 500_000.0);
    embeddings(b, 1.0, false, LOGIT_STD)?;
    blocks(
        b,
        BlockSpec {
            pre_norms: false,
            post_norms: true,
            qk_norm: QkNorm::Full,
            ..PLAIN
        },
    )
}

fn gpt_oss(b: &mut Builder) -> Result<()> {
    header(b, "gpt-oss");
    let m = Moe {
        n_expert: 8,
        n_used: 2,
        n_ff: 256,
        biases: true,
        mxfp4: true,
    };
    b.dims.n_ff = m.n_ff;
    base_keys(b, 131072, 1e-5);
    head_dim_keys(b);
    moe_keys(b, m);
    b.key_u32("attention.sliding_window", 16);
    b.key_f32("rope.freq_base", 150_000.0);
    b.key("rope.scaling.type", Value::String("yarn".into()));
    b.key_f32("rope.scaling.factor", 32.0);
    b.key_u32("rope.scaling.original_context_length", 4096);
    embeddings(b, 1.0, false, LOGIT_STD)?;
    blocks(
        b,
        BlockSpec {
            ffn_norm: "post_attention_norm",
            qkv_bias: true,
            out_bias: true,
            sinks: true,
            moe: Some(m),
            ..PLAIN
        },
    )
}
