//! The decoder on candle tensors, for GPU devices (`cuda`/`metal` features; tests run it
//! on candle's CPU device). It reads the same [`DecoderSpec`] and the same optional
//! tensors as the CPU forward ([`super::decoder::DecoderModel`]), so every family the
//! CPU path runs runs here too, without a second copy per family.
//!
//! One call runs the batcher's whole step: the rows of every sequence in it (a prompt
//! chunk or one decoded token each) go through each projection as one quantized matmul;
//! rotary angles follow each row's own position; attention is per sequence, against
//! that sequence's own [`CandleKvCache`] with its causal (and sliding-window) mask; the
//! output head runs only for the rows that want logits, and those come back to the host
//! in one copy. Each row's result depends on that row alone, so a sequence computes the
//! same logits whatever runs beside it.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use wick_kernels::{QMatrix, ThreadPool};

use super::candle_cpu_ops::{self as cpu_ops, KernelMatmul};
use super::decoder::{Head, RopeFactors, RopeTable};
use super::decoder_spec::{Activation, DecoderSpec, ExpertGating};
use super::tensors::{floats, kernel_kind, matrix, vector};
use crate::cpu::attention::AttnDims;
use crate::error::{EngineError, Result};
use crate::gguf::{GgmlType, GgufFile};
use crate::kv_cache::CandleKvCache;

/// One sequence's part of a batch.
pub struct CandleBatchInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut CandleKvCache,
    /// Whether the output of the last token is wanted (false for a middle prompt chunk).
    pub logits: bool,
}

/// A projection's matrix: candle's, or (candle's CPU device,
/// [`CandleArithmetic::KernelMatmuls`] and [`CandleArithmetic::Ggml`]) wick's kernels
/// inside a candle op.
enum Weight {
    Candle(QMatMul),
    Kernels(KernelMatmul),
}

impl Weight {
    /// `x` (`rows x cols`) times the matrix's transpose.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::Candle(w) => w.forward(x)?,
            Weight::Kernels(w) => x.contiguous()?.apply_op1_no_bwd(w)?,
        })
    }
}

/// Builds each matrix the way [`CandleArithmetic`] asks.
struct WeightLoader<'a> {
    arithmetic: CandleArithmetic,
    device: &'a Device,
    /// The kernels' threads (when wick's kernels multiply).
    pool: Option<Arc<ThreadPool>>,
}

impl WeightLoader<'_> {
    fn new(arithmetic: CandleArithmetic, device: &Device) -> Result<WeightLoader<'_>> {
        let pool = match arithmetic {
            CandleArithmetic::KernelMatmuls | CandleArithmetic::Ggml if !device.is_cpu() => {
                return Err(EngineError::InvalidRequest(
                    "wick's kernels run on the CPU device only".into(),
                ))
            }
            CandleArithmetic::KernelMatmuls | CandleArithmetic::Ggml => {
                Some(Arc::new(ThreadPool::new(wick_kernels::physical_cores())))
            }
            _ => None,
        };
        Ok(WeightLoader {
            arithmetic,
            device,
            pool,
        })
    }

    /// The 2-D tensor `name` and its `(rows, cols)`.
    fn named(&self, gguf: &mut GgufFile, name: &str) -> Result<(Weight, usize, usize)> {
        if let Some(pool) = &self.pool {
            let w = matrix(gguf, name)?;
            let (rows, cols) = (w.rows(), w.cols());
            let pool = pool.clone();
            return Ok((Weight::Kernels(KernelMatmul { w, pool }), rows, cols));
        }
        let t = gguf.tensor(name, self.device)?;
        let (rows, cols) = t.shape().dims2()?;
        Ok((self.candle(Arc::new(t))?, rows, cols))
    }

    /// One expert's `r x k` matrix `name` of type `ty` from its blocks `data`.
    fn expert(
        &self,
        name: &str,
        ty: GgmlType,
        data: &[u8],
        shape: (usize, usize),
    ) -> Result<Weight> {
        if let Some(pool) = &self.pool {
            let (r, k) = shape;
            let w = QMatrix::new(kernel_kind(name, ty)?, r, k, data.to_vec())
                .map_err(|e| EngineError::InvalidModel(format!("{name}: {e}")))?;
            let pool = pool.clone();
            return Ok(Weight::Kernels(KernelMatmul { w, pool }));
        }
        let q = expert_matrix(name, ty, data, shape, self.device)?;
        self.candle(Arc::new(q))
    }

    fn candle(&self, t: Arc<QTensor>) -> Result<Weight> {
        Ok(Weight::Candle(match self.arithmetic {
            CandleArithmetic::F32 => QMatMul::QTensor(Arc::new(QTensor::quantize(
                &t.dequantize(self.device)?,
                GgmlDType::F32,
            )?)),
            _ => QMatMul::from_arc(t)?,
        }))
    }
}

/// A projection with its optional bias.
struct Linear {
    w: Weight,
    rows: usize,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Projections that read the same input: separate matrices, or one matrix the file
/// stores them in (phi3), whose output columns are split.
enum Projections {
    Separate(Vec<Linear>),
    Fused { linear: Linear, parts: Vec<usize> },
}

impl Projections {
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Projections::Separate(parts) => parts.iter().map(|l| l.forward(x)).collect(),
            Projections::Fused { linear, parts } => {
                let y = linear.forward(x)?;
                let mut at = 0;
                parts
                    .iter()
                    .map(|&n| {
                        let part = y.narrow(1, at, n)?.contiguous()?;
                        at += n;
                        Ok(part)
                    })
                    .collect()
            }
        }
    }
}

/// A block's feed-forward network.
enum Ffn {
    /// Gate and up, then down.
    Dense {
        gate_up: Projections,
        down: Linear,
    },
    Experts(Experts),
}

/// A mixture of experts: the router picks each row's `n_used` most probable experts on
/// the host and weighs them as the family does; each chosen expert then runs once on
/// all the rows that chose it.
struct Experts {
    router: Linear,
    /// Per expert: gate, up, down.
    experts: Vec<[Linear; 3]>,
    n_used: usize,
    gating: ExpertGating,
}

impl Experts {
    fn forward(&self, x: &Tensor, activation: Activation, steps: Steps) -> Result<Tensor> {
        let n_expert = self.experts.len();
        let logits = self
            .router
            .forward(x)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        // Per expert, the rows that chose it and their weights.
        let mut members: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); n_expert];
        let mut chosen = Vec::with_capacity(self.n_used);
        for (r, row) in logits.iter().enumerate() {
            chosen.clear();
            self.gating.pick(row, self.n_used, &mut chosen);
            for &(i, w) in &chosen {
                members[i].0.push(r as u32);
                members[i].1.push(w);
            }
        }
        let mut out = x.zeros_like()?;
        for ([gate, up, down], (rows, weights)) in self.experts.iter().zip(members) {
            if rows.is_empty() {
                continue;
            }
            let m = rows.len();
            let idx = Tensor::new(rows.as_slice(), x.device())?;
            let xe = x.index_select(&idx, 0)?;
            let g = gated(&gate.forward(&xe)?, &up.forward(&xe)?, activation, steps)?;
            let y = down.forward(&g)?;
            let w = Tensor::from_vec(weights, (m, 1), x.device())?;
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        Ok(out)
    }
}

/// The gated FFN's product of the activated gate and the up projection, as
/// [`Activation::apply`] computes it on the CPU.
fn gated(g: &Tensor, u: &Tensor, activation: Activation, steps: Steps) -> Result<Tensor> {
    if let Steps::Cpu(_) = steps {
        return cpu_ops::gated(g, u, activation);
    }
    Ok(match activation {
        Activation::Silu => (candle_nn::ops::silu(g)? * u)?,
        Activation::GeluTanh => (g.gelu()? * u)?,
        Activation::SwigluOai => {
            // gpt-oss: the gate clamped above, the up projection both ways, then
            // `x * sigmoid(1.702 x) * (y + 1)`.
            let (alpha, limit) = (1.702, 7.0);
            let x = g.minimum(limit)?;
            let y = u.clamp(-limit, limit)?;
            let sig = ((x.affine(-alpha, 0.0)?.exp()? + 1.0)?).recip()?;
            ((x * sig)? * (y + 1.0)?)?
        }
    })
}

struct Block {
    attn_norm: Option<Tensor>,
    /// Queries, keys, values.
    qkv: Projections,
    /// Per head (its length is the head size) or over the whole projection (olmo2).
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    wo: Linear,
    /// gpt-oss's per-head sink logits: one more term in each softmax's denominator.
    sinks: Option<Vec<f32>>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Option<Tensor>,
    ffn: Ffn,
    post_ffn_norm: Option<Tensor>,
}

/// A loaded decoder on a candle device: weights only; all sequence state lives in the
/// caches.
pub struct CandleDecoder {
    pub spec: DecoderSpec,
    embed: Arc<QTensor>,
    vocab: usize,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    /// Per-frequency rope divisors: llama 3's `rope_freqs`, or LongRoPE's pair.
    rope_factors: RopeFactors,
    device: Device,
    /// wick's kernels' threads when the norms, activations and attention run the CPU
    /// path's code too ([`CandleArithmetic::Ggml`]).
    cpu_steps: Option<Arc<ThreadPool>>,
}

/// Where the steps that ggml's CPU backend rounds its own way (norms, activations,
/// attention) run: candle's ops, or the CPU path's code ([`CandleArithmetic::Ggml`]).
#[derive(Clone, Copy)]
enum Steps<'a> {
    Candle,
    Cpu(&'a ThreadPool),
}

/// Rotary cosines and sines of one step's rows, `(rows, dims / 2)` each.
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

/// How the candle path computes: with candle's kernels (what a GPU runs), or, on
/// candle's CPU device, with parts of wick's CPU arithmetic, so that the two paths can be
/// compared step for step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandleArithmetic {
    /// Quantized as in the file, multiplied by candle's quantized kernels (what a GPU
    /// runs).
    Quantized,
    /// Dequantized to f32 at load and multiplied by candle's row-by-row f32 dot
    /// products: each row's result then does not depend on how many rows run beside
    /// it (candle's quantized and dense kernels switch tiling with the row count), which
    /// is what proves the batching exactly.
    F32,
    /// Quantized as in the file, multiplied by wick's own CPU kernels (candle's CPU
    /// device only): every projection computes what the CPU path computes, ggml's
    /// arithmetic, so the two paths can be held to the llama.cpp parity bounds. candle's
    /// CPU kernels round differently from ggml in places (Q8_1's activation sums
    /// rounded to f16 twice; on AVX512-VNNI hosts, Q8_0 weights met with 256-value
    /// activation blocks), which is candle's arithmetic, not the device path's.
    KernelMatmuls,
    /// [`KernelMatmuls`](Self::KernelMatmuls), and the norms, the gated activations and
    /// attention computed by the CPU path's own code (candle's CPU device only): every
    /// step ggml's CPU backend rounds its own way (8-bit activation blocks, f16 queries
    /// and value sums, the f16 GELU table, f64 norm sums, SiLU's SIMD `exp`) rounds as
    /// the CPU path does. What is left to the device path's own code is its whole
    /// structure: embeddings, rope by each row's position, the caches and which
    /// positions each query sees, sliding windows, sinks, soft-caps, scales, biases,
    /// experts' routing, the residual stream and the head.
    Ggml,
}

impl CandleDecoder {
    pub fn from_gguf(
        gguf: &mut GgufFile,
        arch: &str,
        device: &Device,
        arithmetic: CandleArithmetic,
    ) -> Result<Self> {
        let loader = WeightLoader::new(arithmetic, device)?;
        let spec = DecoderSpec::from_gguf(gguf, arch)?;
        let embed = Arc::new(gguf.tensor("token_embd.weight", device)?);
        let (vocab, embd_cols) = embed.shape().dims2()?;
        let output_name = match gguf.has_tensor("output.weight") {
            true => "output.weight",
            false => "token_embd.weight",
        };
        let (output, out_rows, out_cols) = loader.named(gguf, output_name)?;
        if (out_rows, out_cols) != (vocab, spec.n_embd) {
            return Err(EngineError::InvalidModel(
                "the output projection does not match the model dimensions".into(),
            ));
        }
        let output_norm = dense(gguf, "output_norm.weight", device, &[spec.n_embd])?
            .ok_or_else(|| EngineError::InvalidModel("missing output_norm.weight".into()))?;
        if embd_cols != spec.n_embd {
            return Err(EngineError::InvalidModel(
                "the embeddings do not match the model dimensions".into(),
            ));
        }
        let names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
        let rope_factors = RopeFactors::from_gguf(
            &|n| names.iter().any(|t| t == n),
            &mut |n| vector(gguf, n),
            spec.rope.dims / 2,
        )?;
        let mut blocks = Vec::with_capacity(spec.n_layer);
        for i in 0..spec.n_layer {
            blocks.push(load_block(gguf, &spec, i, device, &loader)?);
        }
        Ok(Self {
            spec,
            embed,
            vocab,
            blocks,
            output_norm,
            output,
            rope_factors,
            device: device.clone(),
            cpu_steps: match arithmetic {
                CandleArithmetic::Ggml => loader.pool.clone(),
                _ => None,
            },
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rows of the embedding matrix.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Run one step for every sequence in `batch`, appending their keys and values to
    /// their caches; returns, for each input that asks, its last token's logits
    /// (`Head::Logits`) or final-normed hidden state (`Head::Hidden`).
    pub fn forward_batch(
        &self,
        batch: &mut [CandleBatchInput],
        head: Head,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let c = &self.spec;
        let steps = match &self.cpu_steps {
            Some(pool) => Steps::Cpu(pool),
            None => Steps::Candle,
        };
        let mut starts = Vec::with_capacity(batch.len());
        let mut ids = Vec::new();
        let mut row_pos = Vec::new();
        let mut factors = Vec::new();
        for item in batch.iter_mut() {
            let pos = item.cache.len();
            if item.tokens.is_empty() {
                return Err(EngineError::Internal("empty forward".into()));
            }
            if let Some(bad) = item.tokens.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(EngineError::InvalidRequest(format!(
                    "token id {bad} is outside the vocabulary ({} tokens)",
                    self.vocab
                )));
            }
            item.cache.reserve(pos + item.tokens.len())?;
            starts.push(pos);
            ids.extend_from_slice(item.tokens);
            row_pos.extend(pos..pos + item.tokens.len());
            let f = self
                .rope_factors
                .for_context(item.cache.capacity(), c.rope.original_context);
            factors.extend(std::iter::repeat_n(f, item.tokens.len()));
        }
        let dev = &self.device;
        let ids = Tensor::new(ids.as_slice(), dev)?;
        let mut x = self.embed.embedding(&ids)?.to_dtype(DType::F32)?;
        if let Some(s) = c.embed_scale {
            x = (x * f64::from(s))?;
        }
        let global = self.rotary(&row_pos, &factors, c.rope.base, c.rope.freq_scale)?;
        let local = match c.swa_layers.iter().any(|&s| s) {
            true => Some(self.rotary(
                &row_pos,
                &factors,
                c.rope.base_local,
                c.rope.freq_scale_local,
            )?),
            false => None,
        };

        // The CPU path's attention ([`Steps::Cpu`]) takes the same scale and soft-cap on
        // every layer, and each layer's window.
        let cpu_dims = AttnDims {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
            scale: if c.scale_queries { 1.0 } else { c.attn_scale },
            softcap: c.attn_softcap,
            window: None,
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let sliding = c.swa_layers.get(layer).copied().unwrap_or(false);
            let rope = match (&local, sliding) {
                (Some(l), true) => l,
                _ => &global,
            };
            let h = rms_norm(&x, block.attn_norm.as_ref(), c.rms_eps, steps)?;
            let [q, k, v]: [Tensor; 3] = block
                .qkv
                .forward(&h)?
                .try_into()
                .map_err(|_| EngineError::Internal("three projections expected".into()))?;
            let q = head_norm(&q, block.q_norm.as_ref(), c.rms_eps, steps)?;
            let k = head_norm(&k, block.k_norm.as_ref(), c.rms_eps, steps)?;
            let mut q = self.rope(&q, c.n_head, rope)?;
            let k = self.rope(&k, c.n_kv_head, rope)?;
            if c.scale_queries {
                q = (q * f64::from(c.attn_scale))?;
            }
            let v = by_head(&v, c.n_kv_head, c.head_dim)?;
            let window = if sliding { c.sliding_window } else { None };
            let layer_dims = AttnDims { window, ..cpu_dims };
            let sinks = block.sinks.as_deref();
            let mut outs = Vec::with_capacity(batch.len());
            let mut row0 = 0;
            for (item, &start) in batch.iter_mut().zip(&starts) {
                let t = item.tokens.len();
                let (k_all, v_all) = item.cache.write(
                    layer,
                    &k.narrow(1, row0, t)?,
                    &v.narrow(1, row0, t)?,
                    start,
                )?;
                let q = q.narrow(1, row0, t)?;
                outs.push(match steps {
                    Steps::Candle => self.attend(&q, &k_all, &v_all, start, window, sinks)?,
                    Steps::Cpu(pool) => {
                        cpu_ops::attention(&q, &k_all, &v_all, layer_dims, sinks, start, pool)?
                    }
                });
                row0 += t;
            }
            let att = Tensor::cat(&outs, 0)?;
            let o = block.wo.forward(&att)?;
            x = self.finish_branch(&x, o, block.post_attn_norm.as_ref(), steps)?;

            let h = rms_norm(&x, block.ffn_norm.as_ref(), c.rms_eps, steps)?;
            let o = match &block.ffn {
                Ffn::Dense { gate_up, down } => {
                    let [g, u]: [Tensor; 2] = gate_up
                        .forward(&h)?
                        .try_into()
                        .map_err(|_| EngineError::Internal("two projections expected".into()))?;
                    down.forward(&gated(&g, &u, c.activation, steps)?)?
                }
                Ffn::Experts(experts) => experts.forward(&h, c.activation, steps)?,
            };
            x = self.finish_branch(&x, o, block.post_ffn_norm.as_ref(), steps)?;
        }
        for item in batch.iter_mut() {
            item.cache.advance(item.tokens.len());
        }

        // The output head only for the last row of the inputs that want it.
        let mut last_rows = Vec::new();
        let mut row_end = 0u32;
        for item in batch.iter() {
            row_end += item.tokens.len() as u32;
            if item.logits {
                last_rows.push(row_end - 1);
            }
        }
        let mut results = vec![None; batch.len()];
        if last_rows.is_empty() {
            return Ok(results);
        }
        let idx = Tensor::new(last_rows.as_slice(), dev)?;
        let last = x.index_select(&idx, 0)?;
        let normed = rms_norm(&last, Some(&self.output_norm), c.rms_eps, steps)?;
        let out = match head {
            Head::Hidden => normed,
            Head::Logits => {
                let mut logits = self.output.forward(&normed)?.to_dtype(DType::F32)?;
                if let Some(s) = c.logit_scale {
                    logits = (logits / f64::from(s))?;
                }
                if let Some(cap) = c.final_softcap {
                    logits = ((logits / f64::from(cap))?.tanh()? * f64::from(cap))?;
                }
                logits
            }
        };
        // One copy back to the host for the whole step.
        let mut rows = out.to_vec2::<f32>()?.into_iter();
        for (slot, item) in results.iter_mut().zip(batch.iter()) {
            if item.logits {
                *slot = rows.next();
            }
        }
        Ok(results)
    }

    /// The rotary angles of `positions` with each row's factors, computed as the CPU
    /// path computes them (cosines and sines scaled by the attention factor).
    fn rotary(
        &self,
        positions: &[usize],
        factors: &[Option<&[f32]>],
        base: f32,
        scale: f32,
    ) -> Result<Rotary> {
        let half = self.spec.rope.dims / 2;
        let table = RopeTable::new(
            positions,
            factors,
            self.spec.rope.dims,
            base,
            scale,
            self.spec.rope.attn_factor,
            self.spec.rope.yarn.as_ref(),
        );
        let (cos, sin) = (table.cos, table.sin);
        let shape = (positions.len(), half);
        Ok(Rotary {
            cos: Tensor::from_vec(cos, shape, &self.device)?,
            sin: Tensor::from_vec(sin, shape, &self.device)?,
        })
    }

    /// Rotate `x` (`rows x heads * head_dim`) by each row's angles; returns it as
    /// `(heads, rows, head_dim)`. Only the first `rope.dims` values of a head turn.
    fn rope(&self, x: &Tensor, heads: usize, rot: &Rotary) -> Result<Tensor> {
        let (hd, dims) = (self.spec.head_dim, self.spec.rope.dims);
        let x = by_head(x, heads, hd)?.unsqueeze(0)?;
        let turn = |t: &Tensor| -> Result<Tensor> {
            Ok(if self.spec.rope.neox {
                candle_nn::rotary_emb::rope(t, &rot.cos, &rot.sin)?
            } else {
                candle_nn::rotary_emb::rope_i(t, &rot.cos, &rot.sin)?
            })
        };
        let y = if dims == hd {
            turn(&x)?
        } else {
            let turned = turn(&x.narrow(3, 0, dims)?.contiguous()?)?;
            Tensor::cat(&[turned, x.narrow(3, dims, hd - dims)?], 3)?
        };
        Ok(y.squeeze(0)?)
    }

    /// One sequence's attention: `q` `(heads, t, head_dim)` at positions
    /// `start..start + t` against its cached `k`, `v` `(kv_heads, start + t, head_dim)`;
    /// returns `(t, heads * head_dim)`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        start: usize,
        window: Option<usize>,
        sinks: Option<&[f32]>,
    ) -> Result<Tensor> {
        let c = &self.spec;
        let t = q.dim(1)?;
        let n = start + t;
        // The query heads that share a KV head are stacked as extra rows of its matmul.
        let group = c.n_head / c.n_kv_head;
        let q = q
            .contiguous()?
            .reshape((c.n_kv_head, group * t, c.head_dim))?;
        let mut att = q.matmul(&k.t()?.contiguous()?)?;
        if !c.scale_queries {
            att = (att * f64::from(c.attn_scale))?;
        }
        if let Some(cap) = c.attn_softcap.filter(|&cap| cap > 0.0) {
            att = ((att / f64::from(cap))?.tanh()? * f64::from(cap))?;
        }
        if let Some(mask) = mask(t, start, window, &self.device)? {
            let mask = mask
                .unsqueeze(0)?
                .broadcast_as((group, t, n))?
                .reshape((group * t, n))?;
            att = att.broadcast_add(&mask)?;
        }
        let att = match sinks {
            // Each head's sink joins its rows' softmax as one more logit, then leaves.
            Some(sinks) => {
                let col: Vec<f32> = sinks
                    .iter()
                    .flat_map(|&s| std::iter::repeat_n(s, t))
                    .collect();
                let col = Tensor::from_vec(col, (c.n_kv_head, group * t, 1), &self.device)?;
                let att = Tensor::cat(&[att, col], 2)?;
                candle_nn::ops::softmax_last_dim(&att)?.narrow(2, 0, n)?
            }
            None => candle_nn::ops::softmax_last_dim(&att)?,
        };
        let y = att.matmul(v)?;
        Ok(y.reshape((c.n_head, t, c.head_dim))?
            .transpose(0, 1)?
            .reshape((t, c.n_head * c.head_dim))?)
    }

    /// Add a branch's output to the residual stream: post-norm it and scale it first
    /// when the family says so.
    fn finish_branch(
        &self,
        x: &Tensor,
        out: Tensor,
        post_norm: Option<&Tensor>,
        steps: Steps,
    ) -> Result<Tensor> {
        let mut out = rms_norm(&out, post_norm, self.spec.rms_eps, steps)?;
        if let Some(s) = self.spec.residual_scale {
            out = (out * f64::from(s))?;
        }
        Ok((x + out)?)
    }
}

/// `(rows, heads * head_dim)` as `(heads, rows, head_dim)`, contiguous.
fn by_head(x: &Tensor, heads: usize, hd: usize) -> Result<Tensor> {
    let rows = x.dim(0)?;
    Ok(x.reshape((rows, heads, hd))?
        .transpose(0, 1)?
        .contiguous()?)
}

/// RMS norm of each row when there is a weight, else the rows as they are.
fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f32, steps: Steps) -> Result<Tensor> {
    Ok(match (w, steps) {
        (Some(w), Steps::Cpu(_)) => cpu_ops::rms_norm(x, w, eps)?,
        (Some(w), Steps::Candle) => candle_nn::ops::rms_norm(x, w, eps)?,
        (None, _) => x.clone(),
    })
}

/// A q/k norm: per head when its weight has a head's length, else over the whole row.
fn head_norm(x: &Tensor, w: Option<&Tensor>, eps: f32, steps: Steps) -> Result<Tensor> {
    let Some(w) = w else {
        return Ok(x.clone());
    };
    let (rows, width) = x.dims2()?;
    let hd = w.dim(0)?;
    Ok(
        rms_norm(&x.reshape((rows, width / hd, hd))?, Some(w), eps, steps)?
            .reshape((rows, width))?,
    )
}

/// `(t, start + t)` additive mask: 0 where query `i` (at `start + i`) may see key `j`,
/// -inf in its future and, on sliding-window layers, before its window. `None` when
/// every query sees every key.
fn mask(t: usize, start: usize, window: Option<usize>, device: &Device) -> Result<Option<Tensor>> {
    let n = start + t;
    let visible = |i: usize, j: usize| {
        let p = start + i;
        j <= p && window.is_none_or(|w| p - j < w)
    };
    if (0..t).all(|i| (0..n).all(|j| visible(i, j))) {
        return Ok(None);
    }
    let data: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..n).map(move |j| {
                if visible(i, j) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(data, (t, n), device)?))
}

/// A 1-D tensor as f32 on `device` when the file holds it, checked against the lengths
/// it may have.
fn dense(
    gguf: &mut GgufFile,
    name: &str,
    device: &Device,
    sizes: &[usize],
) -> Result<Option<Tensor>> {
    if !gguf.has_tensor(name) {
        return Ok(None);
    }
    let t = gguf.tensor(name, device)?.dequantize(device)?;
    match t.dims() {
        [len] if sizes.contains(len) => Ok(Some(t)),
        dims => Err(EngineError::InvalidModel(format!(
            "{name} has shape {dims:?}, expected one of {sizes:?} values"
        ))),
    }
}

/// Block `i`'s weights, checked against the description's shapes.
fn load_block(
    gguf: &mut GgufFile,
    c: &DecoderSpec,
    i: usize,
    device: &Device,
    loader: &WeightLoader,
) -> Result<Block> {
    let p = format!("blk.{i}");
    let moe = gguf.has_tensor(&format!("{p}.ffn_gate_inp.weight"));
    let (q_width, kv_width) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
    let fused_qkv = gguf.has_tensor(&format!("{p}.attn_qkv.weight"));
    // phi3's `ffn_up` holds the gate's rows, then the up projection's.
    let fused_up = !gguf.has_tensor(&format!("{p}.ffn_gate.weight"));
    let mut linear = |name: &str, cols: usize, rows: Option<usize>| -> Result<Linear> {
        let (w, r, k) = loader.named(gguf, &format!("{p}.{name}.weight"))?;
        if k != cols || rows.is_some_and(|rows| rows != r) {
            return Err(EngineError::InvalidModel(format!(
                "{p}.{name} is {r}x{k}, expected {}x{cols}",
                rows.map_or("?".to_string(), |r| r.to_string())
            )));
        }
        Ok(Linear {
            w,
            rows: r,
            bias: dense(gguf, &format!("{p}.{name}.bias"), device, &[r])?,
        })
    };
    let qkv = if fused_qkv {
        Projections::Fused {
            linear: linear("attn_qkv", c.n_embd, Some(q_width + 2 * kv_width))?,
            parts: vec![q_width, kv_width, kv_width],
        }
    } else {
        Projections::Separate(vec![
            linear("attn_q", c.n_embd, Some(q_width))?,
            linear("attn_k", c.n_embd, Some(kv_width))?,
            linear("attn_v", c.n_embd, Some(kv_width))?,
        ])
    };
    let wo = linear("attn_output", q_width, Some(c.n_embd))?;
    let dense_ffn = if moe {
        None
    } else {
        let (gate_up, ffn) = if fused_up {
            let l = linear("ffn_up", c.n_embd, None)?;
            let ffn = l.rows / 2;
            if ffn == 0 || l.rows != 2 * ffn {
                return Err(EngineError::InvalidModel(format!(
                    "{p}.ffn_up has {} rows; a fused gate and up needs an even number",
                    l.rows
                )));
            }
            let parts = vec![ffn, ffn];
            (Projections::Fused { linear: l, parts }, ffn)
        } else {
            let gate = linear("ffn_gate", c.n_embd, None)?;
            let ffn = gate.rows;
            let up = linear("ffn_up", c.n_embd, Some(ffn))?;
            (Projections::Separate(vec![gate, up]), ffn)
        };
        let down = linear("ffn_down", ffn, Some(c.n_embd))?;
        Some(Ffn::Dense { gate_up, down })
    };
    let ffn = match dense_ffn {
        Some(ffn) => ffn,
        None => Ffn::Experts(load_experts(gguf, &p, c, device, loader)?),
    };
    let sinks_name = format!("{p}.attn_sinks.weight");
    let sinks = if gguf.has_tensor(&sinks_name) {
        let s = vector(gguf, &sinks_name)?;
        if s.len() != c.n_head {
            return Err(EngineError::InvalidModel(format!(
                "{sinks_name} has {} values for {} heads",
                s.len(),
                c.n_head
            )));
        }
        Some(s)
    } else {
        None
    };
    let mut norm =
        |name: &str, sizes: &[usize]| dense(gguf, &format!("{p}.{name}.weight"), device, sizes);
    // gpt-oss names its pre-FFN norm `post_attention_norm`: then there is no post-norm.
    let post_attn_norm = match c.ffn_norm_tensor {
        "post_attention_norm" => None,
        _ => norm("post_attention_norm", &[c.n_embd])?,
    };
    Ok(Block {
        attn_norm: norm("attn_norm", &[c.n_embd])?,
        q_norm: norm("attn_q_norm", &[c.head_dim, q_width])?,
        k_norm: norm("attn_k_norm", &[c.head_dim, kv_width])?,
        sinks,
        post_attn_norm,
        ffn_norm: norm(c.ffn_norm_tensor, &[c.n_embd])?,
        post_ffn_norm: norm("post_ffw_norm", &[c.n_embd])?,
        qkv,
        wo,
        ffn,
    })
}

/// Block `p`'s router and experts; each expert's matrices are cut from the file's 3-D
/// `[experts, rows, cols]` tensors.
fn load_experts(
    gguf: &mut GgufFile,
    p: &str,
    c: &DecoderSpec,
    device: &Device,
    loader: &WeightLoader,
) -> Result<Experts> {
    let (n_expert, n_used) = (c.n_expert, c.n_expert_used);
    if n_used == 0 || n_used > n_expert {
        return Err(EngineError::InvalidModel(format!(
            "{n_used} experts used per token out of {n_expert}"
        )));
    }
    let name = format!("{p}.ffn_gate_inp");
    let (router, router_rows, router_cols) = loader.named(gguf, &format!("{name}.weight"))?;
    if (router_rows, router_cols) != (n_expert, c.n_embd) {
        return Err(EngineError::InvalidModel(format!(
            "{name} does not match {n_expert} experts of {} dims",
            c.n_embd
        )));
    }
    let router = Linear {
        w: router,
        rows: n_expert,
        bias: dense(gguf, &format!("{name}.bias"), device, &[n_expert])?,
    };
    let mut per_kind = Vec::with_capacity(3);
    // The experts' hidden size, from the gate projections.
    let mut n_ff = 0;
    for kind in ["gate", "up", "down"] {
        let name = format!("{p}.ffn_{kind}_exps");
        let raw = gguf.raw_tensor(&format!("{name}.weight"))?;
        let [n, r, k] = raw.dims[..] else {
            return Err(EngineError::InvalidModel(format!(
                "{name} should be 3-D, has shape {:?}",
                raw.dims
            )));
        };
        let block = raw.dtype.block_size();
        if kind == "gate" {
            n_ff = r;
        }
        let (rows, cols) = match kind {
            "down" => (c.n_embd, n_ff),
            _ => (n_ff, c.n_embd),
        };
        if n != n_expert || r != rows || k != cols || r == 0 || k % block != 0 {
            return Err(EngineError::InvalidModel(format!(
                "{name} is {n}x{r}x{k}, which does not match {n_expert} experts of {} dims",
                c.n_embd
            )));
        }
        // Expert biases (gpt-oss): one row per expert.
        let biases = match gguf.has_tensor(&format!("{name}.bias")) {
            true => {
                let b = floats(gguf, &format!("{name}.bias"), 2)?;
                if b.len() != n * r {
                    return Err(EngineError::InvalidModel(format!(
                        "{name}.bias does not match {n} experts of {r} outputs"
                    )));
                }
                Some(b)
            }
            false => None,
        };
        let bytes = r * k / block * raw.dtype.type_size();
        let mut experts = Vec::with_capacity(n);
        for e in 0..n {
            let data = raw.data.get(e * bytes..(e + 1) * bytes).ok_or_else(|| {
                EngineError::InvalidModel(format!("{name} is shorter than its shape"))
            })?;
            let w = loader.expert(&format!("{name}.weight"), raw.dtype, data, (r, k))?;
            let bias = match &biases {
                Some(b) => Some(Tensor::from_slice(&b[e * r..(e + 1) * r], r, device)?),
                None => None,
            };
            experts.push(Linear { w, rows: r, bias });
        }
        per_kind.push(experts);
    }
    let (downs, ups, gates) = match (per_kind.pop(), per_kind.pop(), per_kind.pop()) {
        (Some(d), Some(u), Some(g)) => (d, u, g),
        _ => return Err(EngineError::Internal("three expert kinds expected".into())),
    };
    Ok(Experts {
        router,
        experts: gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .map(|((g, u), d)| [g, u, d])
            .collect(),
        n_used,
        gating: c.expert_gating,
    })
}

/// One expert's `r x k` matrix from its blocks. candle has no MXFP4 kernels: those
/// experts are dequantized at load to f16, which holds every MXFP4 value of a normal
/// scale exactly.
fn expert_matrix(
    name: &str,
    ty: GgmlType,
    data: &[u8],
    (r, k): (usize, usize),
    device: &Device,
) -> Result<QTensor> {
    if let Some(dtype) = ty.candle() {
        return Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            data,
            vec![r, k],
            device,
        )?);
    }
    let kind = ty
        .kernel_kind()
        .ok_or_else(|| EngineError::UnsupportedTensorType {
            tensor: name.to_string(),
            kind: format!("{ty} (on the candle path)"),
        })?;
    let values = wick_kernels::reference::dequantize(kind, r, k, data)
        .map_err(|e| EngineError::InvalidModel(format!("{name}: {e}")))?;
    let t = Tensor::from_vec(values, (r, k), device)?;
    Ok(QTensor::quantize(&t, GgmlDType::F16)?)
}
