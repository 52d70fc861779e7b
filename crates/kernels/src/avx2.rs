//! AVX2 + FMA + F16C kernels (x86-64 only; chosen at run time).
//!
//! Each kernel multiplies one weight row with `MR` (1..=4) activation rows: every weight
//! block is loaded and unpacked once and used for all `MR` rows. Per (weight row,
//! activation row) pair the float operations are exactly those of ggml's AVX2
//! `ggml_vec_dot_*_q8_*` (8-lane integer sums per block, converted and `fma`-ed with the
//! combined scale into an 8-lane accumulator, the same horizontal sum at the end), so the
//! result does not depend on `MR`, and matches llama.cpp's non-repacked x86 path.

use crate::matrix::Acts;
use crate::QuantKind;

#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(not(all(target_arch = "x86_64", not(wick_kernels_portable))))]
pub(crate) fn available() -> bool {
    false
}

/// `out[ri * n + i] = dot(weight row ri, activation row a0 + i)` for the `nr <= 4` rows
/// of `rb` bytes in `w`. Callers check [`available`] first.
#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
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
    assert!(
        available(),
        "AVX2 kernels called on a CPU without AVX2/FMA/F16C"
    );
    // SAFETY: the CPU features were checked above; `imp::block_dots` asserts the weight,
    // activation and output extents it reads and writes.
    unsafe { imp::block_dots(kind, w, rb, nr, acts, a0, n, out) }
}

#[cfg(not(all(target_arch = "x86_64", not(wick_kernels_portable))))]
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
    crate::scalar::block_dots(kind, w, rb, nr, acts, a0, n, out)
}

/// AVX2 twins of the quantizers in [`crate::act`], bit-identical to them (tested).
#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
pub(crate) mod quant {
    use crate::act::{Q8Aux, Q8Block, Q8Extras, Q8KBlock};

    pub(crate) fn q8_0(
        x: &[f32],
        out: &mut [Q8Block],
        aux: Option<&mut [Q8Aux]>,
        extras: Q8Extras,
    ) {
        assert!(super::available() && x.len() == out.len() * 32);
        assert!(aux.as_ref().is_none_or(|a| a.len() == out.len()));
        // SAFETY: features checked; lengths checked.
        unsafe { super::imp::quantize_q8_0(x, out, aux, extras) }
    }

    pub(crate) fn q8_k(x: &[f32], out: &mut [Q8KBlock]) {
        assert!(super::available() && x.len() == out.len() * 256);
        // SAFETY: features checked; lengths checked.
        unsafe { super::imp::quantize_q8_k(x, out) }
    }

    pub(crate) fn round_to_f16(x: &[f32], out: &mut [f32]) {
        assert!(super::available() && x.len() == out.len());
        // SAFETY: features checked; lengths checked.
        unsafe { super::imp::round_to_f16(x, out) }
    }
}

#[cfg(not(all(target_arch = "x86_64", not(wick_kernels_portable))))]
pub(crate) mod quant {
    pub(crate) use crate::act::{quantize_q8_0 as q8_0, quantize_q8_k as q8_k, round_to_f16};
}

/// The unsigned byte codes of a row of Q4_0, Q4_1, Q5_0 or MXFP4 blocks (the GEMM's
/// unpacking).
#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
pub(crate) fn codes32(kind: QuantKind, w: &[u8], codes: &mut [u8]) {
    let ts = kind.type_size();
    assert!(available() && codes.len() == w.len() / ts * 32 && w.len().is_multiple_of(ts));
    // SAFETY: features checked; every block read is inside `w`, every store in `codes`.
    unsafe { imp::codes32(kind, w, codes) }
}

/// The byte codes of a row of Q4_K, Q5_K or Q6_K blocks (the GEMM's unpacking).
#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
pub(crate) fn codes_k(kind: QuantKind, w: &[u8], codes: &mut [u8]) {
    let ts = kind.type_size();
    assert!(available() && codes.len() == w.len() / ts * 256 && w.len().is_multiple_of(ts));
    // SAFETY: features checked; every block read is inside `w`, every store in `codes`.
    unsafe { imp::codes_k(kind, w, codes) }
}

#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
// Kernels index several per-row arrays with the same activation index.
#[allow(clippy::needless_range_loop)]
mod imp {
    use std::arch::x86_64::*;

    use crate::act::{Q8Aux, Q8Block, Q8Extras, Q8KBlock};
    use crate::matrix::Acts;
    use crate::QuantKind;

    // ------------------------------------------------------ activation quantizers

    /// Max of `|x|` over 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hmax(v: __m256) -> f32 {
        let mut m = _mm_max_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// Round 32 floats to nearest-even ints and pack them, in order, into 32 i8.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack32(v: [__m256; 4]) -> (__m256i, __m256i) {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i0 = _mm256_cvtps_epi32(_mm256_round_ps::<NEAREST>(v[0]));
        let i1 = _mm256_cvtps_epi32(_mm256_round_ps::<NEAREST>(v[1]));
        let i2 = _mm256_cvtps_epi32(_mm256_round_ps::<NEAREST>(v[2]));
        let i3 = _mm256_cvtps_epi32(_mm256_round_ps::<NEAREST>(v[3]));
        let sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        let p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        (p, sum)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn round_f16(x: f32) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
            _mm_set_ss(x),
        )))
    }

    /// ggml's AVX2 `quantize_row_q8_0` / `quantize_row_q8_1`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_q8_0(
        x: &[f32],
        out: &mut [Q8Block],
        mut aux: Option<&mut [Q8Aux]>,
        extras: Q8Extras,
    ) {
        let sign = _mm256_set1_ps(-0.0);
        for (i, (xb, y)) in x.chunks_exact(32).zip(out.iter_mut()).enumerate() {
            let p = xb.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for vi in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
            }
            let amax = hmax(m);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let (q, sum) = pack32(v.map(|vi| _mm256_mul_ps(vi, id)));
            _mm256_storeu_si256(y.qs.as_mut_ptr() as *mut __m256i, q);
            y.d = round_f16(d);
            if let Some(aux) = aux.as_deref_mut() {
                let a = &mut aux[i];
                a.dv = [y.d; 8];
                let c = _mm256_maddubs_epi16(_mm256_set1_epi8(extras.offset as i8), q);
                let c = _mm256_madd_epi16(c, _mm256_set1_epi16(1));
                _mm256_storeu_si256(a.corr.as_mut_ptr() as *mut __m256i, c);
            }
            y.s = if extras.sum {
                let s = _mm_add_epi32(
                    _mm256_castsi256_si128(sum),
                    _mm256_extracti128_si256::<1>(sum),
                );
                let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
                round_f16(d * _mm_cvtsi128_si32(s) as f32)
            } else {
                0.0
            };
        }
    }

    /// ggml's `quantize_row_q8_K_ref` (what its x86 build runs), vectorized.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_q8_k(x: &[f32], out: &mut [Q8KBlock]) {
        let sign = _mm256_set1_ps(-0.0);
        for (xb, y) in x.chunks_exact(256).zip(out.iter_mut()) {
            let p = xb.as_ptr();
            let mut m = _mm256_setzero_ps();
            for k in 0..32 {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * k))));
            }
            let amax = hmax(m);
            if amax == 0.0 {
                *y = Q8KBlock::default();
                continue;
            }
            // The signed value of the first element reaching the max magnitude.
            let target = _mm256_set1_ps(amax);
            let mut max = amax;
            for k in 0..32 {
                let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * k)));
                let hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, target));
                if hits != 0 {
                    max = xb[8 * k + hits.trailing_zeros() as usize];
                    break;
                }
            }
            let iscale = -127.0 / max;
            let is = _mm256_set1_ps(iscale);
            for c in 0..8 {
                let q = p.add(32 * c);
                let v = [
                    _mm256_mul_ps(is, _mm256_loadu_ps(q)),
                    _mm256_mul_ps(is, _mm256_loadu_ps(q.add(8))),
                    _mm256_mul_ps(is, _mm256_loadu_ps(q.add(16))),
                    _mm256_mul_ps(is, _mm256_loadu_ps(q.add(24))),
                ];
                let (packed, _) = pack32(v);
                _mm256_storeu_si256(y.qs.as_mut_ptr().add(32 * c) as *mut __m256i, packed);
            }
            for (s, qs) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
                *s = qs.iter().map(|&q| q as i16).sum();
            }
            y.fill_pair_sums();
            y.d = 1.0 / iscale;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn round_to_f16(x: &[f32], out: &mut [f32]) {
        let mut xc = x.chunks_exact(8);
        let mut oc = out.chunks_exact_mut(8);
        for (xv, ov) in (&mut xc).zip(&mut oc) {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(xv.as_ptr()));
            _mm256_storeu_ps(ov.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
        for (o, &v) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
            *o = round_f16(v);
        }
    }

    /// An activation row of Q8 blocks and (decode only) their [`Q8Aux`].
    #[derive(Clone, Copy)]
    pub(super) struct Q8Ptr {
        b: *const Q8Block,
        aux: *const Q8Aux,
    }

    /// Call `$kernel::<1, MR>` with `MR = $res.len()` (one of `$mr...`) activation rows
    /// `$ptr($a..)`, writing `$res`.
    macro_rules! mr_dispatch {
        ($kernel:ident, $lut:expr, $pf:expr, $w:expr, $len:expr, $ptr:expr, $a:expr, $res:expr; $($mr:literal)+) => {{
            let res: &mut [f32] = $res;
            match res.len() {
                $($mr => res.copy_from_slice(
                    &$kernel::<1, $mr>($lut, $pf, $w, $len, std::array::from_fn(|i| $ptr($a + i)))[0],
                ),)+
                _ => unreachable!("activation group larger than the kernel's"),
            }
        }};
    }

    /// Run `$kernel` for `nr` weight rows (`$wp(0..nr)`) and `n` activation rows
    /// (`$ptr(a)` for `a` in `a0..a0 + n`, in groups of `$group`), writing
    /// `out[ri * n + i]`.
    macro_rules! run_kernel {
        ($kernel:ident / $dkernel:ident, $decode:expr, $lut:expr, $wp:expr, $rb:expr, $nr:expr, $len:expr, $ptr:expr, $a0:expr, $n:expr, $out:expr; $group:literal: $($mr:literal)+) => {{
            let (lut, len, nr, n, a0) = ($lut, $len, $nr, $n, $a0);
            let out: &mut [f32] = $out;
            if $decode && n == 1 && nr == 4 {
                // Decode: stream the next four rows into cache while these run.
                let pf = Prefetch::ahead($wp(0).wrapping_add(4 * $rb), 4 * $rb);
                let r = $dkernel::<4, 1>(lut, pf, [$wp(0), $wp(1), $wp(2), $wp(3)], len, [$ptr(a0)]);
                for ri in 0..4 {
                    out[ri] = r[ri][0];
                }
            } else {
                for ri in 0..nr {
                    let w = [$wp(ri)];
                    for (g, res) in out[ri * n..(ri + 1) * n].chunks_mut($group).enumerate() {
                        // The first pass over a row fetches it from memory: prefetch the
                        // next row meanwhile. Later passes find this one in cache.
                        let pf = if g == 0 {
                            Prefetch::ahead(w[0].wrapping_add($rb), $rb)
                        } else {
                            Prefetch::NONE
                        };
                        mr_dispatch!($kernel, lut, pf, w, len, $ptr, a0 + $group * g, res; $($mr)+);
                    }
                }
            }
        }};
    }

    /// `out[ri * n + i] = dot(weight row ri, activation row a0 + i)` for the `nr` rows
    /// of `rb` bytes each in `w`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn block_dots(
        kind: QuantKind,
        w: &[u8],
        rb: usize,
        nr: usize,
        acts: &Acts,
        a0: usize,
        n: usize,
        out: &mut [f32],
    ) {
        assert!(w.len() >= nr * rb && out.len() >= nr * n && nr <= 4);
        let wp = |ri: usize| -> *const u8 { w[ri * rb..].as_ptr() };
        let lut = Lut(crate::f16::f16_table().as_ptr());
        match *acts {
            Acts::Q8 {
                blocks,
                aux,
                per_row,
            } => {
                assert!(blocks.len() >= (a0 + n) * per_row);
                // The decode kernels need the aux data, present only when m = 1.
                let decode = aux.len() >= (a0 + n) * per_row;
                let ptr = |a: usize| Q8Ptr {
                    b: blocks[a * per_row..].as_ptr(),
                    aux: if decode {
                        aux[a * per_row..].as_ptr()
                    } else {
                        std::ptr::null()
                    },
                };
                match kind {
                    QuantKind::Q4_0 => {
                        run_kernel!(q4_0_signed / q4_0, decode, lut, wp, rb, nr, per_row, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    QuantKind::Q4_1 => {
                        run_kernel!(q4_1 / q4_1, decode, lut, wp, rb, nr, per_row, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    QuantKind::Q5_0 => {
                        run_kernel!(q5_0_signed / q5_0, decode, lut, wp, rb, nr, per_row, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    QuantKind::Mxfp4 => {
                        run_kernel!(mxfp4 / mxfp4_decode, decode, lut, wp, rb, nr, per_row, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    _ => {
                        run_kernel!(q8_0 / q8_0, decode, lut, wp, rb, nr, per_row, ptr, a0, n, out; 8: 1 2 3 4 5 6 7 8)
                    }
                }
            }
            Acts::Q8K { blocks, per_row } => {
                assert!(blocks.len() >= (a0 + n) * per_row);
                let ptr = |a: usize| -> *const Q8KBlock { blocks[a * per_row..].as_ptr() };
                match kind {
                    QuantKind::Q4K => {
                        run_kernel!(q4_k / q4_k, true, lut, wp, rb, nr, per_row, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    QuantKind::Q5K => {
                        run_kernel!(q5_k / q5_k, true, lut, wp, rb, nr, per_row, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    QuantKind::Q2K | QuantKind::Q3K => {
                        // The scalar backend's float order over the same exact integer
                        // totals: bit-identical to it.
                        for ri in 0..nr {
                            let row = &w[ri * rb..(ri + 1) * rb];
                            for i in 0..n {
                                let x = &blocks[(a0 + i) * per_row..(a0 + i + 1) * per_row];
                                out[ri * n + i] = if kind == QuantKind::Q2K {
                                    q2_k_row(row, x)
                                } else {
                                    q3_k_row(row, x)
                                };
                            }
                        }
                    }
                    _ => {
                        run_kernel!(q6_k / q6_k, true, lut, wp, rb, nr, per_row, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                }
            }
            Acts::F32 { data, cols } => {
                assert!(data.len() >= (a0 + n) * cols);
                let ptr = |a: usize| -> *const f32 { data[a * cols..].as_ptr() };
                match kind {
                    QuantKind::F16 => {
                        run_kernel!(f16_row / f16_row, true, lut, wp, rb, nr, cols, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    QuantKind::BF16 => {
                        run_kernel!(bf16_row / bf16_row, true, lut, wp, rb, nr, cols, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                    _ => {
                        run_kernel!(f32_row / f32_row, true, lut, wp, rb, nr, cols, ptr, a0, n, out; 4: 1 2 3 4)
                    }
                }
            }
        }
    }

    /// `sum_i a[i] * b[i]` of eight i32 lanes.
    #[inline(always)]
    unsafe fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// The codes of one 32-byte `qs` half with bits `2j..2j+2` (Q2_K/Q3_K's low bits)
    /// against 32 activations, each 16's pair sums times its sub-block's scale:
    /// `scales` holds the two sub-blocks' scales, 8 lanes each.
    #[inline(always)]
    unsafe fn low_bits_dot(codes: __m256i, y: *const i8, scales: __m256i) -> __m256i {
        let ys = _mm256_loadu_si256(y as *const __m256i);
        _mm256_madd_epi16(_mm256_maddubs_epi16(codes, ys), scales)
    }

    /// Sixteen sub-block scales (`i16`, `v`: 0..7 in the low 128 bits, 8..15 in the
    /// high) as the operands of [`low_bits_dot`]: `out[h][j]` holds scale `8h + 2j` in
    /// its low 8 lanes and `8h + 2j + 1` in its high 8, one `vpshufb` each.
    #[inline(always)]
    unsafe fn pair_scales16(v: __m256i) -> [[__m256i; 4]; 2] {
        let halves = [
            _mm256_permute2x128_si256::<0x00>(v, v),
            _mm256_permute2x128_si256::<0x11>(v, v),
        ];
        let mut out = [[_mm256_setzero_si256(); 4]; 2];
        for (h, half) in halves.iter().enumerate() {
            for j in 0..4 {
                // Bytes of i16 lane 2j in the low 128 bits, of lane 2j + 1 in the high.
                let (lo, hi) = ((4 * j) as i8, (4 * j + 2) as i8);
                let mask = _mm256_setr_epi8(
                    lo,
                    lo + 1,
                    lo,
                    lo + 1,
                    lo,
                    lo + 1,
                    lo,
                    lo + 1,
                    lo,
                    lo + 1,
                    lo,
                    lo + 1,
                    lo,
                    lo + 1,
                    lo,
                    lo + 1,
                    hi,
                    hi + 1,
                    hi,
                    hi + 1,
                    hi,
                    hi + 1,
                    hi,
                    hi + 1,
                    hi,
                    hi + 1,
                    hi,
                    hi + 1,
                    hi,
                    hi + 1,
                    hi,
                    hi + 1,
                );
                out[h][j] = _mm256_shuffle_epi8(*half, mask);
            }
        }
        out
    }

    /// `sum_s w[s] * bsums[s]` over the 16 sub-blocks, `w` as 16 i16 lanes.
    #[inline(always)]
    unsafe fn weighted_bsums(w: __m256i, y: &Q8KBlock) -> i32 {
        let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        hsum_epi32(_mm256_madd_epi16(w, bsums))
    }

    /// A Q2_K row against Q8_K activations: per block, the exact integer totals of
    /// [`crate::scalar::q2_k_totals`], chained as the scalar backend chains them.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q2_k_row(w: &[u8], x: &[Q8KBlock]) -> f32 {
        let mut sumf = 0f32;
        let three = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0xf);
        for (b, y) in w.chunks_exact(84).zip(x) {
            let qs = &b[16..80];
            let packed = _mm_loadu_si128(b.as_ptr() as *const __m128i);
            let scales = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4));
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
            let sc = pair_scales16(scales);
            let mut acc = _mm256_setzero_si256();
            for half in 0..2 {
                let q = _mm256_loadu_si256(qs.as_ptr().add(32 * half) as *const __m256i);
                for j in 0..4 {
                    let codes = _mm256_and_si256(
                        _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)),
                        three,
                    );
                    let ys = y.qs.as_ptr().add(128 * half + 32 * j);
                    acc = _mm256_add_epi32(acc, low_bits_dot(codes, ys, sc[half][j]));
                }
            }
            sumf = crate::scalar::k_chain(
                sumf,
                y.d * crate::f16::read_f16(b, 80),
                hsum_epi32(acc),
                y.d * crate::f16::read_f16(b, 82),
                weighted_bsums(mins, y),
            );
        }
        sumf
    }

    /// A Q3_K row against Q8_K activations: codes shifted to 0..7 (the high bit set adds
    /// 4) for `vpmaddubsw`, the shift taken back through the activations' sums; chained
    /// as the scalar backend chains [`crate::scalar::q3_k_total`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q3_k_row(w: &[u8], x: &[Q8KBlock]) -> f32 {
        let mut sumf = 0f32;
        let (three, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
        for (b, y) in w.chunks_exact(110).zip(x) {
            let (hmask, qs) = (&b[0..32], &b[32..96]);
            let unpacked = crate::reference::q3_k_scales(&b[96..108]);
            let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(unpacked.as_ptr() as *const __m128i));
            let sc = pair_scales16(scales);
            let hm = _mm256_loadu_si256(hmask.as_ptr() as *const __m256i);
            let mut acc = _mm256_setzero_si256();
            for half in 0..2 {
                let q = _mm256_loadu_si256(qs.as_ptr().add(32 * half) as *const __m256i);
                for j in 0..4 {
                    let low = _mm256_and_si256(
                        _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)),
                        three,
                    );
                    let bit = _mm256_and_si256(
                        _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * half + j) as i32)),
                        one,
                    );
                    let codes = _mm256_or_si256(low, _mm256_slli_epi16(bit, 2));
                    let ys = y.qs.as_ptr().add(128 * half + 32 * j);
                    acc = _mm256_add_epi32(acc, low_bits_dot(codes, ys, sc[half][j]));
                }
            }
            let total = hsum_epi32(acc) - 4 * weighted_bsums(scales, y);
            sumf = (y.d * crate::f16::read_f16(b, 108)).mul_add(total as f32, sumf);
        }
        sumf
    }

    /// See [`super::codes32`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn codes32(kind: QuantKind, w: &[u8], codes: &mut [u8]) {
        let ts = kind.type_size();
        for (b, q) in w.chunks_exact(ts).zip(codes.chunks_exact_mut(32)) {
            let p = b.as_ptr();
            let v = match kind {
                QuantKind::Q4_0 => nibbles(p.add(2)),
                QuantKind::Q4_1 => nibbles(p.add(4)),
                // The values plus 12, so unsigned (`unpack_row32`'s offset).
                QuantKind::Mxfp4 => _mm256_shuffle_epi8(mxfp4_table(12), nibbles(p.add(1))),
                _ => _mm256_or_si256(
                    nibbles(p.add(6)),
                    _mm256_and_si256(bits_to_bytes(p.add(2)), _mm256_set1_epi8(0x10)),
                ),
            };
            _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, v);
        }
    }

    /// See [`super::codes_k`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn codes_k(kind: QuantKind, w: &[u8], codes: &mut [u8]) {
        let ts = kind.type_size();
        let m4 = _mm256_set1_epi8(0x0f);
        let m1 = _mm256_set1_epi8(1);
        let m3 = _mm256_set1_epi8(3);
        for (b, q) in w.chunks_exact(ts).zip(codes.chunks_exact_mut(256)) {
            let b = b.as_ptr();
            let q = q.as_mut_ptr() as *mut __m256i;
            match kind {
                QuantKind::Q4K | QuantKind::Q5K => {
                    let (qs, hbits) = if kind == QuantKind::Q4K {
                        (b.add(16), None)
                    } else {
                        (
                            b.add(48),
                            Some(_mm256_loadu_si256(b.add(16) as *const __m256i)),
                        )
                    };
                    for j in 0..4 {
                        let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                        let mut lo = _mm256_and_si256(bits, m4);
                        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                        if let Some(hb) = hbits {
                            let h0 = _mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * j as i32));
                            let h1 = _mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * j as i32 + 1));
                            lo = _mm256_add_epi8(
                                lo,
                                _mm256_slli_epi16::<4>(_mm256_and_si256(h0, m1)),
                            );
                            hi = _mm256_add_epi8(
                                hi,
                                _mm256_slli_epi16::<4>(_mm256_and_si256(h1, m1)),
                            );
                        }
                        _mm256_storeu_si256(q.add(2 * j), lo);
                        _mm256_storeu_si256(q.add(2 * j + 1), hi);
                    }
                }
                _ => {
                    for j in 0..2 {
                        let ql = b.add(64 * j);
                        let bits1 = _mm256_loadu_si256(ql as *const __m256i);
                        let bits2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                        let hb = _mm256_loadu_si256(b.add(128 + 32 * j) as *const __m256i);
                        let h = |shift: i32| {
                            _mm256_slli_epi16::<4>(_mm256_and_si256(
                                _mm256_srl_epi16(hb, _mm_cvtsi32_si128(shift)),
                                m3,
                            ))
                        };
                        let v = [
                            _mm256_or_si256(_mm256_and_si256(bits1, m4), h(0)),
                            _mm256_or_si256(_mm256_and_si256(bits2, m4), h(2)),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(bits1), m4),
                                h(4),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(bits2), m4),
                                h(6),
                            ),
                        ];
                        for (k, vk) in v.into_iter().enumerate() {
                            _mm256_storeu_si256(q.add(4 * j + k), vk);
                        }
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------------- helpers

    /// The f16 -> f32 table (see [`crate::f16::f16_table`]).
    #[derive(Clone, Copy)]
    pub(super) struct Lut(*const f32);

    impl Lut {
        /// The f16 stored at `p`.
        #[inline(always)]
        unsafe fn at(self, p: *const u8) -> f32 {
            *self.0.add((p as *const u16).read_unaligned() as usize)
        }
    }

    /// Where a kernel streams the weights it reads next while it computes, and into which
    /// cache.
    #[derive(Clone, Copy)]
    pub(super) struct Prefetch {
        base: *const u8,
        /// Into L2 rather than L1: the span is too large to sit in L1 beside the rows
        /// being read and the activations.
        far: bool,
    }

    /// A prefetched span above this goes to L2 only. Measured on Zen 3 (32 KB L1):
    /// rows of 5-7 KB in groups of four (Qwen2.5-1.5B's `ffn_down`, Q4_K and Q6_K) stream
    /// at 23 and 29 GB/s prefetched into L1, 33 and 34 GB/s into L2; groups of 3.5 KB
    /// (its `ffn_gate`) at 33 into L1, 25 into L2.
    const FAR_SPAN: usize = 8 << 10;

    impl Prefetch {
        const NONE: Self = Self {
            base: std::ptr::null(),
            far: false,
        };

        /// The `span` bytes at `base`, read by the kernel in step with its own rows.
        fn ahead(base: *const u8, span: usize) -> Self {
            Self {
                base,
                far: span > FAR_SPAN,
            }
        }
    }

    /// Prefetch `len` bytes at `pf`'s base + `off` (nothing for no base). Prefetches
    /// never fault, so the address may lie past the matrix (`wrapping_add`, no UB).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn prefetch(pf: Prefetch, off: usize, len: usize) {
        if pf.base.is_null() {
            return;
        }
        let p = pf.base.wrapping_add(off);
        let mut o = 0;
        while o < len {
            let at = p.wrapping_add(o) as *const i8;
            if pf.far {
                _mm_prefetch::<_MM_HINT_T1>(at);
            } else {
                _mm_prefetch::<_MM_HINT_T0>(at);
            }
            o += 64;
        }
    }

    /// Horizontal sum of 8 floats, in ggml's order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(x: __m256) -> f32 {
        let mut r = _mm256_extractf128_ps::<1>(x);
        r = _mm_add_ps(r, _mm256_castps256_ps128(x));
        r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// 16 bytes of packed nibbles -> 32 bytes: low nibbles first, then high ones.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // Both halves get the 16 bytes (a load, no shuffle uop); the high half shifts
        // by 4 with one variable shift instead of a shift plus an insert.
        let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
        let v = _mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0));
        _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
    }

    /// 32 bits (little endian at `p`) -> 32 bytes, 0xff where the bit is set.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
        let x = (p as *const u32).read_unaligned();
        let spread = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), spread);
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// Pairwise int32 sums (8 lanes) of signed `x` (abs value `ax`) times signed `y`,
    /// as float: ggml's `mul_sum_i8_pairs_float` with `|x|` hoisted out.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mul_sum_i8(ax: __m256i, x: __m256i, y: __m256i) -> __m256 {
        let dot = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(dot, _mm256_set1_epi16(1)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn finish<const MR: usize>(acc: [__m256; MR]) -> [f32; MR] {
        let mut out = [0f32; MR];
        for a in 0..MR {
            out[a] = hsum(acc[a]);
        }
        out
    }

    // ------------------------------------------------- 32-value blocks x Q8_0/Q8_1
    //
    // Kernels take `NR` weight rows and `MR` activation rows and return the `NR x MR`
    // dots; each pair keeps its own accumulator, so the shape only changes which work
    // overlaps, never the result. (4, 1) serves decode: four independent `fma` chains
    // instead of one latency-bound chain. (1, 4) serves batches: one weight unpack feeds
    // four activation rows.

    /// A kernel for a signed 32-value kind: `$unpack(block)` gives the 32 weight quants
    /// as i8 (a macro rather than a closure so the unpacking inlines with AVX2 enabled).
    macro_rules! signed_kernel {
        ($name:ident, $stride:expr, |$b:ident| $unpack:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $name<const NR: usize, const MR: usize>(
                lut: Lut,
                pf: Prefetch,
                w: [*const u8; NR],
                nb: usize,
                x: [Q8Ptr; MR],
            ) -> [[f32; MR]; NR] {
                let mut acc = [[_mm256_setzero_ps(); MR]; NR];
                for ib in 0..nb {
                    prefetch(pf, ib * NR * $stride, NR * $stride);
                    for r in 0..NR {
                        let $b = w[r].add(ib * $stride);
                        // Broadcast both scales and multiply as vectors: the same f32
                        // product as `dw * dy`, one ALU op fewer per pair.
                        let dw = _mm256_set1_ps(lut.at($b));
                        let qx = $unpack;
                        let ax = _mm256_sign_epi8(qx, qx);
                        for a in 0..MR {
                            let y = &*x[a].b.add(ib);
                            let q = mul_sum_i8(ax, qx, load(y.qs.as_ptr()));
                            let d = _mm256_mul_ps(dw, _mm256_set1_ps(y.d));
                            acc[r][a] = _mm256_fmadd_ps(d, q, acc[r][a]);
                        }
                    }
                }
                acc.map(|row| finish(row))
            }
        };
    }

    /// A 32-value kind in the chain order (one `fma` chain per pair over exact block
    /// totals, as [`crate::scalar`] and [`crate::kgemm`]): `$unpack` gives a block's 32
    /// weight codes, `$lanes` the pair's 8 i32 lanes of `sum(q * y)` from them, the
    /// activation block `$y` and (decode only) its [`Q8Aux`] pointer `$aux`.
    macro_rules! chain_kernel {
        ($name:ident, $stride:expr, |$b:ident| $unpack:expr, |$code:ident, $y:ident, $aux:ident| $lanes:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $name<const NR: usize, const MR: usize>(
                lut: Lut,
                pf: Prefetch,
                w: [*const u8; NR],
                nb: usize,
                x: [Q8Ptr; MR],
            ) -> [[f32; MR]; NR] {
                const { assert!(NR * MR <= 4) };
                let mut acc = _mm_setzero_ps();
                for ib in 0..nb {
                    prefetch(pf, ib * NR * $stride, NR * $stride);
                    let mut ints = [_mm256_setzero_si256(); 4];
                    let mut dw = [0f32; NR];
                    for r in 0..NR {
                        let $b = w[r].add(ib * $stride);
                        dw[r] = lut.at($b);
                        let $code = $unpack;
                        for a in 0..MR {
                            let $y = &*x[a].b.add(ib);
                            let $aux = x[a].aux.wrapping_add(ib);
                            ints[r * MR + a] = $lanes;
                        }
                    }
                    let dy: [f32; MR] = std::array::from_fn(|a| (*x[a].b.add(ib)).d);
                    let d = pair_scales::<NR, MR>(dw, dy);
                    acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(totals4(ints)), acc);
                }
                pair_lanes::<NR, MR>(acc)
            }
        };
    }

    /// Lanes of `sum(q * y)` for codes stored as `q + offset` (Q4_0: 8, Q5_0: 16):
    /// `maddubs(code, y)` summed per 4 bytes, minus the activation block's `corr`
    /// (`offset * sum(y)` per lane), without ggml's two sign fix-ups per block and row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn offset_lanes(code: __m256i, y: &Q8Block, aux: *const Q8Aux) -> __m256i {
        let dot = _mm256_maddubs_epi16(code, load(y.qs.as_ptr()));
        _mm256_sub_epi32(
            _mm256_madd_epi16(dot, _mm256_set1_epi16(1)),
            _mm256_loadu_si256((*aux).corr.as_ptr() as *const __m256i),
        )
    }

    /// Lanes of `sum(q * y)` for signed codes (ggml's sign trick).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn signed_lanes(q: __m256i, y: &Q8Block) -> __m256i {
        let dot = _mm256_maddubs_epi16(
            _mm256_sign_epi8(q, q),
            _mm256_sign_epi8(load(y.qs.as_ptr()), q),
        );
        _mm256_madd_epi16(dot, _mm256_set1_epi16(1))
    }

    // Decode (aux filled): unsigned codes minus the activations' correction.
    chain_kernel!(q4_0, 18, |b| nibbles(b.add(2)), |c, y, aux| offset_lanes(
        c, y, aux
    ));

    // The fifth bit adds 16 to the nibble.
    chain_kernel!(
        q5_0,
        22,
        |b| _mm256_or_si256(
            nibbles(b.add(6)),
            _mm256_and_si256(bits_to_bytes(b.add(2)), _mm256_set1_epi8(0x10))
        ),
        |c, y, aux| offset_lanes(c, y, aux)
    );

    signed_kernel!(q8_0, 34, |b| load(b.add(2) as *const i8));

    // Batches use the signed forms for Q4_0/Q5_0 (same integers, same float ops): with
    // several activation rows per weight block the sign fix-up of the weights is
    // amortized, and the extra `corr` load per pair costs more than the `vpsignb` saved.
    chain_kernel!(
        q4_0_signed,
        18,
        |b| _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8)),
        |q, y, _aux| signed_lanes(q, y)
    );

    // A clear fifth bit means value - 16: set the high nibble to 0xf.
    chain_kernel!(
        q5_0_signed,
        22,
        |b| _mm256_or_si256(
            nibbles(b.add(6)),
            _mm256_andnot_si256(bits_to_bytes(b.add(2)), _mm256_set1_epi8(0xf0u8 as i8))
        ),
        |q, y, _aux| signed_lanes(q, y)
    );

    /// `kvalues_mxfp4` in both 128-bit halves, for `vpshufb` on nibbles.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mxfp4_table(offset: i8) -> __m256i {
        let v: [i8; 16] = std::array::from_fn(|i| crate::reference::MXFP4_VALUES[i] + offset);
        _mm256_broadcastsi128_si256(_mm_loadu_si128(v.as_ptr() as *const __m128i))
    }

    /// MXFP4 x Q8_0: the nibbles looked up as their values, the scale `2^(e - 128)` read
    /// from its exponent byte; the float chain of [`chain_kernel`]'s kinds. Decode
    /// (`OFFSET`, the activations' `corr` filled) looks them up plus 12, unsigned, and
    /// subtracts `12 * sum(y)`; batches use the signed values. Same integers either way.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mxfp4_chain<const NR: usize, const MR: usize, const OFFSET: bool>(
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [Q8Ptr; MR],
    ) -> [[f32; MR]; NR] {
        const { assert!(NR * MR <= 4) };
        let table = mxfp4_table(if OFFSET { 12 } else { 0 });
        let mut acc = _mm_setzero_ps();
        for ib in 0..nb {
            prefetch(pf, ib * NR * 17, NR * 17);
            let mut ints = [_mm256_setzero_si256(); 4];
            let mut dw = [0f32; NR];
            for r in 0..NR {
                let b = w[r].add(ib * 17);
                dw[r] = crate::reference::e8m0_half(*b);
                let q = _mm256_shuffle_epi8(table, nibbles(b.add(1)));
                for a in 0..MR {
                    let y = &*x[a].b.add(ib);
                    ints[r * MR + a] = if OFFSET {
                        offset_lanes(q, y, x[a].aux.wrapping_add(ib))
                    } else {
                        signed_lanes(q, y)
                    };
                }
            }
            let dy: [f32; MR] = std::array::from_fn(|a| (*x[a].b.add(ib)).d);
            let d = pair_scales::<NR, MR>(dw, dy);
            acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(totals4(ints)), acc);
        }
        pair_lanes::<NR, MR>(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mxfp4<const NR: usize, const MR: usize>(
        _lut: Lut,
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [Q8Ptr; MR],
    ) -> [[f32; MR]; NR] {
        mxfp4_chain::<NR, MR, false>(pf, w, nb, x)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mxfp4_decode<const NR: usize, const MR: usize>(
        _lut: Lut,
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [Q8Ptr; MR],
    ) -> [[f32; MR]; NR] {
        mxfp4_chain::<NR, MR, true>(pf, w, nb, x)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1<const NR: usize, const MR: usize>(
        lut: Lut,
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [Q8Ptr; MR],
    ) -> [[f32; MR]; NR] {
        const { assert!(NR * MR <= 4) };
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm_setzero_ps();
        for ib in 0..nb {
            prefetch(pf, ib * NR * 20, NR * 20);
            let mut ints = [_mm256_setzero_si256(); 4];
            let mut dw = [0f32; NR];
            let mut mw = [0f32; NR];
            for r in 0..NR {
                let b = w[r].add(ib * 20);
                dw[r] = lut.at(b);
                mw[r] = lut.at(b.add(2));
                let qx = nibbles(b.add(4));
                for a in 0..MR {
                    let y = &*x[a].b.add(ib);
                    let dot = _mm256_maddubs_epi16(qx, load(y.qs.as_ptr()));
                    ints[r * MR + a] = _mm256_madd_epi16(dot, ones);
                }
            }
            let dy: [f32; MR] = std::array::from_fn(|a| (*x[a].b.add(ib)).d);
            let sy: [f32; MR] = std::array::from_fn(|a| (*x[a].b.add(ib)).s);
            let d = pair_scales::<NR, MR>(dw, dy);
            acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(totals4(ints)), acc);
            let (m, s) = pair_vectors::<NR, MR>(mw, sy);
            acc = _mm_fmadd_ps(m, s, acc);
        }
        pair_lanes::<NR, MR>(acc)
    }

    // ------------------------------------------------------------ K-quants x Q8_K

    /// Scales (16-bit lanes `[sc0..sc7]`, copied to both 128-bit halves) and mins (16-bit,
    /// 128 bits) of a Q4_K/Q5_K block whose 12 packed scale bytes start at `p`; ggml's
    /// `utmp` shuffle done in vector registers (reads 16 bytes: the quants follow).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k4_scales_mins(p: *const u8) -> (__m256i, __m128i) {
        let v = _mm_loadu_si128(p as *const __m128i); // u32 lanes u0, u1, u2, (quants)
        let k1 = _mm_set1_epi32(0x3f3f_3f3f);
        let k2 = _mm_set1_epi32(0x0f0f_0f0f);
        let k3 = _mm_set1_epi32(0x0303_0303);
        // Lanes 0, 1: u0 & K1 (scales 0..3), u1 & K1 (mins 0..3).
        let low = _mm_and_si128(v, k1);
        // Lanes 0, 1: (u2 & K2) | ((u0 >> 6) & K3) << 4 (scales 4..7) and
        // ((u2 >> 4) & K2) | ((u1 >> 6) & K3) << 4 (mins 4..7).
        let u2 = _mm_shuffle_epi32::<0b00_00_10_10>(v);
        let lo4 = _mm_and_si128(_mm_srlv_epi32(u2, _mm_set_epi32(0, 0, 4, 0)), k2);
        let hi2 = _mm_slli_epi32::<4>(_mm_and_si128(_mm_srli_epi32::<6>(v), k3));
        let high = _mm_or_si128(lo4, hi2);
        // [scales 0..3, scales 4..7, mins 0..3, mins 4..7]
        let packed = _mm_unpacklo_epi32(low, high);
        let sc = _mm_cvtepu8_epi16(packed);
        let mins = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(packed, packed));
        (_mm256_broadcastsi128_si256(sc), mins)
    }

    /// Scale `j` of a `k4_scales_mins` vector broadcast to all 16-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k4_scale(scales: __m256i, j: usize) -> __m256i {
        let lo = (2 * j) as i8;
        _mm256_shuffle_epi8(
            scales,
            _mm256_set1_epi16(i16::from_le_bytes([lo as u8, lo as u8 + 1])),
        )
    }

    /// `min_j * (bsum_2j + bsum_2j+1)` pairs as 4 int32 lanes (ggml's `prod`); the pair
    /// sums come precomputed with the activations.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k4_min_products(mins: __m128i, y: &Q8KBlock) -> __m128i {
        _mm_madd_epi16(
            mins,
            _mm_loadu_si128(y.pair_sums.as_ptr() as *const __m128i),
        )
    }

    /// Exact totals of up to four vectors of 8 i32 lanes, one per lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn totals4(v: [__m256i; 4]) -> __m128i {
        let c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
        _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
    }

    /// Exact totals of up to four vectors of 4 i32 lanes, one per lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn totals4_128(v: [__m128i; 4]) -> __m128i {
        _mm_hadd_epi32(_mm_hadd_epi32(v[0], v[1]), _mm_hadd_epi32(v[2], v[3]))
    }

    /// The pairs of an `NR x MR` kernel (at most 4) as lanes `r * MR + a`: `w[r]` and
    /// `y[a]` spread over those lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair_vectors<const NR: usize, const MR: usize>(
        w: [f32; NR],
        y: [f32; MR],
    ) -> (__m128, __m128) {
        // Built in registers (lane inserts): a vector load of values just stored one by
        // one would stall on store forwarding.
        let lane = |p: usize| {
            if p < NR * MR {
                (w[p / MR], y[p % MR])
            } else {
                (0.0, 0.0)
            }
        };
        let (l0, l1, l2, l3) = (lane(0), lane(1), lane(2), lane(3));
        (
            _mm_setr_ps(l0.0, l1.0, l2.0, l3.0),
            _mm_setr_ps(l0.1, l1.1, l2.1, l3.1),
        )
    }

    /// The f32 products `dw[r] * dy[a]` in lanes `r * MR + a`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair_scales<const NR: usize, const MR: usize>(
        dw: [f32; NR],
        dy: [f32; MR],
    ) -> __m128 {
        let (w, y) = pair_vectors::<NR, MR>(dw, dy);
        _mm_mul_ps(w, y)
    }

    /// Lanes `r * MR + a` of `acc` as `[r][a]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair_lanes<const NR: usize, const MR: usize>(acc: __m128) -> [[f32; MR]; NR] {
        let mut l = [0f32; 4];
        _mm_storeu_ps(l.as_mut_ptr(), acc);
        std::array::from_fn(|r| std::array::from_fn(|a| l[r * MR + a]))
    }

    // The K-quant kernels follow the float order of [`crate::scalar::k_chain`]: the
    // integer sums of a block are totalled exactly, and each (weight row, activation
    // row) pair, one lane of a 4-lane vector, adds them to its own `fma` chain. So the
    // batched GEMM (`crate::kgemm`) and these kernels give the same bits.

    /// Q4_K and, with `FIVE`, Q5_K (whose fifth bits add 16 to the nibbles): the same
    /// scales, minimums and chain step.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k4_row<const NR: usize, const MR: usize, const FIVE: bool>(
        lut: Lut,
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [*const Q8KBlock; MR],
    ) -> [[f32; MR]; NR] {
        const { assert!(NR * MR <= 4) };
        let stride = if FIVE { 176 } else { 144 };
        let m4 = _mm256_set1_epi8(0x0f);
        let m1 = _mm256_set1_epi8(1);
        let mut acc = _mm_setzero_ps();
        for i in 0..nb {
            prefetch(pf, i * NR * stride, NR * stride);
            let mut ints = [_mm256_setzero_si256(); 4];
            let mut mins_p = [_mm_setzero_si128(); 4];
            let mut dw = [0f32; NR];
            let mut dminw = [0f32; NR];
            for r in 0..NR {
                let b = w[r].add(i * stride);
                let (scales, mins) = k4_scales_mins(b.add(4));
                let qs = b.add(if FIVE { 48 } else { 16 });
                let hbits = _mm256_loadu_si256(b.add(16) as *const __m256i);
                for j in 0..4 {
                    let scale_l = k4_scale(scales, 2 * j);
                    let scale_h = k4_scale(scales, 2 * j + 1);
                    let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                    let mut ql = _mm256_and_si256(bits, m4);
                    let mut qh = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                    if FIVE {
                        let h0 = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32));
                        let h1 = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32 + 1));
                        ql = _mm256_add_epi8(ql, _mm256_slli_epi16::<4>(_mm256_and_si256(h0, m1)));
                        qh = _mm256_add_epi8(qh, _mm256_slli_epi16::<4>(_mm256_and_si256(h1, m1)));
                    }
                    for a in 0..MR {
                        let q8 = (*x[a].add(i)).qs.as_ptr().add(64 * j);
                        let pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(ql, load(q8)));
                        let ph =
                            _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(qh, load(q8.add(32))));
                        let p = &mut ints[r * MR + a];
                        *p = _mm256_add_epi32(*p, _mm256_add_epi32(pl, ph));
                    }
                }
                for a in 0..MR {
                    mins_p[r * MR + a] = k4_min_products(mins, &*x[a].add(i));
                }
                dw[r] = lut.at(b);
                dminw[r] = lut.at(b.add(2));
            }
            let dy: [f32; MR] = std::array::from_fn(|a| (*x[a].add(i)).d);
            let d = pair_scales::<NR, MR>(dw, dy);
            let dmin = pair_scales::<NR, MR>(dminw, dy);
            acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(totals4(ints)), acc);
            acc = _mm_fnmadd_ps(dmin, _mm_cvtepi32_ps(totals4_128(mins_p)), acc);
        }
        pair_lanes::<NR, MR>(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_k<const NR: usize, const MR: usize>(
        lut: Lut,
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [*const Q8KBlock; MR],
    ) -> [[f32; MR]; NR] {
        k4_row::<NR, MR, false>(lut, pf, w, nb, x)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_k<const NR: usize, const MR: usize>(
        lut: Lut,
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [*const Q8KBlock; MR],
    ) -> [[f32; MR]; NR] {
        k4_row::<NR, MR, true>(lut, pf, w, nb, x)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k<const NR: usize, const MR: usize>(
        lut: Lut,
        pf: Prefetch,
        w: [*const u8; NR],
        nb: usize,
        x: [*const Q8KBlock; MR],
    ) -> [[f32; MR]; NR] {
        const { assert!(NR * MR <= 4) };
        let m4 = _mm256_set1_epi8(0x0f);
        let m3 = _mm256_set1_epi8(3);
        let mut acc = _mm_setzero_ps();
        for i in 0..nb {
            prefetch(pf, i * NR * 210, NR * 210);
            let mut ints = [_mm256_setzero_si256(); 4];
            let mut dw = [0f32; NR];
            for r in 0..NR {
                let b = w[r].add(i * 210);
                // All 16 scales widened once: j = 0's eight in the low lane, j = 1's in the
                // high one (also the factors of the offset's correction below).
                let sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
                for j in 0..2 {
                    let ql = b.add(64 * j);
                    let bits1 = _mm256_loadu_si256(ql as *const __m256i);
                    let bits2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                    let hb = _mm256_loadu_si256(b.add(128 + 32 * j) as *const __m256i);
                    let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(hb, m3));
                    let h1 =
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(hb), m3));
                    let h2 =
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(hb), m3));
                    let h3 =
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(hb), m3));
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(bits1, m4), h0),
                        _mm256_or_si256(_mm256_and_si256(bits2, m4), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits1), m4), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits2), m4), h3),
                    ];
                    // This j's eight scales in both lanes (an in-lane shuffle then picks the
                    // 16-value halves of group k: [lo x 8 lanes, hi x 8 lanes]).
                    let both = if j == 0 {
                        _mm256_permute2x128_si256::<0x00>(sc_all, sc_all)
                    } else {
                        _mm256_permute2x128_si256::<0x11>(sc_all, sc_all)
                    };
                    let mut s = [_mm256_setzero_si256(); 4];
                    for k in 0..4 {
                        let lo = (4 * k) as u8;
                        let l = i16::from_le_bytes([lo, lo + 1]);
                        let h = i16::from_le_bytes([lo + 2, lo + 3]);
                        let pick = _mm256_set_epi16(h, h, h, h, h, h, h, h, l, l, l, l, l, l, l, l);
                        s[k] = _mm256_shuffle_epi8(both, pick);
                    }
                    for a in 0..MR {
                        let q8 = (*x[a].add(i)).qs.as_ptr().add(128 * j);
                        for k in 0..4 {
                            let y = load(q8.add(32 * k));
                            let p = _mm256_maddubs_epi16(q[k], y);
                            let t = &mut ints[r * MR + a];
                            *t = _mm256_add_epi32(*t, _mm256_madd_epi16(s[k], p));
                        }
                    }
                }
                // The codes are stored with an offset of 32: take 32 x the scaled sums of
                // each 16 activations back, exactly (the same integer total).
                for a in 0..MR {
                    let bsums = _mm256_loadu_si256((*x[a].add(i)).bsums.as_ptr() as *const __m256i);
                    let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc_all, bsums));
                    let t = &mut ints[r * MR + a];
                    *t = _mm256_sub_epi32(*t, off);
                }
                dw[r] = lut.at(b.add(208));
            }
            let dy: [f32; MR] = std::array::from_fn(|a| (*x[a].add(i)).d);
            let d = pair_scales::<NR, MR>(dw, dy);
            acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(totals4(ints)), acc);
        }
        pair_lanes::<NR, MR>(acc)
    }

    // --------------------------------------------------------------- F16 / F32

    macro_rules! float_kernel {
        ($name:ident, $elem:ty, |$wp:ident, $i:ident| $load8:expr, |$wk:ident, $k:ident| $load1:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $name<const NR: usize, const MR: usize>(
                _lut: Lut,
                pf: Prefetch,
                w: [*const u8; NR],
                n: usize,
                x: [*const f32; MR],
            ) -> [[f32; MR]; NR] {
                let mut acc0 = [[_mm256_setzero_ps(); MR]; NR];
                let mut acc1 = [[_mm256_setzero_ps(); MR]; NR];
                let mut i = 0;
                let esize = std::mem::size_of::<$elem>();
                while i + 16 <= n {
                    prefetch(pf, i * NR * esize, NR * 16 * esize);
                    for r in 0..NR {
                        let $wp = w[r];
                        let w0 = {
                            let $i = i;
                            $load8
                        };
                        let w1 = {
                            let $i = i + 8;
                            $load8
                        };
                        for a in 0..MR {
                            acc0[r][a] =
                                _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[a].add(i)), acc0[r][a]);
                            acc1[r][a] =
                                _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[a].add(i + 8)), acc1[r][a]);
                        }
                    }
                    i += 16;
                }
                let mut out = [[0f32; MR]; NR];
                for r in 0..NR {
                    let $wk = w[r];
                    for a in 0..MR {
                        out[r][a] = hsum(_mm256_add_ps(acc0[r][a], acc1[r][a]));
                        for $k in i..n {
                            out[r][a] += $load1 * *x[a].add($k);
                        }
                    }
                }
                out
            }
        };
    }

    float_kernel!(
        f16_row,
        u16,
        |wp, i| _mm256_cvtph_ps(_mm_loadu_si128((wp as *const u16).add(i) as *const __m128i)),
        |wk, k| crate::f16::f16_to_f32((wk as *const u16).add(k).read_unaligned())
    );

    float_kernel!(
        bf16_row,
        u16,
        |wp, i| _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((wp as *const u16).add(i) as *const __m128i)),
            16
        )),
        |wk, k| crate::f16::bf16_to_f32((wk as *const u16).add(k).read_unaligned())
    );

    float_kernel!(
        f32_row,
        f32,
        |wp, i| _mm256_loadu_ps((wp as *const f32).add(i)),
        |wk, k| (wk as *const f32).add(k).read_unaligned()
    );
}
