//! The decoder-only transformer every generating family runs (`llama`, `qwen2`,
//! `qwen3`, `gemma2`, `gemma3`, `olmo2`, `granite`), on wick's own CPU kernels. What
//! differs between the families is data: the [`DecoderSpec`] read from the GGUF's keys,
//! and the optional tensors each block holds (biases, q/k norms, pre- and post-norms).
//!
//! One call runs a whole batch: the rows of every sequence in it (a prefill chunk or one
//! decoded token each) go through each weight matrix together, so a weight is read once
//! per step however many sequences run; only attention is per sequence, against that
//! sequence's own f16 [`CpuKvCache`]. Each row's result depends on that row alone, so a
//! sequence computes the same logits whatever runs beside it.

use wick_kernels::{QMatrix, ThreadPool};

use super::decoder_spec::DecoderSpec;
use super::linear::{Linear, Projections, Run};
use super::moe::{self, Experts};
use super::tensors::{matrix, vector};
use crate::cpu::attention::{attend, AttnDims, AttnJob};
use crate::cpu::ops;
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::CpuKvCache;

/// One sequence's part of a batch.
pub struct CpuBatchInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut CpuKvCache,
    /// Whether the logits of the last token are wanted (false for a middle prefill chunk).
    pub logits: bool,
}

/// What a forward pass ends with for the rows that want an output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    Logits,
    Hidden,
}

/// An RMS norm over rows of its weight's length: a whole row, or each head of it.
type Norm = Vec<f32>;

struct Block {
    /// Before attention (absent in olmo2, which normalizes after).
    attn_norm: Option<Norm>,
    /// The query, key and value projections (in that order), stacked when they can be.
    qkv: Projections,
    /// On the queries and keys before rotation: per head (qwen3, gemma) or over the
    /// whole projection (olmo2).
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    wo: Linear,
    /// On the attention output before the residual add (gemma2/3, olmo2).
    post_attn_norm: Option<Norm>,
    ffn_norm: Option<Norm>,
    ffn: Ffn,
    post_ffn_norm: Option<Norm>,
    /// Per head, the logit of an extra "sink" position every query also attends to
    /// (gpt-oss); it takes weight in the softmax and contributes no value.
    sinks: Option<Vec<f32>>,
}

/// A block's feed-forward network.
enum Ffn {
    /// The gate and up projections (stacked when they can be) and the down projection.
    Dense { gate_up: Projections, down: Linear },
    /// A mixture of experts.
    Experts(Experts),
}

impl Ffn {
    fn size_bytes(&self) -> usize {
        match self {
            Ffn::Dense { gate_up, down } => gate_up.size_bytes() + down.w.size_bytes(),
            Ffn::Experts(e) => e.size_bytes(),
        }
    }
}

/// A loaded decoder: weights only; all sequence state lives in the caches.
pub struct DecoderModel {
    pub spec: DecoderSpec,
    /// `<arch>.pooling_type` when the file declares one (llama.cpp's numbering); an
    /// embedding of a decoder without one is its last token's hidden state, as in
    /// Ollama.
    pub pooling_type: Option<u32>,
    embed: QMatrix,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    /// `None` when the output projection is tied to the token embeddings.
    output: Option<QMatrix>,
    /// Per-frequency rope divisors: llama 3's `rope_freqs`, or LongRoPE's pair.
    rope_factors: RopeFactors,
    vocab: usize,
    pool: ThreadPool,
    weights_bytes: usize,
}

/// Per-frequency divisors of the rotary angles a file may carry.
pub(crate) enum RopeFactors {
    None,
    /// llama 3's `rope_freqs`, for every sequence.
    Fixed(Vec<f32>),
    /// LongRoPE (phi3): `long` for a sequence allowed more positions than the
    /// pre-training context, `short` otherwise.
    LongShort {
        long: Vec<f32>,
        short: Vec<f32>,
    },
}

impl RopeFactors {
    /// Read them from the file, each checked to hold `half` values.
    pub(crate) fn from_gguf(
        has: &dyn Fn(&str) -> bool,
        read: &mut dyn FnMut(&str) -> Result<Vec<f32>>,
        half: usize,
    ) -> Result<Self> {
        let mut checked = |name: &str| -> Result<Vec<f32>> {
            let f = read(name)?;
            if f.len() != half {
                return Err(EngineError::InvalidModel(format!(
                    "{name} has {} values, expected {half}",
                    f.len()
                )));
            }
            Ok(f)
        };
        let (long, short) = ("rope_factors_long.weight", "rope_factors_short.weight");
        Ok(if has(long) || has(short) {
            if !(has(long) && has(short)) {
                return Err(EngineError::InvalidModel(
                    "LongRoPE needs both rope_factors_long and rope_factors_short".into(),
                ));
            }
            RopeFactors::LongShort {
                long: checked(long)?,
                short: checked(short)?,
            }
        } else if has("rope_freqs.weight") {
            RopeFactors::Fixed(checked("rope_freqs.weight")?)
        } else {
            RopeFactors::None
        })
    }

    /// The divisors of a sequence whose context holds `capacity` positions.
    pub(crate) fn for_context(&self, capacity: usize, original: Option<usize>) -> Option<&[f32]> {
        match self {
            RopeFactors::None => None,
            RopeFactors::Fixed(f) => Some(f),
            RopeFactors::LongShort { long, short } => {
                Some(if original.is_some_and(|o| capacity > o) {
                    long
                } else {
                    short
                })
            }
        }
    }
}

/// Rotary tables of one batch: per row, `dims / 2` cosines and sines.
pub(crate) struct RopeTable {
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
    half: usize,
}

impl RopeTable {
    /// Angles of each row at its position, with its sequence's factors, the cosines and
    /// sines scaled by `attn_factor` as ggml does. The candle path uses the same table.
    pub(crate) fn new(
        positions: &[usize],
        factors: &[Option<&[f32]>],
        dims: usize,
        base: f32,
        scale: f32,
        attn_factor: f32,
        yarn: Option<&ops::Yarn>,
    ) -> Self {
        let half = dims / 2;
        let mut cos = vec![0.0f32; positions.len() * half];
        let mut sin = vec![0.0f32; positions.len() * half];
        for (r, (&p, f)) in positions.iter().zip(factors).enumerate() {
            let span = r * half..(r + 1) * half;
            ops::rope_angles_yarn(
                p,
                dims,
                base,
                scale,
                *f,
                yarn.unwrap_or(&ops::Yarn::OFF),
                attn_factor,
                &mut cos[span.clone()],
                &mut sin[span],
            );
        }
        Self { cos, sin, half }
    }

    fn row(&self, r: usize) -> (&[f32], &[f32]) {
        let span = r * self.half..(r + 1) * self.half;
        (&self.cos[span.clone()], &self.sin[span])
    }
}

impl DecoderModel {
    pub fn from_gguf(gguf: &mut GgufFile, arch: &str, threads: usize) -> Result<Self> {
        let spec = DecoderSpec::from_gguf(gguf, arch)?;
        let embed = matrix(gguf, "token_embd.weight")?;
        let vocab = embed.rows();
        let output = if gguf.has_tensor("output.weight") {
            Some(matrix(gguf, "output.weight")?)
        } else {
            None
        };
        let output_norm = vector(gguf, "output_norm.weight")?;
        let pooling_type = gguf.get_u32(&format!("{arch}.pooling_type")).ok();
        let names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
        let rope_factors = RopeFactors::from_gguf(
            &|n| names.iter().any(|t| t == n),
            &mut |n| vector(gguf, n),
            spec.rope.dims / 2,
        )?;
        let mut blocks = Vec::with_capacity(spec.n_layer);
        for i in 0..spec.n_layer {
            blocks.push(load_block(gguf, &spec, i)?);
        }
        if embed.cols() != spec.n_embd
            || output_norm.len() != spec.n_embd
            || output
                .as_ref()
                .is_some_and(|o| o.cols() != spec.n_embd || o.rows() != vocab)
        {
            return Err(EngineError::InvalidModel(
                "embedding or output shapes do not match the model dimensions".into(),
            ));
        }
        let weights_bytes = embed.size_bytes()
            + output.as_ref().map_or(0, |o| o.size_bytes())
            + blocks
                .iter()
                .map(|b| b.qkv.size_bytes() + b.ffn.size_bytes() + b.wo.w.size_bytes())
                .sum::<usize>();
        Ok(Self {
            spec,
            embed,
            blocks,
            output_norm,
            output,
            rope_factors,
            vocab,
            pooling_type,
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
        self.forward_with_head(batch, threads, Head::Logits)
    }

    /// Like [`Self::forward_batch`], but what the inputs that ask for an output get is
    /// the last token's final-normed hidden state (what llama.cpp returns as an
    /// embedding when a decoder has no pooling), not logits.
    pub fn last_hidden_batch(
        &self,
        batch: &mut [CpuBatchInput],
        threads: usize,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        self.forward_with_head(batch, threads, Head::Hidden)
    }

    fn forward_with_head(
        &self,
        batch: &mut [CpuBatchInput],
        threads: usize,
        head: Head,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let c = &self.spec;
        let run = Run {
            pool: &self.pool,
            threads: threads.clamp(1, self.pool.n_threads()),
        };
        let mut starts = Vec::with_capacity(batch.len());
        for item in batch.iter_mut() {
            let pos = item.cache.len();
            let t = item.tokens.len();
            if t == 0 {
                return Err(EngineError::Internal("empty forward".into()));
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
        let mut factors = Vec::with_capacity(rows);
        for (item, &start) in batch.iter().zip(&starts) {
            let f = self
                .rope_factors
                .for_context(item.cache.capacity(), c.rope.original_context);
            for (i, &tok) in item.tokens.iter().enumerate() {
                let r = row_pos.len();
                self.embed
                    .dequantize_row(tok as usize, &mut x[r * d..(r + 1) * d])
                    .map_err(|e| EngineError::Internal(format!("embedding: {e}")))?;
                row_pos.push(start + i);
                factors.push(f);
            }
        }
        if let Some(s) = c.embed_scale {
            ops::scale(&mut x, s);
        }
        let global = RopeTable::new(
            &row_pos,
            &factors,
            c.rope.dims,
            c.rope.base,
            c.rope.freq_scale,
            c.rope.attn_factor,
            c.rope.yarn.as_ref(),
        );
        let local = c.swa_layers.iter().any(|&s| s).then(|| {
            RopeTable::new(
                &row_pos,
                &factors,
                c.rope.dims,
                c.rope.base_local,
                c.rope.freq_scale_local,
                c.rope.attn_factor,
                c.rope.yarn.as_ref(),
            )
        });

        let mut dims = AttnDims::causal(c.n_head, c.n_kv_head, hd);
        dims.softcap = c.attn_softcap;
        dims.scale = if c.scale_queries { 1.0 } else { c.attn_scale };
        let (mut h, mut q, mut k, mut v) = (vec![0.0; rows * d], vec![], vec![], vec![]);
        let (mut att, mut o, mut g, mut u) = (vec![0.0; rows * q_width], vec![], vec![], vec![]);
        for (layer, block) in self.blocks.iter().enumerate() {
            let sliding = c.swa_layers.get(layer).copied().unwrap_or(false);
            let rope = match (&local, sliding) {
                (Some(l), true) => l,
                _ => &global,
            };
            let input = match &block.attn_norm {
                Some(w) => {
                    ops::rms_norm(&x, w, c.rms_eps, &mut h);
                    &h
                }
                None => &x,
            };
            block
                .qkv
                .forward(&run, input, rows, &mut [&mut q, &mut k, &mut v])?;
            if let Some(w) = &block.q_norm {
                ops::rms_norm_in_place(&mut q, w, c.rms_eps);
            }
            if let Some(w) = &block.k_norm {
                ops::rms_norm_in_place(&mut k, w, c.rms_eps);
            }
            for r in 0..rows {
                let (cr, sr) = rope.row(r);
                let (qr, kr) = (
                    r * q_width..(r + 1) * q_width,
                    r * kv_width..(r + 1) * kv_width,
                );
                ops::rope_row_partial(&mut q[qr], hd, c.rope.dims, cr, sr, c.rope.neox);
                ops::rope_row_partial(&mut k[kr], hd, c.rope.dims, cr, sr, c.rope.neox);
            }
            if c.scale_queries {
                ops::scale(&mut q, c.attn_scale);
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
                        EngineError::Internal(format!("no cache for layer {layer}"))
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
                let layer_dims = AttnDims {
                    window: if sliding { c.sliding_window } else { None },
                    ..dims
                };
                attend(
                    run.pool,
                    run.threads,
                    layer_dims,
                    block.sinks.as_deref(),
                    &jobs,
                    &mut att,
                );
            }
            block.wo.forward(&run, &att, rows, &mut o)?;
            self.finish_branch(&mut x, &mut o, block.post_attn_norm.as_ref());

            let input = match &block.ffn_norm {
                Some(w) => {
                    ops::rms_norm(&x, w, c.rms_eps, &mut h);
                    &h
                }
                None => &x,
            };
            match &block.ffn {
                Ffn::Dense { gate_up, down } => {
                    gate_up.forward(&run, input, rows, &mut [&mut g, &mut u])?;
                    c.activation.apply(&mut g, &u, rows);
                    down.forward(&run, &g, rows, &mut o)?;
                }
                Ffn::Experts(experts) => {
                    experts.forward(&run, input, rows, c.activation, c.expert_gating, &mut o)?
                }
            }
            self.finish_branch(&mut x, &mut o, block.post_ffn_norm.as_ref());
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
        if head == Head::Hidden {
            let mut rows = normed.chunks_exact(d);
            for (slot, item) in results.iter_mut().zip(batch.iter()) {
                if item.logits {
                    *slot = rows.next().map(<[f32]>::to_vec);
                }
            }
            return Ok(results);
        }
        let out = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0.0f32; m * self.vocab];
        out.matmul(run.pool, run.threads, &normed, m, &mut logits)
            .map_err(|e| EngineError::Internal(format!("matmul: {e}")))?;
        if let Some(s) = c.logit_scale {
            ops::scale(&mut logits, 1.0 / s);
        }
        if let Some(cap) = c.final_softcap {
            ops::softcap(&mut logits, cap);
        }
        let mut chunks = logits.chunks_exact(self.vocab);
        for (slot, item) in results.iter_mut().zip(batch.iter()) {
            if item.logits {
                *slot = chunks.next().map(|l| l.to_vec());
            }
        }
        Ok(results)
    }

    /// Add a branch's output to the residual stream: post-norm it and scale it first
    /// when the family says so.
    fn finish_branch(&self, x: &mut [f32], out: &mut [f32], post_norm: Option<&Norm>) {
        if let Some(w) = post_norm {
            ops::rms_norm_in_place(out, w, self.spec.rms_eps);
        }
        if let Some(s) = self.spec.residual_scale {
            ops::scale(out, s);
        }
        ops::add_in_place(x, out);
    }
}

/// `{p}.{name}` must be `rows x cols`.
fn check_shape(p: &str, name: &str, l: &Linear, rows: usize, cols: usize) -> Result<()> {
    if l.w.rows() != rows || l.w.cols() != cols || rows == 0 {
        return Err(EngineError::InvalidModel(format!(
            "{p}.{name} is {}x{}, expected {rows}x{cols}",
            l.w.rows(),
            l.w.cols()
        )));
    }
    Ok(())
}

/// Block `i`'s weights, checked against the description's shapes.
fn load_block(gguf: &mut GgufFile, c: &DecoderSpec, i: usize) -> Result<Block> {
    let p = format!("blk.{i}");
    let (q_width, kv_width) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
    let qkv = if gguf.has_tensor(&format!("{p}.attn_qkv.weight")) {
        let l = linear(gguf, &p, "attn_qkv")?;
        check_shape(&p, "attn_qkv", &l, q_width + 2 * kv_width, c.n_embd)?;
        Projections::fused(l, vec![q_width, kv_width, kv_width])
    } else {
        let wq = linear(gguf, &p, "attn_q")?;
        let wk = linear(gguf, &p, "attn_k")?;
        let wv = linear(gguf, &p, "attn_v")?;
        check_shape(&p, "attn_q", &wq, q_width, c.n_embd)?;
        check_shape(&p, "attn_k", &wk, kv_width, c.n_embd)?;
        check_shape(&p, "attn_v", &wv, kv_width, c.n_embd)?;
        Projections::new(vec![wq, wk, wv])?
    };
    let wo = linear(gguf, &p, "attn_output")?;
    check_shape(&p, "attn_output", &wo, c.n_embd, q_width)?;
    let ffn = if moe::has_experts(gguf, &p) {
        Ffn::Experts(Experts::load(
            gguf,
            &p,
            c.n_embd,
            c.n_expert,
            c.n_expert_used,
        )?)
    } else {
        dense_ffn(gguf, &p, c.n_embd)?
    };
    let mut norm = |name: &str, sizes: &[usize]| -> Result<Option<Norm>> {
        let full = format!("{p}.{name}.weight");
        if !gguf.has_tensor(&full) {
            return Ok(None);
        }
        let w = vector(gguf, &full)?;
        if !sizes.contains(&w.len()) {
            return Err(EngineError::InvalidModel(format!(
                "{full} has {} values, expected one of {sizes:?}",
                w.len()
            )));
        }
        Ok(Some(w))
    };
    let ffn_norm = norm(c.ffn_norm_tensor, &[c.n_embd])?;
    let post_attn_norm = match c.ffn_norm_tensor {
        "post_attention_norm" => None,
        _ => norm("post_attention_norm", &[c.n_embd])?,
    };
    let sinks = norm("attn_sinks", &[c.n_head])?;
    let block = Block {
        attn_norm: norm("attn_norm", &[c.n_embd])?,
        q_norm: norm("attn_q_norm", &[c.head_dim, q_width])?,
        k_norm: norm("attn_k_norm", &[c.head_dim, kv_width])?,
        post_attn_norm,
        ffn_norm,
        sinks,
        post_ffn_norm: norm("post_ffw_norm", &[c.n_embd])?,
        qkv,
        wo,
        ffn,
    };
    Ok(block)
}

/// `{p}.{name}.weight` and its bias, if the file has one.
fn linear(gguf: &mut GgufFile, p: &str, name: &str) -> Result<Linear> {
    let b = format!("{p}.{name}.bias");
    Ok(Linear {
        w: matrix(gguf, &format!("{p}.{name}.weight"))?,
        bias: if gguf.has_tensor(&b) {
            Some(vector(gguf, &b)?)
        } else {
            None
        },
    })
}

/// A dense FFN: gate, up and down, or (phi3) `ffn_up` holding the gate's rows and then
/// the up projection's.
fn dense_ffn(gguf: &mut GgufFile, p: &str, n_embd: usize) -> Result<Ffn> {
    let (gate_up, ffn) = if gguf.has_tensor(&format!("{p}.ffn_gate.weight")) {
        let (gate, up) = (linear(gguf, p, "ffn_gate")?, linear(gguf, p, "ffn_up")?);
        let ffn = gate.w.rows();
        check_shape(p, "ffn_gate", &gate, ffn, n_embd)?;
        check_shape(p, "ffn_up", &up, ffn, n_embd)?;
        (Projections::new(vec![gate, up])?, ffn)
    } else {
        let l = linear(gguf, p, "ffn_up")?;
        let ffn = l.w.rows() / 2;
        check_shape(p, "ffn_up", &l, 2 * ffn, n_embd)?;
        (Projections::fused(l, vec![ffn, ffn]), ffn)
    };
    let down = linear(gguf, p, "ffn_down")?;
    check_shape(p, "ffn_down", &down, n_embd, ffn)?;
    Ok(Ffn::Dense { gate_up, down })
}
