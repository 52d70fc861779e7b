//! Activation quantization, bit-exact with ggml's x86 build.
//!
//! * Q8_0 / Q8_1 (blocks of 32) follow the AVX2 `quantize_row_q8_0/1`: `amax = max|x|`,
//!   `d = amax / 127`, `id = 127 / amax` (0 for an all-zero block), `q = round(x * id)`
//!   with ties to even, `d` stored as f16; Q8_1 adds `s = f16(d * sum(q))` (the f32 `d`,
//!   one rounding).
//! * Q8_K (blocks of 256) follows `quantize_row_q8_K_ref`, which is what ggml's x86 build
//!   runs: `max` is the signed value of largest magnitude (first one on ties),
//!   `iscale = -127 / max`, `q = min(127, nearest_int(iscale * x))` with ties to even,
//!   `d = 1 / iscale` kept as f32, and `bsums` the sums of each 16 quants.
//!
//! Blocks are kept in a kernel-friendly layout (scales already widened to f32), not in
//! ggml's byte layout.

use crate::f16::round_f16;

/// A Q8_0/Q8_1 activation block: 32 quants, the f16-rounded scale and (Q8_1) `d * sum`.
/// Kept small: batched kernels stream many of these through L1.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Q8Block {
    pub qs: [i8; 32],
    pub d: f32,
    pub s: f32,
}

impl Default for Q8Block {
    fn default() -> Self {
        Self {
            qs: [0; 32],
            d: 0.0,
            s: 0.0,
        }
    }
}

/// Extra per-block data for the Q4_0/Q5_0 decode kernels (filled for `m = 1` only).
/// `corr[l] = offset * (sum of quants 4l..4l + 4)` lets them multiply the unsigned
/// weight codes (`q + offset`) and subtract, instead of two sign fix-ups per block and
/// row: the same integers per lane as ggml's signed products. `dv` repeats `d` 8 times,
/// so the scale product comes from a vector load instead of a broadcast (a shuffle-port
/// uop per block and weight row; those ports limit these kernels).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Q8Aux {
    pub dv: [f32; 8],
    pub corr: [i32; 8],
}

impl Default for Q8Aux {
    fn default() -> Self {
        Self {
            dv: [0.0; 8],
            corr: [0; 8],
        }
    }
}

/// What a Q8_0 activation block carries besides quants and scale, by weight kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Q8Extras {
    /// Q8_1's `s = f16(d * sum)` (Q4_1 weights).
    pub sum: bool,
    /// Offset of the weights' unsigned codes (8 for Q4_0, 16 for Q5_0, 12 for MXFP4's
    /// values; 0: none).
    pub offset: u8,
}

impl Q8Extras {
    pub(crate) fn for_kind(kind: crate::QuantKind) -> Self {
        use crate::QuantKind::*;
        Self {
            sum: kind == Q4_1,
            offset: match kind {
                Q4_0 => 8,
                Q5_0 => 16,
                Mxfp4 => 12,
                _ => 0,
            },
        }
    }
}

/// A Q8_K activation block. `pair_sums[j] = bsums[2j] + bsums[2j + 1]` (the sums per
/// 32 values that Q4_K/Q5_K mins multiply) is computed once here rather than per weight
/// row.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Q8KBlock {
    pub qs: [i8; 256],
    pub d: f32,
    pub bsums: [i16; 16],
    pub pair_sums: [i16; 8],
}

impl Default for Q8KBlock {
    fn default() -> Self {
        Self {
            qs: [0; 256],
            d: 0.0,
            bsums: [0; 16],
            pair_sums: [0; 8],
        }
    }
}

impl Q8KBlock {
    pub(crate) fn fill_pair_sums(&mut self) {
        for (j, p) in self.pair_sums.iter_mut().enumerate() {
            *p = self.bsums[2 * j] + self.bsums[2 * j + 1];
        }
    }
}

/// Round to nearest with ties to even, for `|v| <= 2^22` (ggml's `nearest_int` trick: in
/// `[2^23, 2^24)` the float step is 1). Same as `round_ties_even` there, and vectorizes.
#[inline]
fn round_even(v: f32) -> f32 {
    (v + 12_582_912.0) - 12_582_912.0
}

/// Quantize `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks); with
/// `extras` also fill `s` (Q8_1); `aux`, when given (`out.len()` entries), gets the
/// decode kernels' extras.
pub(crate) fn quantize_q8_0(
    x: &[f32],
    out: &mut [Q8Block],
    mut aux: Option<&mut [Q8Aux]>,
    extras: Q8Extras,
) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (i, (xb, y)) in x.chunks_exact(32).zip(out.iter_mut()).enumerate() {
        let amax = xb.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            let r = round_even(v * id).clamp(-128.0, 127.0) as i32;
            sum += r;
            *q = r as i8;
        }
        y.d = round_f16(d);
        y.s = if extras.sum {
            round_f16(d * sum as f32)
        } else {
            0.0
        };
        if let Some(aux) = aux.as_deref_mut() {
            let a = &mut aux[i];
            a.dv = [y.d; 8];
            for (c, q) in a.corr.iter_mut().zip(y.qs.chunks_exact(4)) {
                *c = extras.offset as i32 * q.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
    }
}

/// Quantize `x` (a multiple of 256 values) into `out` (`x.len() / 256` blocks).
pub(crate) fn quantize_q8_k(x: &[f32], out: &mut [Q8KBlock]) {
    debug_assert_eq!(x.len(), out.len() * 256);
    for (xb, y) in x.chunks_exact(256).zip(out.iter_mut()) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *y = Q8KBlock::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            *q = (round_even(iscale * v) as i32).min(127) as i8;
        }
        for (s, qs) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        y.fill_pair_sums();
        y.d = 1.0 / iscale;
    }
}

/// `x` rounded to f16 and back (the F16 weights' activation type, kept as f32).
pub(crate) fn round_to_f16(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = round_f16(v);
    }
}

/// `x` rounded to bfloat16 and back (the BF16 weights' activation type, kept as f32).
pub(crate) fn round_to_bf16(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = crate::f16::bf16_to_f32(crate::f16::f32_to_bf16(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_rounds_ties_to_even_and_keeps_f16_scale() {
        // amax 127 gives id = 1, so x * id is x itself: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = 2.5;
        x[4] = -2.5;
        x[5] = -0.5;
        let mut b = [Q8Block::default()];
        let mut aux = [Q8Aux::default()];
        let e = Q8Extras {
            sum: true,
            offset: 16,
        };
        quantize_q8_0(&x, &mut b, Some(&mut aux), e);
        assert_eq!(&b[0].qs[..6], &[127, 0, 2, 2, -2, 0]);
        assert_eq!(b[0].d, 1.0);
        assert_eq!(b[0].s, 129.0);
        assert_eq!(aux[0].corr[0], 16 * (127 + 2 + 2));
        assert_eq!(aux[0].corr[1], 16 * -2);
        assert_eq!(aux[0].dv, [1.0; 8]);
        // A zero block quantizes to zeros with d = 0.
        quantize_q8_0(&[0.0; 32], &mut b, None, e);
        assert!(b[0].qs.iter().all(|&q| q == 0) && b[0].d == 0.0 && b[0].s == 0.0);
    }

    /// Random data plus the corner cases: ties at .5, zero blocks, +-max both present.
    fn tricky_rows(n: usize) -> Vec<Vec<f32>> {
        let mut rng = crate::synth::Rng::new(77);
        let mut rows = vec![rng.vec(n), vec![0.0; n]];
        let mut ties: Vec<f32> = (0..n).map(|i| (i % 255) as f32 - 127.0 + 0.5).collect();
        ties[0] = 127.0;
        rows.push(ties);
        let mut both = rng.vec(n);
        both[3] = -1.5;
        both[9] = 1.5;
        rows.push(both);
        let mut scaled = rng.vec(n);
        scaled.iter_mut().for_each(|v| *v *= 1e-3);
        rows.push(scaled);
        rows
    }

    #[test]
    fn avx2_quantizers_are_bit_identical() {
        if !crate::avx2::available() {
            eprintln!("note: no AVX2 here, nothing to compare");
            return;
        }
        for x in tricky_rows(512) {
            for (sum, offset) in [(false, 0), (true, 0), (false, 8), (false, 16)] {
                let e = Q8Extras { sum, offset };
                let mut a = vec![Q8Block::default(); 16];
                let mut b = vec![Q8Block::default(); 16];
                let mut aa = vec![Q8Aux::default(); 16];
                let mut ab = vec![Q8Aux::default(); 16];
                quantize_q8_0(&x, &mut a, Some(&mut aa), e);
                crate::avx2::quant::q8_0(&x, &mut b, Some(&mut ab), e);
                for (p, q) in aa.iter().zip(&ab) {
                    assert_eq!(p.dv.map(f32::to_bits), q.dv.map(f32::to_bits));
                    assert_eq!(p.corr, q.corr);
                }
                for (p, q) in a.iter().zip(&b) {
                    assert_eq!(
                        (p.qs, p.d.to_bits(), p.s.to_bits()),
                        (q.qs, q.d.to_bits(), q.s.to_bits())
                    );
                }
            }
            let mut a = vec![Q8KBlock::default(); 2];
            let mut b = vec![Q8KBlock::default(); 2];
            quantize_q8_k(&x, &mut a);
            crate::avx2::quant::q8_k(&x, &mut b);
            for (p, q) in a.iter().zip(&b) {
                assert_eq!(
                    (p.qs, p.d.to_bits(), p.bsums),
                    (q.qs, q.d.to_bits(), q.bsums)
                );
                assert_eq!(p.pair_sums, q.pair_sums);
            }
            let mut a = vec![0f32; x.len() - 3];
            let mut b = vec![0f32; x.len() - 3];
            round_to_f16(&x[3..], &mut a);
            crate::avx2::quant::round_to_f16(&x[3..], &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn q8_k_uses_the_signed_max() {
        let mut x = [0f32; 256];
        x[0] = 1.0;
        x[1] = -2.0;
        x[17] = 0.5;
        let mut b = [Q8KBlock::default()];
        quantize_q8_k(&x, &mut b);
        // iscale = -127 / -2 = 63.5: 1.0 -> 63.5 -> 64 (ties to even), -2 -> -127.
        assert_eq!(b[0].qs[0], 64);
        assert_eq!(b[0].qs[1], -127);
        assert_eq!(b[0].qs[17], 32);
        assert_eq!(b[0].d, 1.0 / 63.5);
        assert_eq!(b[0].bsums[0], 64 - 127);
        assert_eq!(b[0].bsums[1], 32);
    }
}
