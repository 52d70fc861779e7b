//! Attention for a prompt chunk of [`TILED_MIN_ROWS`] rows or more, computed the way
//! llama.cpp's CPU flash attention computes such micro-batches (its tiled kernel, not
//! the row-at-a-time one whose f16 running sums [`super::attention`] reproduces):
//!
//! - queries in f32 (not rounded to f16), keys and values widened from the f16 cache;
//! - positions in tiles of [`KV_TILE`] from position 0; each score a sequential fma chain
//!   over the head's dimensions, then scaled, soft-capped, masked;
//! - per row and tile, an online softmax: the tile's maximum, the running sum and values
//!   rescaled by `exp(old - new)` when it grows, the tile's exponentials summed eight
//!   at a time in f32 and the groups in f64;
//! - the weighted values summed in f32, position by position, as fma chains;
//! - a sink logit (gpt-oss) joins the softmax at the end.
//!
//! The exponentials of a tile come from a vectorized `exp` (Cephes' polynomial), within
//! 2 ulp of libm's; the rescale factors from libm's, as ggml's do. Compared with the
//! row-at-a-time path this drops the per-position f16 rounding and most of the work.

use std::arch::x86_64::*;

/// Query rows of one sequence from which a chunk takes the tiled path (llama.cpp's
/// `GGML_FA_TILE_Q`).
pub const TILED_MIN_ROWS: usize = 64;
/// Positions per tile (llama.cpp's `GGML_FA_TILE_KV`).
const KV_TILE: usize = 64;

/// Per-thread buffers.
#[derive(Default)]
pub struct TiledScratch {
    /// A tile of keys, transposed: `kt[d * KV_TILE + j]`.
    kt: Vec<f32>,
    scores: Vec<f32>,
    /// Per row: the weighted sum of values.
    acc: Vec<f32>,
    /// Per row: the running maximum and sum of the softmax.
    max: Vec<f32>,
    sum: Vec<f32>,
}

/// Whether this CPU and head size take the tiled path.
pub fn available(head_dim: usize) -> bool {
    head_dim.is_multiple_of(8)
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}

/// One head's attention for `t` query rows at positions `start..start + t`.
pub struct HeadRows<'a> {
    /// Row `r`'s query is `q[r * q_stride..][..head_dim]`.
    pub q: &'a [f32],
    pub q_stride: usize,
    pub t: usize,
    pub start: usize,
    /// Keys and values of positions `0..start + t`, `head_dim` f32 each, contiguous.
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub head_dim: usize,
    /// A row at position `p` sees `p - window + 1 ..= p` only.
    pub window: Option<usize>,
    /// Multiplier of `q . k` (already divided by the cap when there is one).
    pub scale: f32,
    pub softcap: Option<f32>,
    pub sink: Option<f32>,
}

/// Attention of every row of `h`; `emit(r, values)` receives row `r`'s output.
pub fn attend_head(h: &HeadRows, scratch: &mut TiledScratch, mut emit: impl FnMut(usize, &[f32])) {
    let hd = h.head_dim;
    let n = h.start + h.t;
    assert!(
        available(hd)
            && h.k.len() >= n * hd
            && h.v.len() >= n * hd
            && (h.t == 0 || (h.t - 1) * h.q_stride + hd <= h.q.len()),
        "tiled attention: rows out of range"
    );
    let TiledScratch {
        kt,
        scores,
        acc,
        max,
        sum,
    } = scratch;
    kt.resize(hd * KV_TILE, 0.0);
    scores.resize(KV_TILE, 0.0);
    acc.clear();
    acc.resize(h.t * hd, 0.0);
    max.clear();
    max.resize(h.t, f32::NEG_INFINITY);
    sum.clear();
    sum.resize(h.t, 0.0);
    for c0 in (0..n).step_by(KV_TILE) {
        let width = (n - c0).min(KV_TILE);
        // Transposed and zero-padded, so a row's 64 scores are eight vectors.
        kt.fill(0.0);
        for j in 0..width {
            for (d, &x) in h.k[(c0 + j) * hd..][..hd].iter().enumerate() {
                kt[d * KV_TILE + j] = x;
            }
        }
        for r in 0..h.t {
            let p = h.start + r;
            let first = h.window.map_or(0, |w| (p + 1).saturating_sub(w));
            let (lo, hi) = (first.max(c0), (p + 1).min(c0 + width));
            if lo >= hi {
                continue;
            }
            let q = &h.q[r * h.q_stride..][..hd];
            // SAFETY: `available` checked the CPU; `kt` holds `hd` rows of KV_TILE and
            // `scores` KV_TILE values.
            unsafe { x86::scores(q, kt, scores) };
            let mut tile_max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let pos = c0 + j;
                let mut x = *s * h.scale;
                if let Some(cap) = h.softcap {
                    x = x.tanh() * cap;
                }
                *s = if pos >= lo && pos < hi {
                    tile_max = tile_max.max(x);
                    x
                } else {
                    f32::NEG_INFINITY
                };
            }
            let row_acc = &mut acc[r * hd..][..hd];
            let new_max = max[r].max(tile_max);
            if new_max > max[r] {
                let rescale = (max[r] - new_max).exp();
                row_acc.iter_mut().for_each(|a| *a *= rescale);
                sum[r] *= rescale;
            }
            max[r] = new_max;
            // SAFETY: as above; rows `lo..hi` of `v` exist (checked at the top).
            unsafe {
                sum[r] += x86::exp_sum(scores, new_max) as f32;
                x86::add_values(row_acc, &scores[lo - c0..hi - c0], &h.v[lo * hd..hi * hd]);
            }
        }
    }
    for r in 0..h.t {
        let row_acc = &mut acc[r * hd..][..hd];
        if let Some(s) = h.sink {
            let (mut rescale, mut weight) = (1.0f32, 1.0f32);
            if s > max[r] {
                rescale = (max[r] - s).exp();
                row_acc.iter_mut().for_each(|a| *a *= rescale);
            } else {
                weight = (s - max[r]).exp();
            }
            sum[r] = sum[r] * rescale + weight;
        }
        let inv = if sum[r] == 0.0 { 0.0 } else { 1.0 / sum[r] };
        row_acc.iter_mut().for_each(|a| *a *= inv);
        emit(r, row_acc);
    }
}

mod x86 {
    use super::*;

    /// `out[j] = sum_d q[d] * kt[d][j]` for the tile's KV_TILE positions, each a chain of
    /// fmas in the order of `d`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(q: &[f32], kt: &[f32], out: &mut [f32]) {
        let mut s = [_mm256_setzero_ps(); KV_TILE / 8];
        for (d, &x) in q.iter().enumerate() {
            let qb = _mm256_set1_ps(x);
            let row = kt.as_ptr().add(d * KV_TILE);
            for (i, acc) in s.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(qb, _mm256_loadu_ps(row.add(8 * i)), *acc);
            }
        }
        for (i, acc) in s.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), *acc);
        }
    }

    /// `x[j] = exp(x[j] - max)` for the whole tile (a masked `-inf` gives 0); returns
    /// their sum, eight at a time in f32 and the eights in f64.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sum(x: &mut [f32], max: f32) -> f64 {
        let m = _mm256_set1_ps(max);
        let mut total = 0.0f64;
        for c in x.chunks_exact_mut(8) {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            total += hsum(e) as f64;
        }
        total
    }

    /// `acc += w[j] * v[j]` for each row `j` in order, as fma chains.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_values(acc: &mut [f32], w: &[f32], v: &[f32]) {
        let hd = acc.len();
        let mut at = 0;
        while at < hd {
            let lanes = ((hd - at) / 8).min(8);
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, x) in r.iter_mut().enumerate().take(lanes) {
                *x = _mm256_loadu_ps(acc.as_ptr().add(at + 8 * i));
            }
            for (j, &wj) in w.iter().enumerate() {
                let wb = _mm256_set1_ps(wj);
                let row = v.as_ptr().add(j * hd + at);
                for (i, x) in r.iter_mut().enumerate().take(lanes) {
                    *x = _mm256_fmadd_ps(wb, _mm256_loadu_ps(row.add(8 * i)), *x);
                }
            }
            for (i, x) in r.iter().enumerate().take(lanes) {
                _mm256_storeu_ps(acc.as_mut_ptr().add(at + 8 * i), *x);
            }
            at += 8 * lanes;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(x: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        _mm_cvtss_f32(q)
    }

    /// `exp(x)` for `x <= 0` (a softmax's arguments): Cody-Waite reduction by ln 2 and
    /// Cephes' degree-6 polynomial; below -87 (and at `-inf`) it is 0.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.0));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_2e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let e = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
        _mm256_andnot_ps(tiny, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::attention::{attend, AttnDims, AttnJob};
    use half::f16;
    use wick_kernels::ThreadPool;

    /// A 70-row chunk after 60 cached positions (two tiles, the second partly masked),
    /// two query heads per KV head, head size 64: against a softmax in f64, plain, with
    /// a sliding window, a soft-cap, and sinks.
    #[test]
    fn long_chunks_match_an_f64_softmax() {
        if !available(64) {
            return;
        }
        let plain = AttnDims::causal(4, 2, 64);
        let cases = [
            (plain, None),
            (
                AttnDims {
                    window: Some(50),
                    ..plain
                },
                None,
            ),
            (
                AttnDims {
                    softcap: Some(0.7),
                    scale: 0.3,
                    ..plain
                },
                None,
            ),
            (plain, Some(vec![2.0f32, -1.0, 0.5, 9.0])),
        ];
        let (t, start, hd) = (70usize, 60usize, 64usize);
        let n = start + t;
        let wave = |i: usize, a: f32| (i as f32 * a).sin() * 1.3;
        let k: Vec<f16> = (0..n * 128).map(|i| f16::from_f32(wave(i, 0.37))).collect();
        let v: Vec<f16> = (0..n * 128).map(|i| f16::from_f32(wave(i, 0.11))).collect();
        let q: Vec<f32> = (0..t * 256).map(|i| wave(i, 0.23)).collect();
        let pool = ThreadPool::new(2);
        for (dims, sinks) in cases {
            let mut out = vec![0.0f32; t * 256];
            let job = AttnJob {
                q: &q,
                k: &k,
                v: &v,
                start,
                out_row: 0,
            };
            attend(&pool, 2, dims, sinks.as_deref(), &[job], &mut out);
            let mut worst = 0.0f64;
            for r in 0..t {
                let p = start + r;
                let first = dims.window.map_or(0, |w| (p + 1).saturating_sub(w));
                for h in 0..4 {
                    let kvh = h / 2;
                    let qh = &q[r * 256 + h * hd..][..hd];
                    let s: Vec<f64> = (first..=p)
                        .map(|j| {
                            let dot: f64 = (0..hd)
                                .map(|d| qh[d] as f64 * k[j * 128 + kvh * hd + d].to_f64())
                                .sum();
                            let x = dot * dims.scale as f64;
                            dims.softcap.map_or(x, |c| c as f64 * (x / c as f64).tanh())
                        })
                        .collect();
                    let sink = sinks.as_ref().map(|s| s[h] as f64);
                    let m = s
                        .iter()
                        .copied()
                        .chain(sink)
                        .fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let z = e.iter().sum::<f64>() + sink.map_or(0.0, |s| (s - m).exp());
                    for d in 0..hd {
                        let want: f64 = e
                            .iter()
                            .enumerate()
                            .map(|(i, w)| w * v[(first + i) * 128 + kvh * hd + d].to_f64())
                            .sum::<f64>()
                            / z;
                        let got = out[r * 256 + h * hd + d] as f64;
                        worst = worst.max((got - want).abs());
                    }
                }
            }
            assert!(worst < 1e-5, "{dims:?} sinks {sinks:?}: off by {worst}");
        }
    }

    #[test]
    fn vector_exp_is_within_two_ulp_of_libm() {
        if !available(8) {
            return;
        }
        let mut worst = 0u32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let mut v = [
                x,
                x * 0.5,
                x * 0.25,
                x * 0.125,
                x * 0.01,
                x * 1e-3,
                x * 1e-5,
                0.0,
            ];
            let want: Vec<f32> = v.iter().map(|a| a.exp()).collect();
            // SAFETY: `available` checked the CPU.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), x86::exp8(_mm256_loadu_ps(v.as_ptr()))) };
            for (g, w) in v.iter().zip(&want) {
                worst = worst.max(g.to_bits().abs_diff(w.to_bits()));
            }
            x += 0.0137;
        }
        assert!(worst <= 2, "{worst} ulp");
        let mut v = [f32::NEG_INFINITY, -88.0, -100.0, -1e30, 0.0, 0.0, 0.0, 0.0];
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(v.as_mut_ptr(), x86::exp8(_mm256_loadu_ps(v.as_ptr()))) };
        assert_eq!(&v[..4], &[0.0; 4]);
        assert_eq!(v[4], 1.0);
    }
}
