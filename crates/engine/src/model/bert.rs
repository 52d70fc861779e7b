//! BERT-class sentence encoders as GGUF files lay them out, on wick's own CPU kernels:
//! `bert` (all-MiniLM, bge, mxbai: learned positions, separate q/k/v with biases, GELU)
//! and `nomic-bert` (nomic-embed-text: fused qkv, rotary positions, SwiGLU). Both are
//! post-norm transformers with bidirectional attention; the result of a sequence is its
//! hidden states pooled as `<arch>.pooling_type` says (mean, first token, last token).
//!
//! One call embeds many sequences: all their rows go through each weight matrix
//! together; only attention is per sequence (each sequence attends to itself alone), so
//! nothing is padded and a sequence's vector does not depend on what runs beside it.

use wick_kernels::{QMatrix, ThreadPool};

use super::linear::{Linear, Projections, Run};
use super::tensors::{matrix, vector};
use crate::cpu::ops;
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

/// Rows (tokens of all sequences) of one forward pass; bigger batches run in parts so
/// activations stay bounded (a whole request of short inputs is still one pass).
pub const EMBED_BATCH_TOKENS: usize = 8192;

/// How a sequence's hidden states become one vector (`<arch>.pooling_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// 1: the average of every token's state (special tokens included, as llama.cpp).
    Mean,
    /// 2: the first token's state (`[CLS]`).
    Cls,
    /// 3: the last token's state.
    Last,
}

impl Pooling {
    /// llama.cpp's `llama_pooling_type` numbers; `None` for "none", "rank" and others.
    pub fn from_gguf(value: u32) -> Option<Self> {
        match value {
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }

    /// Pool the `t` rows of one sequence (`rows`, `d` values each) into `out`.
    pub fn pool(self, rows: &[f32], d: usize, out: &mut [f32]) {
        let t = rows.len() / d;
        match self {
            Pooling::Cls => out.copy_from_slice(&rows[..d]),
            Pooling::Last => out.copy_from_slice(&rows[(t - 1) * d..]),
            Pooling::Mean => {
                let mut sum = vec![0.0f64; d];
                for row in rows.chunks_exact(d) {
                    for (s, &v) in sum.iter_mut().zip(row) {
                        *s += v as f64;
                    }
                }
                for (o, s) in out.iter_mut().zip(sum) {
                    *o = (s / t as f64) as f32;
                }
            }
        }
    }
}

/// Scale `v` to unit length (Ollama's `normalize`: a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let sum: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
    let scale = (1.0 / sum.sqrt().max(1e-12)) as f32;
    v.iter_mut().for_each(|x| *x *= scale);
}

/// Shape facts of an encoder, from `<arch>.*` GGUF keys.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub context_length: usize,
    pub pooling: Pooling,
    /// Whether the encoder's own output is unit length (`<arch>.normalize_embeddings`;
    /// Ollama's default: true for `bert`, false for `nomic-bert`).
    pub normalize: bool,
    /// Rotary base for `nomic-bert` (NEOX layout); `None`: learned positions.
    pub rope_base: Option<f32>,
}

impl EncoderConfig {
    pub fn from_gguf(gguf: &GgufFile, arch: &str) -> Result<Self> {
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = gguf.get_u32(&key("embedding_length"))? as usize;
        let n_head = gguf.get_u32(&key("attention.head_count"))? as usize;
        if n_head == 0 || !n_embd.is_multiple_of(n_head) {
            return Err(EngineError::InvalidModel(format!(
                "{n_embd} embedding values do not split into {n_head} heads"
            )));
        }
        let pooling_value = gguf.get_u32(&key("pooling_type"))?;
        let pooling = Pooling::from_gguf(pooling_value).ok_or_else(|| {
            EngineError::InvalidModel(format!(
                "pooling type {pooling_value} is not supported (mean, cls and last are)"
            ))
        })?;
        let nomic = arch == "nomic-bert";
        let normalize = gguf
            .get(&key("normalize_embeddings"))
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(!nomic);
        let head_dim = n_embd / n_head;
        if nomic && !head_dim.is_multiple_of(2) {
            return Err(EngineError::InvalidModel(
                "rotary positions need an even head size".into(),
            ));
        }
        Ok(Self {
            n_layer: super::decoder_spec::block_count(gguf, arch)?,
            n_embd,
            n_head,
            head_dim,
            eps: gguf
                .get_f32(&key("attention.layer_norm_epsilon"))
                .unwrap_or(1e-12),
            context_length: gguf.get_u32(&key("context_length")).unwrap_or(512) as usize,
            pooling,
            normalize,
            rope_base: nomic.then(|| gguf.get_f32(&key("rope.freq_base")).unwrap_or(1000.0)),
        })
    }
}

/// A LayerNorm's weight and bias.
struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Norm {
    fn load(gguf: &mut GgufFile, name: &str, d: usize) -> Result<Self> {
        let norm = Norm {
            w: vector(gguf, &format!("{name}.weight"))?,
            b: vector(gguf, &format!("{name}.bias"))?,
        };
        if norm.w.len() != d || norm.b.len() != d {
            return Err(EngineError::InvalidModel(format!(
                "{name} has the wrong size"
            )));
        }
        Ok(norm)
    }

    fn apply(&self, x: &mut [f32], eps: f32) {
        ops::layer_norm(x, &self.w, &self.b, eps);
    }
}

enum Ffn {
    /// `down(gelu(up(x)))` (BERT).
    Gelu { up: Linear, down: Linear },
    /// `down(silu(gate(x)) * up(x))` (nomic-bert).
    SwiGlu { gate_up: Projections, down: Linear },
}

struct Block {
    qkv: Projections,
    wo: Linear,
    attn_norm: Norm,
    ffn: Ffn,
    out_norm: Norm,
}

/// A loaded encoder: weights only, no per-sequence state.
pub struct EncoderModel {
    pub config: EncoderConfig,
    token_embd: QMatrix,
    position_embd: Option<QMatrix>,
    token_types: Option<QMatrix>,
    embd_norm: Norm,
    blocks: Vec<Block>,
    pool: ThreadPool,
    weights_bytes: usize,
}

fn optional_linear(gguf: &mut GgufFile, name: &str) -> Result<Linear> {
    let bias = format!("{name}.bias");
    Ok(Linear {
        w: matrix(gguf, &format!("{name}.weight"))?,
        bias: if gguf.has_tensor(&bias) {
            Some(vector(gguf, &bias)?)
        } else {
            None
        },
    })
}

fn check_shape(name: &str, l: &Linear, rows: usize, cols: usize) -> Result<()> {
    if l.w.rows() != rows || l.w.cols() != cols || l.bias.as_ref().is_some_and(|b| b.len() != rows)
    {
        return Err(EngineError::InvalidModel(format!(
            "{name} is {}x{}, expected {rows}x{cols}",
            l.w.rows(),
            l.w.cols()
        )));
    }
    Ok(())
}

impl EncoderModel {
    pub fn from_gguf(gguf: &mut GgufFile, arch: &str, threads: usize) -> Result<Self> {
        let config = EncoderConfig::from_gguf(gguf, arch)?;
        let d = config.n_embd;
        let token_embd = matrix(gguf, "token_embd.weight")?;
        let position_embd = match config.rope_base {
            Some(_) => None,
            None => Some(matrix(gguf, "position_embd.weight")?),
        };
        let token_types = if gguf.has_tensor("token_types.weight") {
            Some(matrix(gguf, "token_types.weight")?)
        } else {
            None
        };
        if token_embd.cols() != d
            || position_embd.as_ref().is_some_and(|p| p.cols() != d)
            || token_types.as_ref().is_some_and(|t| t.cols() != d)
        {
            return Err(EngineError::InvalidModel(
                "embedding tables do not match the embedding length".into(),
            ));
        }
        let embd_norm = Norm::load(gguf, "token_embd_norm", d)?;
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("blk.{i}");
            let qkv = if gguf.has_tensor(&format!("{p}.attn_qkv.weight")) {
                let fused = optional_linear(gguf, &format!("{p}.attn_qkv"))?;
                check_shape(&format!("{p}.attn_qkv"), &fused, 3 * d, d)?;
                Projections::Stacked {
                    linear: fused,
                    parts: vec![d, d, d],
                    scratch: std::sync::Mutex::new(Vec::new()),
                }
            } else {
                let mut parts = Vec::with_capacity(3);
                for name in ["attn_q", "attn_k", "attn_v"] {
                    let l = optional_linear(gguf, &format!("{p}.{name}"))?;
                    check_shape(&format!("{p}.{name}"), &l, d, d)?;
                    parts.push(l);
                }
                Projections::new(parts)?
            };
            let wo = optional_linear(gguf, &format!("{p}.attn_output"))?;
            check_shape(&format!("{p}.attn_output"), &wo, d, d)?;
            let up = optional_linear(gguf, &format!("{p}.ffn_up"))?;
            let n_ff = up.w.rows();
            check_shape(&format!("{p}.ffn_up"), &up, n_ff, d)?;
            let down = optional_linear(gguf, &format!("{p}.ffn_down"))?;
            check_shape(&format!("{p}.ffn_down"), &down, d, n_ff)?;
            let ffn = if gguf.has_tensor(&format!("{p}.ffn_gate.weight")) {
                let gate = optional_linear(gguf, &format!("{p}.ffn_gate"))?;
                check_shape(&format!("{p}.ffn_gate"), &gate, n_ff, d)?;
                Ffn::SwiGlu {
                    gate_up: Projections::new(vec![gate, up])?,
                    down,
                }
            } else {
                Ffn::Gelu { up, down }
            };
            blocks.push(Block {
                qkv,
                wo,
                attn_norm: Norm::load(gguf, &format!("{p}.attn_output_norm"), d)?,
                ffn,
                out_norm: Norm::load(gguf, &format!("{p}.layer_output_norm"), d)?,
            });
        }
        let weights_bytes = token_embd.size_bytes()
            + position_embd.as_ref().map_or(0, QMatrix::size_bytes)
            + token_types.as_ref().map_or(0, QMatrix::size_bytes)
            + blocks
                .iter()
                .map(|b| {
                    b.qkv.size_bytes()
                        + b.wo.w.size_bytes()
                        + match &b.ffn {
                            Ffn::Gelu { up, down } => up.w.size_bytes() + down.w.size_bytes(),
                            Ffn::SwiGlu { gate_up, down } => {
                                gate_up.size_bytes() + down.w.size_bytes()
                            }
                        }
                })
                .sum::<usize>();
        Ok(Self {
            config,
            token_embd,
            position_embd,
            token_types,
            embd_norm,
            blocks,
            pool: ThreadPool::new(threads.max(1)),
            weights_bytes,
        })
    }

    pub fn weights_bytes(&self) -> usize {
        self.weights_bytes
    }

    pub fn vocab(&self) -> usize {
        self.token_embd.rows()
    }

    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    pub fn max_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Longest sequence: the trained context, and the learned position table's rows.
    pub fn max_positions(&self) -> usize {
        let table = self
            .position_embd
            .as_ref()
            .map_or(usize::MAX, QMatrix::rows);
        self.config.context_length.min(table)
    }

    /// One pooled vector per input sequence (unit length when the model normalizes its
    /// output), in as few passes as [`EMBED_BATCH_TOKENS`] allows.
    pub fn embed(&self, inputs: &[&[u32]], threads: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            let mut end = start;
            let mut rows = 0;
            while end < inputs.len()
                && (end == start || rows + inputs[end].len() <= EMBED_BATCH_TOKENS)
            {
                rows += inputs[end].len();
                end += 1;
            }
            out.extend(self.embed_pass(&inputs[start..end], threads)?);
            start = end;
        }
        Ok(out)
    }

    fn check_input(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("empty input".into()));
        }
        if tokens.len() > self.max_positions() {
            return Err(EngineError::InvalidRequest(format!(
                "an input of {} tokens is longer than the model's {} positions",
                tokens.len(),
                self.max_positions()
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.vocab()) {
            return Err(EngineError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary ({} tokens)",
                self.vocab()
            )));
        }
        Ok(())
    }

    /// The input rows: token + position (learned) + token type 0, layer-normed.
    fn input_rows(&self, inputs: &[&[u32]], rows: usize) -> Result<Vec<f32>> {
        let d = self.config.n_embd;
        let mut x = vec![0.0f32; rows * d];
        let mut add = vec![0.0f32; d];
        let mut type0 = vec![0.0f32; d];
        if let Some(t) = &self.token_types {
            t.dequantize_row(0, &mut type0)
                .map_err(|e| EngineError::InvalidModel(format!("token types: {e}")))?;
        }
        let mut r = 0;
        for seq in inputs {
            for (pos, &tok) in seq.iter().enumerate() {
                let row = &mut x[r * d..(r + 1) * d];
                self.token_embd
                    .dequantize_row(tok as usize, row)
                    .map_err(|e| EngineError::Internal(format!("embedding: {e}")))?;
                if let Some(p) = &self.position_embd {
                    p.dequantize_row(pos, &mut add)
                        .map_err(|e| EngineError::Internal(format!("position: {e}")))?;
                    ops::add_in_place(row, &add);
                }
                ops::add_in_place(row, &type0);
                r += 1;
            }
        }
        self.embd_norm.apply(&mut x, self.config.eps);
        Ok(x)
    }

    fn embed_pass(&self, inputs: &[&[u32]], threads: usize) -> Result<Vec<Vec<f32>>> {
        for tokens in inputs {
            self.check_input(tokens)?;
        }
        let c = &self.config;
        let (d, hd) = (c.n_embd, c.head_dim);
        let run = Run {
            pool: &self.pool,
            threads: threads.clamp(1, self.pool.n_threads()),
        };
        let lens: Vec<usize> = inputs.iter().map(|s| s.len()).collect();
        let rows: usize = lens.iter().sum();
        let mut x = self.input_rows(inputs, rows)?;

        // Rotary angles per row (nomic-bert): positions restart at 0 in every sequence.
        let half = hd / 2;
        let rope = c.rope_base.map(|base| {
            let mut cos = vec![0.0f32; rows * half];
            let mut sin = vec![0.0f32; rows * half];
            let mut r = 0;
            for &t in &lens {
                for pos in 0..t {
                    let span = r * half..(r + 1) * half;
                    ops::rope_angles(pos, hd, base, &mut cos[span.clone()], &mut sin[span]);
                    r += 1;
                }
            }
            (cos, sin)
        });

        let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
        let (mut att, mut o, mut g, mut u) = (vec![0.0f32; rows * d], vec![], vec![], vec![]);
        for block in &self.blocks {
            block
                .qkv
                .forward(&run, &x, rows, &mut [&mut q, &mut k, &mut v])?;
            if let Some((cos, sin)) = &rope {
                for r in 0..rows {
                    let (cr, sr) = (
                        &cos[r * half..(r + 1) * half],
                        &sin[r * half..(r + 1) * half],
                    );
                    ops::rope_row(&mut q[r * d..(r + 1) * d], hd, cr, sr, true);
                    ops::rope_row(&mut k[r * d..(r + 1) * d], hd, cr, sr, true);
                }
            }
            attend_within_sequences(&run, &lens, c.n_head, hd, &q, &k, &v, &mut att);
            block.wo.forward(&run, &att, rows, &mut o)?;
            ops::add_in_place(&mut x, &o);
            block.attn_norm.apply(&mut x, c.eps);
            match &block.ffn {
                Ffn::Gelu { up, down } => {
                    up.forward(&run, &x, rows, &mut u)?;
                    ops::gelu(&mut u);
                    down.forward(&run, &u, rows, &mut o)?;
                }
                Ffn::SwiGlu { gate_up, down } => {
                    gate_up.forward(&run, &x, rows, &mut [&mut g, &mut u])?;
                    ops::silu_mul(&mut g, &u, rows);
                    down.forward(&run, &g, rows, &mut o)?;
                }
            }
            ops::add_in_place(&mut x, &o);
            block.out_norm.apply(&mut x, c.eps);
        }

        let mut out = Vec::with_capacity(inputs.len());
        let mut r0 = 0;
        for &t in &lens {
            let mut vec = vec![0.0f32; d];
            c.pooling.pool(&x[r0 * d..(r0 + t) * d], d, &mut vec);
            if c.normalize {
                l2_normalize(&mut vec);
            }
            out.push(vec);
            r0 += t;
        }
        Ok(out)
    }
}

/// Bidirectional attention of every sequence with itself: `q`, `k`, `v` and `out` are
/// `rows x (n_head * head_dim)`, the sequences' rows one after another (`lens`). One
/// task per (sequence, head) on the pool.
#[allow(clippy::too_many_arguments)]
fn attend_within_sequences(
    run: &Run,
    lens: &[usize],
    n_head: usize,
    hd: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    let width = n_head * hd;
    let mut starts = Vec::with_capacity(lens.len());
    let mut r = 0;
    for &t in lens {
        starts.push(r);
        r += t;
    }
    let tasks: Vec<(usize, usize)> = (0..lens.len())
        .flat_map(|s| (0..n_head).map(move |h| (s, h)))
        .collect();
    let results: Vec<std::sync::Mutex<Vec<f32>>> = tasks
        .iter()
        .map(|_| std::sync::Mutex::new(Vec::new()))
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    run.pool.run(run.threads, tasks.len(), &|task| {
        let (s, h) = tasks[task];
        let (r0, t) = (starts[s], lens[s]);
        let col = h * hd;
        let mut res = vec![0.0f32; t * hd];
        let mut scores = vec![0.0f32; t];
        for i in 0..t {
            let qi = &q[(r0 + i) * width + col..][..hd];
            let mut max = f32::NEG_INFINITY;
            for (j, sc) in scores.iter_mut().enumerate() {
                let kj = &k[(r0 + j) * width + col..][..hd];
                *sc = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                max = max.max(*sc);
            }
            let mut sum = 0.0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            let oi = &mut res[i * hd..(i + 1) * hd];
            for (j, &p) in scores.iter().enumerate() {
                let vj = &v[(r0 + j) * width + col..][..hd];
                let p = p / sum;
                for (o, &vv) in oi.iter_mut().zip(vj) {
                    *o += p * vv;
                }
            }
        }
        *results[task].lock().unwrap_or_else(|p| p.into_inner()) = res;
    });
    for (&(s, h), res) in tasks.iter().zip(results) {
        let res = res.into_inner().unwrap_or_else(|p| p.into_inner());
        let (r0, t) = (starts[s], lens[s]);
        for i in 0..t {
            out[(r0 + i) * width + h * hd..][..hd].copy_from_slice(&res[i * hd..(i + 1) * hd]);
        }
    }
}

#[cfg(test)]
#[path = "bert_tests.rs"]
mod tests;
