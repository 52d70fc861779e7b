//! Weight matrices of the CPU forward pass: a [`Linear`] (matrix and optional bias), and
//! [`Projections`], several linears that read the same input, stacked into one matrix
//! when they can be.
//!
//! Stacking puts the matrices' rows one after another (quantized rows are independent),
//! so a single kernel call computes them all: the input is quantized once and the pool
//! fans out once, over more rows, instead of once per matrix. On small models (SmolLM2's
//! 192-row key and value projections) those per-call costs are a large part of a decode
//! step. Every output value is still the dot product of its own weight row with the same
//! quantized input, so results are bit-identical to separate calls.

use wick_kernels::{QMatrix, ThreadPool};

use crate::cpu::ops;
use crate::error::{EngineError, Result};

/// The pool and thread count of one forward call.
pub(crate) struct Run<'a> {
    pub pool: &'a ThreadPool,
    pub threads: usize,
}

/// A weight matrix and its optional bias.
pub(crate) struct Linear {
    pub w: QMatrix,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn forward(&self, run: &Run, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<()> {
        out.resize(m * self.w.rows(), 0.0);
        self.w
            .matmul(run.pool, run.threads, x, m, out)
            .map_err(|e| EngineError::Internal(format!("matmul: {e}")))?;
        if let Some(b) = &self.bias {
            ops::add_bias(out, b);
        }
        Ok(())
    }
}

/// Batches of at most this many rows (decode steps) run a stacked matrix in one call;
/// larger ones (prompt chunks), where the per-call costs are small against the work, run
/// it part by part, which measured faster for them.
const STACKED_MAX_ROWS: usize = 16;

/// Linears over one input, computed together.
pub(crate) enum Projections {
    /// One matrix holding every part's rows; `parts` are the row counts, in order.
    Stacked {
        linear: Linear,
        parts: Vec<usize>,
        /// The stacked output, before it is split into the parts.
        scratch: std::sync::Mutex<Vec<f32>>,
    },
    /// Parts of different quantization kinds (their inputs quantize differently).
    Separate(Vec<Linear>),
}

impl Projections {
    /// Stack `parts` when they share a kind and an input width; keep them apart if not.
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Ok(Projections::Separate(parts));
        };
        let (kind, cols) = (first.w.kind(), first.w.cols());
        if parts
            .iter()
            .any(|p| p.w.kind() != kind || p.w.cols() != cols)
        {
            return Ok(Projections::Separate(parts));
        }
        let rows: Vec<usize> = parts.iter().map(|p| p.w.rows()).collect();
        let total: usize = rows.iter().sum();
        let any_bias = parts.iter().any(|p| p.bias.is_some());
        let mut bias = Vec::with_capacity(if any_bias { total } else { 0 });
        for p in &parts {
            if any_bias {
                match &p.bias {
                    Some(b) if b.len() == p.w.rows() => bias.extend_from_slice(b),
                    Some(b) => {
                        return Err(EngineError::InvalidModel(format!(
                            "a bias has {} values for a {}-row weight",
                            b.len(),
                            p.w.rows()
                        )))
                    }
                    None => bias.resize(bias.len() + p.w.rows(), 0.0),
                }
            }
        }
        // The parts' rows side by side without copying them (they may be pages of the
        // mapped model file).
        let matrices: Vec<QMatrix> = parts.into_iter().map(|p| p.w).collect();
        let w = QMatrix::stack(&matrices)
            .map_err(|e| EngineError::InvalidModel(format!("stacking weights: {e}")))?;
        Ok(Projections::Stacked {
            linear: Linear {
                w,
                bias: any_bias.then_some(bias),
            },
            parts: rows,
            scratch: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Bytes of weight data.
    /// Projections a file stores as one matrix (phi3's `attn_qkv`, its gate-and-up
    /// `ffn_up`): `parts` are the row counts of each, in order.
    pub fn fused(linear: Linear, parts: Vec<usize>) -> Self {
        Projections::Stacked {
            linear,
            parts,
            scratch: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn size_bytes(&self) -> usize {
        match self {
            Projections::Stacked { linear, .. } => linear.w.size_bytes(),
            Projections::Separate(parts) => parts.iter().map(|p| p.w.size_bytes()).sum(),
        }
    }

    /// Every part of `x` (`m` rows), part `i` into `outs[i]` (`m` rows each).
    pub fn forward(
        &self,
        run: &Run,
        x: &[f32],
        m: usize,
        outs: &mut [&mut Vec<f32>],
    ) -> Result<()> {
        match self {
            Projections::Separate(parts) => {
                for (p, out) in parts.iter().zip(outs.iter_mut()) {
                    p.forward(run, x, m, out)?;
                }
                Ok(())
            }
            Projections::Stacked { linear, parts, .. } if m > STACKED_MAX_ROWS => {
                // Prompt chunks: one call per part (same weights, its rows alone).
                let mut at = 0;
                for (&n, out) in parts.iter().zip(outs.iter_mut()) {
                    out.resize(m * n, 0.0);
                    linear
                        .w
                        .matmul_rows(at..at + n, run.pool, run.threads, x, m, out)
                        .map_err(|e| EngineError::Internal(format!("matmul: {e}")))?;
                    if let Some(b) = &linear.bias {
                        ops::add_bias(out, &b[at..at + n]);
                    }
                    at += n;
                }
                Ok(())
            }
            Projections::Stacked {
                linear,
                parts,
                scratch,
            } => {
                let mut all = scratch.lock().unwrap_or_else(|p| p.into_inner());
                linear.forward(run, x, m, &mut all)?;
                let total = linear.w.rows();
                for out in outs.iter_mut() {
                    out.clear();
                }
                for row in all.chunks_exact(total) {
                    let mut at = 0;
                    for (&n, out) in parts.iter().zip(outs.iter_mut()) {
                        out.extend_from_slice(&row[at..at + n]);
                        at += n;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wick_kernels::synth::random_matrix;
    use wick_kernels::QuantKind;

    /// A seed source: each matrix gets the next seed.
    struct Rng(u64);

    fn linear(rng: &mut Rng, kind: QuantKind, rows: usize, bias: bool) -> Linear {
        rng.0 += 1;
        let w = random_matrix(kind, rows, 256, rng.0);
        Linear {
            bias: bias.then(|| (0..rows).map(|i| i as f32 * 0.01).collect()),
            w,
        }
    }

    #[test]
    fn stacked_projections_equal_separate_ones_bit_for_bit() {
        let pool = ThreadPool::new(2);
        let run = Run {
            pool: &pool,
            threads: 2,
        };
        for (m, kind) in [3, STACKED_MAX_ROWS + 4]
            .into_iter()
            .flat_map(|m| [QuantKind::Q4_1, QuantKind::Q4K, QuantKind::Q8_0].map(|k| (m, k)))
        {
            let x: Vec<f32> = (0..m * 256).map(|i| (i as f32 * 0.173).sin()).collect();
            let mut rng = Rng(7);
            let make = |rng: &mut Rng| {
                vec![
                    linear(rng, kind, 64, true),
                    linear(rng, kind, 32, false),
                    linear(rng, kind, 32, true),
                ]
            };
            let separate = Projections::Separate(make(&mut rng));
            let mut rng = Rng(7);
            let stacked = Projections::new(make(&mut rng)).expect("stack");
            assert!(matches!(stacked, Projections::Stacked { .. }));
            let (mut a, mut b, mut c) = (vec![], vec![], vec![]);
            separate
                .forward(&run, &x, m, &mut [&mut a, &mut b, &mut c])
                .expect("separate");
            let (mut d, mut e, mut f) = (vec![], vec![], vec![]);
            stacked
                .forward(&run, &x, m, &mut [&mut d, &mut e, &mut f])
                .expect("stacked");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&d), "{kind:?} first part");
            assert_eq!(bits(&b), bits(&e), "{kind:?} second part");
            assert_eq!(bits(&c), bits(&f), "{kind:?} third part");
        }
    }

    #[test]
    fn parts_of_different_kinds_stay_separate() {
        let mut rng = Rng(1);
        let parts = vec![
            linear(&mut rng, QuantKind::Q5_0, 32, false),
            linear(&mut rng, QuantKind::Q8_0, 32, false),
        ];
        assert!(matches!(
            Projections::new(parts).expect("new"),
            Projections::Separate(_)
        ));
    }
}
