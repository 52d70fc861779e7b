//! The mixture-of-experts FFN (`qwen3moe`, llama/mixtral files with `ffn_*_exps`,
//! `gpt-oss`) on wick's CPU kernels.
//!
//! A router picks, for each row, the `n_used` experts with the highest score; their
//! weights follow the family's [`ExpertGating`] (softmax probabilities renormalized
//! over the chosen, or a softmax over the chosen logits). Experts may carry biases
//! (gpt-oss: one per expert on the gate, up and down projections). In a
//! batched step the rows are grouped by expert, so each chosen expert's weights are read
//! once per step for all the rows that chose it. Each row's output is the sum, in the
//! order of its choices (most probable first), of its experts' outputs times their
//! weights, as llama.cpp sums them; a row's result depends on that row alone.

use wick_kernels::QMatrix;

use super::decoder_spec::{Activation, ExpertGating};
use super::linear::{Linear, Projections, Run};
use super::tensors::{floats, kernel_kind, matrix, vector};
use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, RawTensor};

/// One expert: its gate and up projections and its down projection.
struct Expert {
    gate_up: Projections,
    down: Linear,
}

/// The experts of one block and their router.
pub(crate) struct Experts {
    router: Linear,
    experts: Vec<Expert>,
    n_used: usize,
}

/// Whether block `p` (`blk.N`) holds experts instead of a dense FFN.
pub(crate) fn has_experts(gguf: &GgufFile, p: &str) -> bool {
    gguf.has_tensor(&format!("{p}.ffn_gate_inp.weight"))
}

/// The matrices of a 3-D `[experts, rows, cols]` tensor, one per expert, reading the
/// file's bytes in place.
fn expert_matrices(gguf: &mut GgufFile, name: &str) -> Result<Vec<QMatrix>> {
    let RawTensor { dtype, dims, data } = gguf.raw_tensor(name)?;
    let kind = kernel_kind(name, dtype)?;
    let [n, rows, cols] = dims[..] else {
        return Err(EngineError::InvalidModel(format!(
            "tensor '{name}' should be 3-D, has shape {dims:?}"
        )));
    };
    if cols % kind.block_size() != 0 {
        return Err(EngineError::InvalidModel(format!(
            "tensor '{name}': {cols} columns are not whole {kind:?} blocks"
        )));
    }
    let bytes = rows * kind.row_bytes(cols);
    (0..n)
        .map(|e| {
            let part = data.slice(e * bytes..(e + 1) * bytes).ok_or_else(|| {
                EngineError::InvalidModel(format!("tensor '{name}' is shorter than its shape"))
            })?;
            QMatrix::new(kind, rows, cols, part)
                .map_err(|e| EngineError::InvalidModel(format!("tensor '{name}': {e}")))
        })
        .collect()
}

impl Experts {
    /// Block `p`'s router and experts; `n_used` experts run per row.
    pub(crate) fn load(
        gguf: &mut GgufFile,
        p: &str,
        n_embd: usize,
        n_expert: usize,
        n_used: usize,
    ) -> Result<Self> {
        let router = Linear {
            w: matrix(gguf, &format!("{p}.ffn_gate_inp.weight"))?,
            bias: match format!("{p}.ffn_gate_inp.bias") {
                b if gguf.has_tensor(&b) => Some(vector(gguf, &b)?),
                _ => None,
            },
        };
        if router.w.rows() != n_expert || router.w.cols() != n_embd {
            return Err(EngineError::InvalidModel(format!(
                "{p}.ffn_gate_inp is {}x{}, expected {n_expert}x{n_embd}",
                router.w.rows(),
                router.w.cols()
            )));
        }
        let gates = expert_matrices(gguf, &format!("{p}.ffn_gate_exps.weight"))?;
        let ups = expert_matrices(gguf, &format!("{p}.ffn_up_exps.weight"))?;
        let downs = expert_matrices(gguf, &format!("{p}.ffn_down_exps.weight"))?;
        let n_ff = gates.first().map_or(0, QMatrix::rows);
        let shapes_ok = gates.len() == n_expert
            && ups.len() == n_expert
            && downs.len() == n_expert
            && n_ff > 0
            && gates.iter().zip(&ups).zip(&downs).all(|((g, u), d)| {
                g.rows() == n_ff
                    && g.cols() == n_embd
                    && u.rows() == n_ff
                    && u.cols() == n_embd
                    && d.rows() == n_embd
                    && d.cols() == n_ff
            });
        if !shapes_ok {
            return Err(EngineError::InvalidModel(format!(
                "{p}: the expert tensors do not match {n_expert} experts of {n_embd} dims"
            )));
        }
        if n_used == 0 || n_used > n_expert {
            return Err(EngineError::InvalidModel(format!(
                "{n_used} experts used per token out of {n_expert}"
            )));
        }
        let mut bias = |name: &str, width: usize| -> Result<Vec<Option<Vec<f32>>>> {
            let full = format!("{p}.{name}.bias");
            if !gguf.has_tensor(&full) {
                return Ok(vec![None; n_expert]);
            }
            let b = floats(gguf, &full, 2)?;
            if b.len() != n_expert * width {
                return Err(EngineError::InvalidModel(format!(
                    "{full} has {} values, expected {n_expert}x{width}",
                    b.len()
                )));
            }
            Ok(b.chunks_exact(width).map(|c| Some(c.to_vec())).collect())
        };
        let (gate_b, up_b, down_b) = (
            bias("ffn_gate_exps", n_ff)?,
            bias("ffn_up_exps", n_ff)?,
            bias("ffn_down_exps", n_embd)?,
        );
        let experts = gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .zip(gate_b.into_iter().zip(up_b).zip(down_b))
            .map(|(((g, u), d), ((gb, ub), db))| Expert {
                // Kept apart: stacking would copy the weights out of the mapped file.
                gate_up: Projections::Separate(vec![
                    Linear { w: g, bias: gb },
                    Linear { w: u, bias: ub },
                ]),
                down: Linear { w: d, bias: db },
            })
            .collect();
        Ok(Self {
            router,
            experts,
            n_used,
        })
    }

    pub(crate) fn size_bytes(&self) -> usize {
        self.router.w.size_bytes()
            + self
                .experts
                .iter()
                .map(|e| e.gate_up.size_bytes() + e.down.w.size_bytes())
                .sum::<usize>()
    }

    /// The FFN of `rows` rows of `x` (each `n_embd` wide) into `out`.
    pub(crate) fn forward(
        &self,
        run: &Run,
        x: &[f32],
        rows: usize,
        activation: Activation,
        gating: ExpertGating,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let n_expert = self.experts.len();
        let d = x.len() / rows.max(1);
        let k = self.n_used;
        let mut logits = Vec::new();
        self.router.forward(run, x, rows, &mut logits)?;
        // Per row, its k choices: (expert, weight), most probable first.
        let mut chosen = Vec::with_capacity(rows * k);
        for row in logits.chunks_exact(n_expert) {
            gating.pick(row, k, &mut chosen);
        }
        // Each expert runs once, on all the rows that chose it.
        let mut slots = vec![0.0f32; rows * k * d];
        let (mut xe, mut g, mut u, mut o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (e, expert) in self.experts.iter().enumerate() {
            let members: Vec<usize> = (0..rows * k).filter(|&s| chosen[s].0 == e).collect();
            if members.is_empty() {
                continue;
            }
            xe.clear();
            for &s in &members {
                let r = s / k;
                xe.extend_from_slice(&x[r * d..(r + 1) * d]);
            }
            let m = members.len();
            expert.gate_up.forward(run, &xe, m, &mut [&mut g, &mut u])?;
            activation.apply(&mut g, &u, m);
            expert.down.forward(run, &g, m, &mut o)?;
            for (i, &s) in members.iter().enumerate() {
                let w = chosen[s].1;
                for (dst, &v) in slots[s * d..(s + 1) * d].iter_mut().zip(&o[i * d..]) {
                    *dst = v * w;
                }
            }
        }
        out.clear();
        out.resize(rows * d, 0.0);
        for (r, dst) in out.chunks_exact_mut(d).enumerate() {
            dst.copy_from_slice(&slots[r * k * d..(r * k + 1) * d]);
            for j in 1..k {
                let s = (r * k + j) * d;
                for (a, &b) in dst.iter_mut().zip(&slots[s..s + d]) {
                    *a += b;
                }
            }
        }
        Ok(())
    }
}
