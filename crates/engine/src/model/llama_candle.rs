//! The llama-family decoder on candle tensors, for GPU devices (`cuda`/`metal` features).
//! The CPU runs [`super::decoder::DecoderModel`] on wick's own kernels instead.
//!
//! The KV cache is not inside the model: `forward` takes the sequence's own cache, so one
//! loaded model serves many sequences (one after another on this path).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::decoder_spec::DecoderSpec;
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::CandleKvCache as KvCache;

struct Attention {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    wo: QMatMul,
}

struct FeedForward {
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

impl FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        let up = self.up.forward(x)?;
        Ok(self.down.forward(&(gate * up)?)?)
    }
}

struct Block {
    attn_norm: Tensor,
    attn: Attention,
    ffn_norm: Tensor,
    ffn: FeedForward,
}

/// A loaded llama-family model: weights plus rotary tables; stateless between calls.
pub struct CandleLlama {
    pub config: DecoderSpec,
    embed: Arc<QTensor>,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl CandleLlama {
    pub fn from_gguf(gguf: &mut GgufFile, arch: &str, device: &Device) -> Result<Self> {
        let config = DecoderSpec::from_gguf(gguf, arch)?;
        if !config.is_plain() {
            return Err(EngineError::UnsupportedArchitecture(format!(
                "{arch} on a GPU device (the candle path runs llama and qwen2 for now)"
            )));
        }
        let embed = Arc::new(gguf.tensor("token_embd.weight", device)?);
        let output = if gguf.has_tensor("output.weight") {
            QMatMul::from_qtensor(gguf.tensor("output.weight", device)?)?
        } else {
            QMatMul::from_arc(embed.clone())?
        };
        let output_norm = gguf
            .tensor("output_norm.weight", device)?
            .dequantize(device)?;
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("blk.{i}");
            let mut qm = |n: &str| -> Result<QMatMul> {
                Ok(QMatMul::from_qtensor(
                    gguf.tensor(&format!("{p}.{n}"), device)?,
                )?)
            };
            let attn_parts = (
                qm("attn_q.weight")?,
                qm("attn_k.weight")?,
                qm("attn_v.weight")?,
                qm("attn_output.weight")?,
            );
            let ffn = FeedForward {
                gate: qm("ffn_gate.weight")?,
                up: qm("ffn_up.weight")?,
                down: qm("ffn_down.weight")?,
            };
            let mut dense = |n: &str| -> Result<Option<Tensor>> {
                let name = format!("{p}.{n}");
                if gguf.has_tensor(&name) {
                    Ok(Some(gguf.tensor(&name, device)?.dequantize(device)?))
                } else {
                    Ok(None)
                }
            };
            let (bq, bk, bv) = (
                dense("attn_q.bias")?,
                dense("attn_k.bias")?,
                dense("attn_v.bias")?,
            );
            let attn_norm = dense("attn_norm.weight")?.ok_or_else(|| {
                EngineError::InvalidModel(format!("missing {p}.attn_norm.weight"))
            })?;
            let ffn_norm = dense("ffn_norm.weight")?
                .ok_or_else(|| EngineError::InvalidModel(format!("missing {p}.ffn_norm.weight")))?;
            blocks.push(Block {
                attn_norm,
                attn: Attention {
                    wq: attn_parts.0,
                    wk: attn_parts.1,
                    wv: attn_parts.2,
                    wo: attn_parts.3,
                    bq,
                    bk,
                    bv,
                },
                ffn_norm,
                ffn,
            });
        }
        let (cos, sin) = rotary_tables(&config, device)?;
        Ok(Self {
            config,
            embed,
            blocks,
            output_norm,
            output,
            cos,
            sin,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run `tokens` (the next tokens of one sequence) through the model, appending their
    /// keys and values to `cache`; returns the logits of the last token, shape `(vocab,)`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let t = tokens.len();
        let pos = cache.len();
        if t == 0 {
            return Err(EngineError::Internal("empty forward".into()));
        }
        if pos + t > cache.capacity() || pos + t > self.max_positions() {
            return Err(EngineError::InvalidRequest(format!(
                "sequence of {} tokens exceeds the context window of {}",
                pos + t,
                cache.capacity().min(self.max_positions())
            )));
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?;
        let mask = causal_mask(t, pos, &self.device)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.config.rms_eps)?;
            let a = self.attention(&block.attn, &h, i, pos, mask.as_ref(), cache)?;
            x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, self.config.rms_eps)?;
            x = (&x + block.ffn.forward(&h)?)?;
        }
        cache.advance(t);
        let last = x.narrow(0, t - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.output_norm, self.config.rms_eps)?;
        Ok(self
            .output
            .forward(&last)?
            .squeeze(0)?
            .to_dtype(DType::F32)?)
    }

    fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    fn attention(
        &self,
        attn: &Attention,
        x: &Tensor,
        layer: usize,
        pos: usize,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let c = &self.config;
        let t = x.dim(0)?;
        let project = |w: &QMatMul, b: &Option<Tensor>, heads: usize| -> Result<Tensor> {
            let mut y = w.forward(x)?;
            if let Some(b) = b {
                y = y.broadcast_add(b)?;
            }
            Ok(y.reshape((1, t, heads, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = project(&attn.wq, &attn.bq, c.n_head)?;
        let k = project(&attn.wk, &attn.bk, c.n_kv_head)?;
        let v = project(&attn.wv, &attn.bv, c.n_kv_head)?;
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let (q, k) = if c.rope.neox {
            (
                candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
            )
        } else {
            (
                candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
            )
        };
        let (k_all, v_all) = cache.write(layer, &k, &v, pos)?;
        let total = pos + t;
        // Grouped-query attention without repeating K/V: the query heads that share a
        // KV head are stacked as extra rows of that head's matmul.
        let group = c.n_head / c.n_kv_head;
        let q = q.reshape((c.n_kv_head, group * t, c.head_dim))?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let mut att = (q.matmul(&k_all.t()?)? * scale)?;
        if let Some(mask) = mask {
            let mask = mask
                .unsqueeze(0)?
                .broadcast_as((group, t, total))?
                .reshape((group * t, total))?;
            att = att.broadcast_add(&mask)?;
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v_all)?; // (n_kv, group*t, hd)
        let y = y
            .reshape((c.n_head, t, c.head_dim))?
            .transpose(0, 1)?
            .reshape((t, c.n_head * c.head_dim))?;
        Ok(attn.wo.forward(&y)?)
    }
}

/// `(t, pos + t)` additive mask: 0 where a new token may attend, -inf in its future.
/// `None` for a single token, which may see everything before it.
fn causal_mask(t: usize, pos: usize, device: &Device) -> Result<Option<Tensor>> {
    if t == 1 {
        return Ok(None);
    }
    let total = pos + t;
    let data: Vec<f32> = (0..t)
        .flat_map(|i| (0..total).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(Tensor::from_vec(data, (t, total), device)?))
}

fn rotary_tables(c: &DecoderSpec, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = c.head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / c.rope.base.powf(2.0 * i as f32 / c.head_dim as f32))
        .collect();
    let positions = c.context_length.max(1);
    let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
    let t = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let freqs = t.broadcast_mul(&inv_freq)?;
    Ok((freqs.cos()?, freqs.sin()?))
}
