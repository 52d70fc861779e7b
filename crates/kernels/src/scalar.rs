//! Portable kernels: one weight row against one activation row, integer sums per block
//! and then float scaling as ggml's generic `ggml_vec_dot_*` do (the K-quants: one
//! `fma` chain per pair, see [`k_chain`]; Q4_0, Q4_1, Q5_0 and MXFP4 likewise).

use crate::act::{Q8Block, Q8KBlock};
use crate::f16::read_f16;
use crate::matrix::Acts;
use crate::reference::{e8m0_half, k4_scale_min, MXFP4_VALUES};
use crate::QuantKind;

/// `out[ri * n + i] = dot(weight row ri, activation row a0 + i)` for the `nr` rows of
/// `rb` bytes in `w`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_dots(
    kind: QuantKind,
    w: &[u8],
    rb: usize,
    nr: usize,
    acts: &Acts,
    a0: usize,
    n: usize,
    out: &mut [f32],
) {
    for ri in 0..nr {
        row_dots(
            kind,
            &w[ri * rb..(ri + 1) * rb],
            acts,
            a0,
            &mut out[ri * n..(ri + 1) * n],
        );
    }
}

/// `out[i] = dot(w, activation row a0 + i)` for `i` in `0..out.len()`.
fn row_dots(kind: QuantKind, w: &[u8], acts: &Acts, a0: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let a = a0 + i;
        *o = match (kind, acts) {
            (QuantKind::F32, Acts::F32 { data, cols }) => {
                dot_f32(w, &data[a * cols..(a + 1) * cols])
            }
            (QuantKind::F16, Acts::F32 { data, cols }) => {
                dot_f16(w, &data[a * cols..(a + 1) * cols])
            }
            (QuantKind::BF16, Acts::F32 { data, cols }) => {
                dot_bf16(w, &data[a * cols..(a + 1) * cols])
            }
            (
                _,
                Acts::Q8 {
                    blocks, per_row, ..
                },
            ) => {
                let x = &blocks[a * per_row..(a + 1) * per_row];
                match kind {
                    QuantKind::Q4_0 => dot_q4_0(w, x),
                    QuantKind::Q4_1 => dot_q4_1(w, x),
                    QuantKind::Q5_0 => dot_q5_0(w, x),
                    QuantKind::Mxfp4 => dot_mxfp4(w, x),
                    _ => dot_q8_0(w, x),
                }
            }
            (_, Acts::Q8K { blocks, per_row }) => {
                let x = &blocks[a * per_row..(a + 1) * per_row];
                match kind {
                    QuantKind::Q4K => dot_q4_k(w, x),
                    QuantKind::Q5K => dot_q5_k(w, x),
                    QuantKind::Q2K => dot_q2_k(w, x),
                    QuantKind::Q3K => dot_q3_k(w, x),
                    _ => dot_q6_k(w, x),
                }
            }
            _ => unreachable!("activation type chosen from the weight kind"),
        };
    }
}

fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(4)
        .zip(x)
        .map(|(b, &v)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v)
        .sum()
}

fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &v)| read_f16(b, 0) * v)
        .sum()
}

fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &v)| crate::f16::read_bf16(b, 0) * v)
        .sum()
}

fn dot_q4_0(w: &[u8], x: &[Q8Block]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(18).zip(x) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = b[2 + j];
            sumi += ((q & 0xf) as i32 - 8) * y.qs[j] as i32;
            sumi += ((q >> 4) as i32 - 8) * y.qs[j + 16] as i32;
        }
        sumf = (read_f16(b, 0) * y.d).mul_add(sumi as f32, sumf);
    }
    sumf
}

fn dot_mxfp4(w: &[u8], x: &[Q8Block]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(17).zip(x) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = b[1 + j];
            sumi += MXFP4_VALUES[(q & 0xf) as usize] as i32 * y.qs[j] as i32;
            sumi += MXFP4_VALUES[(q >> 4) as usize] as i32 * y.qs[j + 16] as i32;
        }
        sumf = (e8m0_half(b[0]) * y.d).mul_add(sumi as f32, sumf);
    }
    sumf
}

fn dot_q4_1(w: &[u8], x: &[Q8Block]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(20).zip(x) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = b[4 + j];
            sumi += (q & 0xf) as i32 * y.qs[j] as i32;
            sumi += (q >> 4) as i32 * y.qs[j + 16] as i32;
        }
        sumf = (read_f16(b, 0) * y.d).mul_add(sumi as f32, sumf);
        sumf = read_f16(b, 2).mul_add(y.s, sumf);
    }
    sumf
}

fn dot_q5_0(w: &[u8], x: &[Q8Block]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(22).zip(x) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = b[6 + j] as u32;
            let lo = ((q & 0xf) | (((qh >> j) & 1) << 4)) as i32 - 16;
            let hi = ((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
            sumi += lo * y.qs[j] as i32 + hi * y.qs[j + 16] as i32;
        }
        sumf = (read_f16(b, 0) * y.d).mul_add(sumi as f32, sumf);
    }
    sumf
}

fn dot_q8_0(w: &[u8], x: &[Q8Block]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(34).zip(x) {
        let sumi: i32 = b[2..34]
            .iter()
            .zip(&y.qs)
            .map(|(&q, &v)| q as i8 as i32 * v as i32)
            .sum();
        sumf += sumi as f32 * (read_f16(b, 0) * y.d);
    }
    sumf
}

/// Integer part of a Q4_K/Q5_K block: `(sum_j scale_j * dot_j, sum_j min_j * bsum_j)`.
fn k4_sums(scales: &[u8], q: &[u8; 256], y: &Q8KBlock) -> (i32, i32) {
    let mut sumi = 0i32;
    let mut summ = 0i32;
    for j in 0..8 {
        let (sc, mn) = k4_scale_min(scales, j);
        let dot: i32 = q[32 * j..32 * j + 32]
            .iter()
            .zip(&y.qs[32 * j..32 * j + 32])
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sumi += sc as i32 * dot;
        summ += mn as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
    }
    (sumi, summ)
}

fn dot_q4_k(w: &[u8], x: &[Q8KBlock]) -> f32 {
    let mut sumf = 0f32;
    let mut q = [0u8; 256];
    for (b, y) in w.chunks_exact(144).zip(x) {
        let qs = &b[16..144];
        for c in 0..4 {
            for l in 0..32 {
                q[64 * c + l] = qs[32 * c + l] & 0xf;
                q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
            }
        }
        let (sumi, summ) = k4_sums(&b[4..16], &q, y);
        sumf = k_chain(sumf, y.d * read_f16(b, 0), sumi, y.d * read_f16(b, 2), summ);
    }
    sumf
}

fn dot_q5_k(w: &[u8], x: &[Q8KBlock]) -> f32 {
    let mut sumf = 0f32;
    let mut q = [0u8; 256];
    for (b, y) in w.chunks_exact(176).zip(x) {
        let qh = &b[16..48];
        let qs = &b[48..176];
        for c in 0..4 {
            for l in 0..32 {
                let h1 = ((qh[l] >> (2 * c)) & 1) << 4;
                let h2 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
                q[64 * c + l] = (qs[32 * c + l] & 0xf) | h1;
                q[64 * c + 32 + l] = (qs[32 * c + l] >> 4) | h2;
            }
        }
        let (sumi, summ) = k4_sums(&b[4..16], &q, y);
        sumf = k_chain(sumf, y.d * read_f16(b, 0), sumi, y.d * read_f16(b, 2), summ);
    }
    sumf
}

/// Q2_K's exact integer totals of one block against `y`: the codes' dot products
/// times their sub-blocks' scales, and the minimums times the activations' sums.
#[inline(always)]
pub(crate) fn q2_k_totals(b: &[u8], y: &Q8KBlock) -> (i32, i32) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (mut sumi, mut summ) = (0i32, 0i32);
    for (s, &sc) in scales.iter().enumerate() {
        let (half, j, l0) = (s / 8, (s % 8) / 2, 16 * (s % 2));
        let codes = &qs[32 * half + l0..32 * half + l0 + 16];
        let ys = &y.qs[16 * s..16 * s + 16];
        let dot: i32 = codes
            .iter()
            .zip(ys)
            .map(|(&q, &a)| ((q >> (2 * j)) & 3) as i32 * a as i32)
            .sum();
        sumi += (sc & 0xf) as i32 * dot;
        summ += (sc >> 4) as i32 * y.bsums[s] as i32;
    }
    (sumi, summ)
}

fn dot_q2_k(w: &[u8], x: &[Q8KBlock]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(84).zip(x) {
        let (sumi, summ) = q2_k_totals(b, y);
        sumf = k_chain(
            sumf,
            y.d * read_f16(b, 80),
            sumi,
            y.d * read_f16(b, 82),
            summ,
        );
    }
    sumf
}

/// Q3_K's exact integer total of one block against `y`.
#[inline(always)]
pub(crate) fn q3_k_total(b: &[u8], y: &Q8KBlock) -> i32 {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = crate::reference::q3_k_scales(&b[96..108]);
    let mut sumi = 0i32;
    for (s, &sc) in scales.iter().enumerate() {
        let (half, j, l0) = (s / 8, (s % 8) / 2, 16 * (s % 2));
        let codes = &qs[32 * half + l0..32 * half + l0 + 16];
        let high = &hmask[l0..l0 + 16];
        let ys = &y.qs[16 * s..16 * s + 16];
        let bit = 4 * half + j;
        let dot: i32 = codes
            .iter()
            .zip(high)
            .zip(ys)
            .map(|((&q, &h), &a)| {
                let v = ((q >> (2 * j)) & 3) as i32 - 4 * (1 - ((h >> bit) & 1) as i32);
                v * a as i32
            })
            .sum();
        sumi += sc as i32 * dot;
    }
    sumi
}

fn dot_q3_k(w: &[u8], x: &[Q8KBlock]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(110).zip(x) {
        sumf = (y.d * read_f16(b, 108)).mul_add(q3_k_total(b, y) as f32, sumf);
    }
    sumf
}

fn dot_q6_k(w: &[u8], x: &[Q8KBlock]) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(210).zip(x) {
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let mut sumi = 0i32;
        for h in 0..2 {
            for k in 0..4 {
                for half16 in 0..2 {
                    let mut dot = 0i32;
                    for l in 16 * half16..16 * half16 + 16 {
                        let lo = ql[64 * h + 32 * (k & 1) + l];
                        let lo = if k < 2 { lo & 0xf } else { lo >> 4 };
                        let hi = (qh[32 * h + l] >> (2 * k)) & 3;
                        let v = (lo | (hi << 4)) as i32 - 32;
                        dot += v * y.qs[128 * h + 32 * k + l] as i32;
                    }
                    sumi += sc[8 * h + 2 * k + half16] as i8 as i32 * dot;
                }
            }
        }
        sumf = (y.d * read_f16(b, 208)).mul_add(sumi as f32, sumf);
    }
    sumf
}

/// The K-quants' float order, which every backend and tile shape follows so a row's
/// result never depends on how it was computed: per block, the exact integer sums
/// scaled and added to one f32 chain by `fma`, the minimums' term second.
#[inline]
pub(crate) fn k_chain(acc: f32, d: f32, sumi: i32, dmin: f32, summ: i32) -> f32 {
    (-dmin).mul_add(summ as f32, d.mul_add(sumi as f32, acc))
}
