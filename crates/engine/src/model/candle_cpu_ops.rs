//! wick's CPU arithmetic as candle ops, for the candle path on candle's CPU device
//! ([`CandleArithmetic::KernelMatmuls`] and [`CandleArithmetic::Ggml`]).
//!
//! Each op computes exactly what the CPU path computes for the same step (ggml's
//! rounding: 8-bit activation blocks in the matmuls, f16 queries and value sums in
//! attention, the f16 GELU table, f64 norm sums, the SIMD `exp` of SiLU), so comparing
//! the two paths tests the rest of what the device path does: which step runs on which
//! rows, positions, caches, masks, windows and the family's own steps. On a GPU none of
//! these run: candle's own kernels do.
//!
//! [`CandleArithmetic::KernelMatmuls`]: super::CandleArithmetic::KernelMatmuls
//! [`CandleArithmetic::Ggml`]: super::CandleArithmetic::Ggml

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use half::f16;
use wick_kernels::{QMatrix, ThreadPool};

use super::decoder_spec::Activation;
use crate::cpu::attention::{attend, AttnDims, AttnJob};
use crate::cpu::ops;
use crate::error::{EngineError, Result};

/// The f32 values of a contiguous input.
fn values<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: an input is not contiguous")
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// A matrix multiplied by wick's kernels: `x` (`rows x cols`) times its transpose.
pub(super) struct KernelMatmul {
    pub w: QMatrix,
    pub pool: Arc<ThreadPool>,
}

impl CustomOp1 for KernelMatmul {
    fn name(&self) -> &'static str {
        "wick-kernels-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(self.name(), storage, layout)?;
        let mut dims = layout.dims().to_vec();
        let (cols, rows) = (self.w.cols(), self.w.rows());
        if cols == 0 || dims.last() != Some(&cols) {
            candle_core::bail!("wick-kernels-matmul: input {dims:?} for a {rows}x{cols} matrix")
        }
        let m = x.len() / cols;
        let mut out = vec![0f32; m * rows];
        self.w
            .matmul(&self.pool, self.pool.n_threads(), x, m, &mut out)
            .map_err(|e| candle_core::Error::Msg(format!("wick-kernels-matmul: {e}")))?;
        if let Some(last) = dims.last_mut() {
            *last = rows;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// One sequence's attention by the CPU path's kernel.
struct KernelAttention<'a> {
    dims: AttnDims,
    sinks: Option<&'a [f32]>,
    start: usize,
    pool: &'a ThreadPool,
}

impl CustomOp3 for KernelAttention<'_> {
    fn name(&self) -> &'static str {
        "wick-kernels-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = values(self.name(), qs, ql)?;
        let (kv_heads, n, hd) = kl.shape().dims3()?;
        // `(kv_heads, n, head_dim)` as the CPU cache's f16 rows of `kv_heads * head_dim`
        // (the device cache holds f16, so the conversion is exact).
        let rows = |x: &[f32]| -> Vec<f16> {
            let mut out = vec![f16::ZERO; x.len()];
            for (h, head) in x.chunks_exact(n * hd).enumerate() {
                for (p, pos) in head.chunks_exact(hd).enumerate() {
                    let at = (p * kv_heads + h) * hd;
                    out[at..at + hd]
                        .iter_mut()
                        .zip(pos)
                        .for_each(|(o, &v)| *o = f16::from_f32(v));
                }
            }
            out
        };
        let k = rows(values(self.name(), ks, kl)?);
        let v = rows(values(self.name(), vs, vl)?);
        let width = self.dims.n_head * self.dims.head_dim;
        let t = q.len() / width;
        if t == 0 || self.start + t != n || k.len() != n * kv_heads * hd || v.len() != k.len() {
            candle_core::bail!(
                "wick-kernels-attention: {t} queries at {} for {n} keys",
                self.start
            )
        }
        let mut out = vec![0f32; t * width];
        let job = AttnJob {
            q,
            k: &k,
            v: &v,
            start: self.start,
            out_row: 0,
        };
        attend(
            self.pool,
            self.pool.n_threads(),
            self.dims,
            self.sinks,
            &[job],
            &mut out,
        );
        Ok((CpuStorage::F32(out), Shape::from((t, width))))
    }
}

/// One sequence's attention by the CPU path's kernel: queries `(heads, t, head_dim)` at
/// positions `start..start + t`, its cached keys and values
/// `(kv_heads, start + t, head_dim)`; returns `(t, heads * head_dim)`.
pub(super) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: AttnDims,
    sinks: Option<&[f32]>,
    start: usize,
    pool: &ThreadPool,
) -> Result<Tensor> {
    let (heads, t, hd) = q.dims3()?;
    let q = q.transpose(0, 1)?.contiguous()?.reshape((t, heads * hd))?;
    let op = KernelAttention {
        dims,
        sinks,
        start,
        pool,
    };
    Ok(q.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?)
}

/// A row-wise step of the CPU path on `x` with a second operand (a norm's weight, the
/// up projection of a gated FFN); the result has `x`'s shape.
struct RowStep<F> {
    name: &'static str,
    step: F,
}

impl<F: Fn(&[f32], &[f32]) -> Vec<f32>> CustomOp2 for RowStep<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(self.name, xs, xl)?;
        let y = values(self.name, ys, yl)?;
        Ok((CpuStorage::F32((self.step)(x, y)), xl.shape().clone()))
    }
}

/// RMS norm of each row of `x` (its last dimension is `w`'s length), as the CPU path
/// computes it.
pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let step = RowStep {
        name: "wick-rms-norm",
        step: |x: &[f32], w: &[f32]| {
            let mut out = vec![0f32; x.len()];
            // The caller checked that the rows are the weight's length.
            if !w.is_empty() {
                ops::rms_norm(x, w, eps, &mut out);
            }
            out
        },
    };
    let w = w.contiguous()?;
    if x.dims().last() != Some(&w.elem_count()) {
        return Err(EngineError::Internal(format!(
            "rms norm of {:?} by {} weights",
            x.dims(),
            w.elem_count()
        )));
    }
    Ok(x.contiguous()?.apply_op2_no_bwd(&w, &step)?)
}

/// `activation(gate) * up` for `rows x width` inputs, as the CPU path computes it.
pub(super) fn gated(g: &Tensor, u: &Tensor, activation: Activation) -> Result<Tensor> {
    let rows = g.dims().first().copied().unwrap_or(1);
    if g.dims() != u.dims() {
        return Err(EngineError::Internal(format!(
            "gate {:?} and up {:?} differ",
            g.dims(),
            u.dims()
        )));
    }
    let step = RowStep {
        name: "wick-gated",
        step: |g: &[f32], u: &[f32]| {
            let mut out = g.to_vec();
            activation.apply(&mut out, u, rows);
            out
        },
    };
    Ok(g.contiguous()?.apply_op2_no_bwd(&u.contiguous()?, &step)?)
}
