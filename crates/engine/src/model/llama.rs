//! The llama-family decoder as GGUF files lay it out, `llama` (SmolLM2, Llama 2/3) and
//! `qwen2` (Qwen2.5: q/k/v biases, NEOX rotary layout), on wick's own CPU kernels.
//!
//! One call runs a whole batch: the rows of every sequence in it (a prefill chunk or one
//! decoded token each) go through each weight matrix together, so a weight is read once
//! per step however many sequences run; only attention is per sequence, against that
//! sequence's own f16 [`CpuKvCache`]. Each row's result depends on that row alone, so a
//! sequence computes the same logits whatever runs beside it.

use candle_core::quantized::GgmlDType;
use wick_kernels::{QMatrix, QuantKind, ThreadPool};

use super::linear::{Linear, Projections, Run};
use super::llama_config::LlamaConfig;
use crate::cpu::attention::{attend, AttnDims, AttnJob};
use crate::cpu::ops;
use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, RawTensor};
use crate::kv_cache::CpuKvCache;

/// One sequence's part of a batch.
pub struct CpuBatchInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut CpuKvCache,
    /// Whether the logits of the last token are wanted (false for a middle prefill chunk).
    pub logits: bool,
}

struct Block {
    attn_norm: Vec<f32>,
    /// The query, key and value projections (in that order), stacked when they can be.
    qkv: Projections,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// The gate and up projections, stacked when they can be.
    gate_up: Projections,
    down: Linear,
}

/// A loaded llama-family model: weights only; all sequence state lives in the caches.
pub struct LlamaModel {
    pub config: LlamaConfig,
    embed: QMatrix,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    /// `None` when the output projection is tied to the token embeddings.
    output: Option<QMatrix>,
    vocab: usize,
    pool: ThreadPool,
    weights_bytes: usize,
}

impl LlamaModel {
    pub fn from_gguf(gguf: &mut GgufFile, arch: &str, threads: usize) -> Result<Self> {
        let config = LlamaConfig::from_gguf(gguf, arch)?;
        let embed = matrix(gguf, "token_embd.weight")?;
        let vocab = embed.rows();
        let output = if gguf.has_tensor("output.weight") {
            Some(matrix(gguf, "output.weight")?)
        } else {
            None
        };
        let output_norm = vector(gguf, "output_norm.weight")?;
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("blk.{i}");
            let mut linear = |name: &str, bias: &str| -> Result<Linear> {
                let b = format!("{p}.{bias}");
                Ok(Linear {
                    w: matrix(gguf, &format!("{p}.{name}"))?,
                    bias: if gguf.has_tensor(&b) {
                        Some(vector(gguf, &b)?)
                    } else {
                        None
                    },
                })
            };
            let (wq, wk, wv) = (
                linear("attn_q.weight", "attn_q.bias")?,
                linear("attn_k.weight", "attn_k.bias")?,
                linear("attn_v.weight", "attn_v.bias")?,
            );
            let wo = linear("attn_output.weight", "attn_output.bias")?;
            let (gate, up) = (
                linear("ffn_gate.weight", "ffn_gate.bias")?,
                linear("ffn_up.weight", "ffn_up.bias")?,
            );
            let down = linear("ffn_down.weight", "ffn_down.bias")?;
            let c = &config;
            let ffn = gate.w.rows();
            let shapes = [
                (&wq, c.n_head * c.head_dim, c.n_embd),
                (&wk, c.n_kv_head * c.head_dim, c.n_embd),
                (&wv, c.n_kv_head * c.head_dim, c.n_embd),
                (&wo, c.n_embd, c.n_head * c.head_dim),
                (&down, c.n_embd, ffn),
                (&up, ffn, c.n_embd),
                (&gate, ffn, c.n_embd),
            ];
            for (l, rows, cols) in shapes {
                if l.w.rows() != rows || l.w.cols() != cols {
                    return Err(EngineError::InvalidModel(format!(
                        "{p}: a weight is {}x{}, expected {rows}x{cols}",
                        l.w.rows(),
                        l.w.cols()
                    )));
                }
            }
            let block = Block {
                qkv: Projections::new(vec![wq, wk, wv])?,
                wo,
                gate_up: Projections::new(vec![gate, up])?,
                down,
                attn_norm: vector(gguf, &format!("{p}.attn_norm.weight"))?,
                ffn_norm: vector(gguf, &format!("{p}.ffn_norm.weight"))?,
            };
            if block.attn_norm.len() != c.n_embd || block.ffn_norm.len() != c.n_embd {
                return Err(EngineError::InvalidModel(format!("{p}: norm size")));
            }
            blocks.push(block);
        }
        if embed.cols() != config.n_embd
            || output_norm.len() != config.n_embd
            || output
                .as_ref()
                .is_some_and(|o| o.cols() != config.n_embd || o.rows() != vocab)
            || config.head_dim % 2 != 0
        {
            return Err(EngineError::InvalidModel(
                "embedding or output shapes do not match the model dimensions".into(),
            ));
        }
        let weights_bytes = embed.size_bytes()
            + output.as_ref().map_or(0, |o| o.size_bytes())
            + blocks
                .iter()
                .map(|b| {
                    b.qkv.size_bytes()
                        + b.gate_up.size_bytes()
                        + b.wo.w.size_bytes()
                        + b.down.w.size_bytes()
                })
                .sum::<usize>();
        Ok(Self {
            config,
            embed,
            blocks,
            output_norm,
            output,
            vocab,
            pool: ThreadPool::new(threads.max(1)),
            weights_bytes,
        })
    }

    /// Bytes of weight data held in memory.
    pub fn weights_bytes(&self) -> usize {
        self.weights_bytes
    }

    /// Rows of the embedding matrix.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// The model's worker threads.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Threads in this model's pool (the most a forward call can use).
    pub fn max_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Run one step for every sequence in `batch`, appending their keys and values to
    /// their caches; returns the last token's logits of each input that asked for them.
    pub fn forward_batch(
        &self,
        batch: &mut [CpuBatchInput],
        threads: usize,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let c = &self.config;
        let run = Run {
            pool: &self.pool,
            threads: threads.clamp(1, self.pool.n_threads()),
        };
        let mut starts = Vec::with_capacity(batch.len());
        for item in batch.iter_mut() {
            let pos = item.cache.len();
            let t = item.tokens.len();
            if t == 0 {
                return Err(EngineError::InvalidRequest("empty forward".into()));
            }
            if let Some(bad) = item.tokens.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(EngineError::InvalidRequest(format!(
                    "token id {bad} is outside the vocabulary ({} tokens)",
                    self.vocab
                )));
            }
            item.cache.reserve(pos + t)?;
            starts.push(pos);
        }
        let rows: usize = batch.iter().map(|b| b.tokens.len()).sum();
        let d = c.n_embd;
        let hd = c.head_dim;
        let q_width = c.n_head * hd;
        let kv_width = c.n_kv_head * hd;

        let mut x = vec![0.0f32; rows * d];
        let mut row_pos = Vec::with_capacity(rows);
        for (item, &start) in batch.iter().zip(&starts) {
            for (i, &tok) in item.tokens.iter().enumerate() {
                let r = row_pos.len();
                self.embed
                    .dequantize_row(tok as usize, &mut x[r * d..(r + 1) * d])
                    .map_err(|e| EngineError::InvalidRequest(format!("embedding: {e}")))?;
                row_pos.push(start + i);
            }
        }
        let half = hd / 2;
        let mut cos = vec![0.0f32; rows * half];
        let mut sin = vec![0.0f32; rows * half];
        for (r, &p) in row_pos.iter().enumerate() {
            ops::rope_angles(
                p,
                hd,
                c.rope_base,
                &mut cos[r * half..(r + 1) * half],
                &mut sin[r * half..(r + 1) * half],
            );
        }

        let dims = AttnDims {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: hd,
        };
        let (mut h, mut q, mut k, mut v) = (vec![0.0; rows * d], vec![], vec![], vec![]);
        let (mut att, mut o, mut g, mut u) = (vec![0.0; rows * q_width], vec![], vec![], vec![]);
        for (layer, block) in self.blocks.iter().enumerate() {
            ops::rms_norm(&x, &block.attn_norm, c.rms_eps, &mut h);
            block
                .qkv
                .forward(&run, &h, rows, &mut [&mut q, &mut k, &mut v])?;
            for r in 0..rows {
                let (cr, sr) = (
                    &cos[r * half..(r + 1) * half],
                    &sin[r * half..(r + 1) * half],
                );
                ops::rope_row(
                    &mut q[r * q_width..(r + 1) * q_width],
                    hd,
                    cr,
                    sr,
                    c.neox_rope,
                );
                ops::rope_row(
                    &mut k[r * kv_width..(r + 1) * kv_width],
                    hd,
                    cr,
                    sr,
                    c.neox_rope,
                );
            }
            let mut row0 = 0;
            for (item, &start) in batch.iter_mut().zip(&starts) {
                let t = item.tokens.len();
                let span = row0 * kv_width..(row0 + t) * kv_width;
                item.cache.write(layer, start, &k[span.clone()], &v[span])?;
                row0 += t;
            }
            {
                let mut jobs = Vec::with_capacity(batch.len());
                let mut row0 = 0;
                for (item, &start) in batch.iter().zip(&starts) {
                    let t = item.tokens.len();
                    let (kc, vc) = item.cache.layer(layer, start + t).ok_or_else(|| {
                        EngineError::InvalidRequest(format!("no cache for layer {layer}"))
                    })?;
                    jobs.push(AttnJob {
                        q: &q[row0 * q_width..(row0 + t) * q_width],
                        k: kc,
                        v: vc,
                        start,
                        out_row: row0,
                    });
                    row0 += t;
                }
                attend(run.pool, run.threads, dims, &jobs, &mut att);
            }
            block.wo.forward(&run, &att, rows, &mut o)?;
            ops::add_in_place(&mut x, &o);
            ops::rms_norm(&x, &block.ffn_norm, c.rms_eps, &mut h);
            block
                .gate_up
                .forward(&run, &h, rows, &mut [&mut g, &mut u])?;
            ops::silu_mul(&mut g, &u);
            block.down.forward(&run, &g, rows, &mut o)?;
            ops::add_in_place(&mut x, &o);
        }
        for item in batch.iter_mut() {
            item.cache.advance(item.tokens.len());
        }

        // Logits only for the last row of the inputs that want them.
        let mut last_rows = Vec::new();
        let mut row_end = 0;
        for item in batch.iter() {
            row_end += item.tokens.len();
            if item.logits {
                last_rows.push(row_end - 1);
            }
        }
        let m = last_rows.len();
        let mut results = vec![None; batch.len()];
        if m == 0 {
            return Ok(results);
        }
        let mut last = vec![0.0f32; m * d];
        for (i, &r) in last_rows.iter().enumerate() {
            last[i * d..(i + 1) * d].copy_from_slice(&x[r * d..(r + 1) * d]);
        }
        let mut normed = vec![0.0f32; m * d];
        ops::rms_norm(&last, &self.output_norm, c.rms_eps, &mut normed);
        let out = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0.0f32; m * self.vocab];
        out.matmul(run.pool, run.threads, &normed, m, &mut logits)
            .map_err(|e| EngineError::InvalidRequest(format!("matmul: {e}")))?;
        let mut chunks = logits.chunks_exact(self.vocab);
        for (slot, item) in results.iter_mut().zip(batch.iter()) {
            if item.logits {
                *slot = chunks.next().map(|l| l.to_vec());
            }
        }
        Ok(results)
    }
}

fn quant_kind(dtype: GgmlDType) -> Option<QuantKind> {
    Some(match dtype {
        GgmlDType::F32 => QuantKind::F32,
        GgmlDType::F16 => QuantKind::F16,
        GgmlDType::Q4_0 => QuantKind::Q4_0,
        GgmlDType::Q4_1 => QuantKind::Q4_1,
        GgmlDType::Q5_0 => QuantKind::Q5_0,
        GgmlDType::Q8_0 => QuantKind::Q8_0,
        GgmlDType::Q4K => QuantKind::Q4K,
        GgmlDType::Q5K => QuantKind::Q5K,
        GgmlDType::Q6K => QuantKind::Q6K,
        _ => return None,
    })
}

/// A 2-D weight as a kernel matrix.
pub(crate) fn matrix(gguf: &mut GgufFile, name: &str) -> Result<QMatrix> {
    let RawTensor { dtype, dims, data } = gguf.raw_tensor(name)?;
    let kind = quant_kind(dtype).ok_or_else(|| {
        EngineError::InvalidModel(format!(
            "tensor '{name}' has type {dtype:?}, which wick's CPU kernels do not support"
        ))
    })?;
    let [rows, cols] = dims[..] else {
        return Err(EngineError::InvalidModel(format!(
            "tensor '{name}' should be 2-D, has shape {dims:?}"
        )));
    };
    QMatrix::new(kind, rows, cols, data)
        .map_err(|e| EngineError::InvalidModel(format!("tensor '{name}': {e}")))
}

/// A 1-D f32 (or f16) tensor such as a norm weight or a bias.
pub(crate) fn vector(gguf: &mut GgufFile, name: &str) -> Result<Vec<f32>> {
    let RawTensor { dtype, dims, data } = gguf.raw_tensor(name)?;
    if dims.len() != 1 {
        return Err(EngineError::InvalidModel(format!(
            "tensor '{name}' should be 1-D, has shape {dims:?}"
        )));
    }
    match dtype {
        GgmlDType::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        GgmlDType::F16 => Ok(data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        other => Err(EngineError::InvalidModel(format!(
            "tensor '{name}' has type {other:?}; expected f32 or f16"
        ))),
    }
}
