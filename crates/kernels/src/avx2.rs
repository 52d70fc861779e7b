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

#[cfg(target_arch = "x86_64")]
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn available() -> bool {
    false
}

/// `out[i] = dot(w, activation row a0 + i)`. Callers check [`available`] first.
#[cfg(target_arch = "x86_64")]
pub(crate) fn row_dots(kind: QuantKind, w: &[u8], acts: &Acts, a0: usize, out: &mut [f32]) {
    assert!(
        available(),
        "AVX2 kernels called on a CPU without AVX2/FMA/F16C"
    );
    // SAFETY: the CPU features were checked above; `imp::row_dots` keeps its pointers
    // within `w` and the activation rows `a0..a0 + out.len()` of `acts`.
    unsafe { imp::row_dots(kind, w, acts, a0, out) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn row_dots(kind: QuantKind, w: &[u8], acts: &Acts, a0: usize, out: &mut [f32]) {
    crate::scalar::row_dots(kind, w, acts, a0, out)
}

#[cfg(target_arch = "x86_64")]
// Kernels index several per-row arrays with the same activation index.
#[allow(clippy::needless_range_loop)]
mod imp {
    use std::arch::x86_64::*;

    use crate::act::{Q8Block, Q8KBlock};
    use crate::matrix::Acts;
    use crate::QuantKind;

    /// Call `$kernel::<MR>` with `MR = $n` activation pointers `$ptr(0..MR)`.
    macro_rules! group {
        ($kernel:ident, $lut:expr, $w:expr, $len:expr, $ptr:expr, $out:expr) => {{
            let out: &mut [f32] = $out;
            let (lut, w, len) = ($lut, $w, $len);
            match out.len() {
                1 => out.copy_from_slice(&$kernel::<1>(lut, w, len, [$ptr(0)])),
                2 => out.copy_from_slice(&$kernel::<2>(lut, w, len, [$ptr(0), $ptr(1)])),
                3 => out.copy_from_slice(&$kernel::<3>(lut, w, len, [$ptr(0), $ptr(1), $ptr(2)])),
                _ => out.copy_from_slice(&$kernel::<4>(
                    lut,
                    w,
                    len,
                    [$ptr(0), $ptr(1), $ptr(2), $ptr(3)],
                )),
            }
        }};
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn row_dots(
        kind: QuantKind,
        w: &[u8],
        acts: &Acts,
        a0: usize,
        out: &mut [f32],
    ) {
        let wp = w.as_ptr();
        let lut = Lut(crate::f16::f16_table().as_ptr());
        for (g, res) in out.chunks_mut(4).enumerate() {
            let a = a0 + 4 * g;
            match *acts {
                Acts::Q8 { blocks, per_row } => {
                    let ptr = |i: usize| -> *const Q8Block { blocks[(a + i) * per_row..].as_ptr() };
                    match kind {
                        QuantKind::Q4_0 => group!(q4_0, lut, wp, per_row, ptr, res),
                        QuantKind::Q4_1 => group!(q4_1, lut, wp, per_row, ptr, res),
                        QuantKind::Q5_0 => group!(q5_0, lut, wp, per_row, ptr, res),
                        _ => group!(q8_0, lut, wp, per_row, ptr, res),
                    }
                }
                Acts::Q8K { blocks, per_row } => {
                    let ptr =
                        |i: usize| -> *const Q8KBlock { blocks[(a + i) * per_row..].as_ptr() };
                    match kind {
                        QuantKind::Q4K => group!(q4_k, lut, wp, per_row, ptr, res),
                        QuantKind::Q5K => group!(q5_k, lut, wp, per_row, ptr, res),
                        _ => group!(q6_k, lut, wp, per_row, ptr, res),
                    }
                }
                Acts::F32 { data, cols } => {
                    let ptr = |i: usize| -> *const f32 { data[(a + i) * cols..].as_ptr() };
                    match kind {
                        QuantKind::F16 => group!(f16_row, lut, wp, cols, ptr, res),
                        _ => group!(f32_row, lut, wp, cols, ptr, res),
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
        let t = _mm_loadu_si128(p as *const __m128i);
        let v = _mm256_set_m128i(_mm_srli_epi16::<4>(t), t);
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

    /// Same for unsigned `x` (no sign trick).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mul_sum_u8(x: __m256i, y: __m256i) -> __m256 {
        let dot = _mm256_maddubs_epi16(x, y);
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

    /// A kernel for a signed 32-value kind: `$unpack(block)` gives the 32 weight quants
    /// as i8 (a macro rather than a closure so the unpacking inlines with AVX2 enabled).
    macro_rules! signed_kernel {
        ($name:ident, $stride:expr, |$b:ident| $unpack:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $name<const MR: usize>(
                lut: Lut,
                w: *const u8,
                nb: usize,
                x: [*const Q8Block; MR],
            ) -> [f32; MR] {
                let mut acc = [_mm256_setzero_ps(); MR];
                for ib in 0..nb {
                    let $b = w.add(ib * $stride);
                    let dw = lut.at($b);
                    let qx = $unpack;
                    let ax = _mm256_sign_epi8(qx, qx);
                    for a in 0..MR {
                        let y = &*x[a].add(ib);
                        let q = mul_sum_i8(ax, qx, load(y.qs.as_ptr()));
                        acc[a] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), q, acc[a]);
                    }
                }
                finish(acc)
            }
        };
    }

    signed_kernel!(q4_0, 18, |b| _mm256_sub_epi8(
        nibbles(b.add(2)),
        _mm256_set1_epi8(8)
    ));

    // A clear fifth bit means value - 16: set the high nibble to 0xf.
    signed_kernel!(q5_0, 22, |b| _mm256_or_si256(
        nibbles(b.add(6)),
        _mm256_andnot_si256(bits_to_bytes(b.add(2)), _mm256_set1_epi8(0xf0u8 as i8))
    ));

    signed_kernel!(q8_0, 34, |b| load(b.add(2) as *const i8));

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1<const MR: usize>(
        lut: Lut,
        w: *const u8,
        nb: usize,
        x: [*const Q8Block; MR],
    ) -> [f32; MR] {
        let mut acc = [_mm256_setzero_ps(); MR];
        let mut summs = [0f32; MR];
        for ib in 0..nb {
            let b = w.add(ib * 20);
            let dw = _mm256_set1_ps(lut.at(b));
            let mw = lut.at(b.add(2));
            let qx = nibbles(b.add(4));
            for a in 0..MR {
                let y = &*x[a].add(ib);
                summs[a] += mw * y.s;
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(y.d));
                let q = mul_sum_u8(qx, load(y.qs.as_ptr()));
                acc[a] = _mm256_fmadd_ps(d, q, acc[a]);
            }
        }
        let mut out = finish(acc);
        for a in 0..MR {
            out[a] += summs[a];
        }
        out
    }

    // ------------------------------------------------------------ K-quants x Q8_K

    /// The 8 six-bit scales and 8 mins of a Q4_K/Q5_K block, as bytes
    /// `[sc0..sc7, m0..m7]` in four u32 (ggml's `utmp` shuffle).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k4_scales(p: *const u8) -> [u32; 4] {
        const K1: u32 = 0x3f3f_3f3f;
        const K2: u32 = 0x0f0f_0f0f;
        const K3: u32 = 0x0303_0303;
        let r = |i: usize| unsafe { (p.add(4 * i) as *const u32).read_unaligned() };
        let (u0, u1, u2) = (r(0), r(1), r(2));
        [
            u0 & K1,
            (u2 & K2) | (((u0 >> 6) & K3) << 4),
            u1 & K1,
            ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4),
        ]
    }

    /// `min_j * (bsum_2j + bsum_2j+1)` pairs as 4 int32 lanes (ggml's `prod`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k4_min_products(mins: __m128i, y: &Q8KBlock) -> __m128i {
        let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let pairs = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256::<1>(bsums),
        );
        _mm_madd_epi16(mins, pairs)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_k<const MR: usize>(
        lut: Lut,
        w: *const u8,
        nb: usize,
        x: [*const Q8KBlock; MR],
    ) -> [f32; MR] {
        let m4 = _mm256_set1_epi8(0x0f);
        let mut acc = [_mm256_setzero_ps(); MR];
        let mut acc_m = [_mm_setzero_ps(); MR];
        for i in 0..nb {
            let b = w.add(i * 144);
            let dw = lut.at(b);
            let dminw = lut.at(b.add(2));
            let u = k4_scales(b.add(4));
            let sc = u[0].to_le_bytes().into_iter().chain(u[1].to_le_bytes());
            let mut scales = [0i16; 8];
            for (s, v) in scales.iter_mut().zip(sc) {
                *s = v as i16;
            }
            let mins = _mm256_extracti128_si256::<1>(_mm256_cvtepu8_epi16(_mm_set_epi32(
                u[3] as i32,
                u[2] as i32,
                u[1] as i32,
                u[0] as i32,
            )));
            let mut sumi = [_mm256_setzero_si256(); MR];
            for j in 0..4 {
                let scale_l = _mm256_set1_epi16(scales[2 * j]);
                let scale_h = _mm256_set1_epi16(scales[2 * j + 1]);
                let bits = _mm256_loadu_si256(b.add(16 + 32 * j) as *const __m256i);
                let ql = _mm256_and_si256(bits, m4);
                let qh = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                for a in 0..MR {
                    let q8 = (*x[a].add(i)).qs.as_ptr().add(64 * j);
                    let pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(ql, load(q8)));
                    let ph = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(qh, load(q8.add(32))));
                    sumi[a] = _mm256_add_epi32(sumi[a], _mm256_add_epi32(pl, ph));
                }
            }
            for a in 0..MR {
                let y = &*x[a].add(i);
                let d = y.d * dw;
                let dmin = -y.d * dminw;
                let prod = k4_min_products(mins, y);
                acc_m[a] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[a]);
                acc[a] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[a]), acc[a]);
            }
        }
        let mut out = finish(acc);
        for a in 0..MR {
            let mut m = acc_m[a];
            m = _mm_add_ps(m, _mm_movehl_ps(m, m));
            m = _mm_add_ss(m, _mm_movehdup_ps(m));
            out[a] += _mm_cvtss_f32(m);
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_k<const MR: usize>(
        lut: Lut,
        w: *const u8,
        nb: usize,
        x: [*const Q8KBlock; MR],
    ) -> [f32; MR] {
        let m4 = _mm256_set1_epi8(0x0f);
        let m1 = _mm256_set1_epi8(1);
        let mut acc = [_mm256_setzero_ps(); MR];
        let mut summs = [0f32; MR];
        for i in 0..nb {
            let b = w.add(i * 176);
            let dw = lut.at(b);
            let dminw = lut.at(b.add(2));
            let u = k4_scales(b.add(4));
            let sc = u[0].to_le_bytes().into_iter().chain(u[1].to_le_bytes());
            let mut scales = [0i16; 8];
            for (s, v) in scales.iter_mut().zip(sc) {
                *s = v as i16;
            }
            let mins = _mm256_extracti128_si256::<1>(_mm256_cvtepu8_epi16(_mm_set_epi32(
                u[3] as i32,
                u[2] as i32,
                u[1] as i32,
                u[0] as i32,
            )));
            let hbits = _mm256_loadu_si256(b.add(16) as *const __m256i);
            let mut sumi = [_mm256_setzero_si256(); MR];
            for j in 0..4 {
                let scale_0 = _mm256_set1_epi16(scales[2 * j]);
                let scale_1 = _mm256_set1_epi16(scales[2 * j + 1]);
                let bits = _mm256_loadu_si256(b.add(48 + 32 * j) as *const __m256i);
                let h0 = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32));
                let h1 = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32 + 1));
                let q0 = _mm256_add_epi8(
                    _mm256_and_si256(bits, m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(h0, m1)),
                );
                let q1 = _mm256_add_epi8(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(h1, m1)),
                );
                for a in 0..MR {
                    let q8 = (*x[a].add(i)).qs.as_ptr().add(64 * j);
                    let p0 = _mm256_madd_epi16(scale_0, _mm256_maddubs_epi16(q0, load(q8)));
                    let p1 = _mm256_madd_epi16(scale_1, _mm256_maddubs_epi16(q1, load(q8.add(32))));
                    sumi[a] = _mm256_add_epi32(sumi[a], _mm256_add_epi32(p0, p1));
                }
            }
            for a in 0..MR {
                let y = &*x[a].add(i);
                let d = y.d * dw;
                let dmin = -y.d * dminw;
                let prod = k4_min_products(mins, y);
                let zero = _mm_setzero_si128();
                let total = _mm_hadd_epi32(_mm_hadd_epi32(prod, zero), zero);
                summs[a] += dmin * _mm_cvtsi128_si32(total) as f32;
                acc[a] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[a]), acc[a]);
            }
        }
        let mut out = finish(acc);
        for a in 0..MR {
            out[a] += summs[a];
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k<const MR: usize>(
        lut: Lut,
        w: *const u8,
        nb: usize,
        x: [*const Q8KBlock; MR],
    ) -> [f32; MR] {
        let m4 = _mm256_set1_epi8(0x0f);
        let m3 = _mm256_set1_epi8(3);
        let m32 = _mm256_set1_epi8(32);
        let mut acc = [_mm256_setzero_ps(); MR];
        for i in 0..nb {
            let b = w.add(i * 210);
            let dw = lut.at(b.add(208));
            let sc = b.add(192) as *const i8;
            let mut sumi = [_mm256_setzero_si256(); MR];
            for j in 0..2 {
                let ql = b.add(64 * j);
                let bits1 = _mm256_loadu_si256(ql as *const __m256i);
                let bits2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                let hb = _mm256_loadu_si256(b.add(128 + 32 * j) as *const __m256i);
                let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(hb, m3));
                let h1 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(hb), m3));
                let h2 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(hb), m3));
                let h3 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(hb), m3));
                let q = [
                    _mm256_or_si256(_mm256_and_si256(bits1, m4), h0),
                    _mm256_or_si256(_mm256_and_si256(bits2, m4), h1),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits1), m4), h2),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits2), m4), h3),
                ];
                let mut s = [_mm256_setzero_si256(); 4];
                for k in 0..4 {
                    let lo = *sc.add(8 * j + 2 * k) as i16;
                    let hi = *sc.add(8 * j + 2 * k + 1) as i16;
                    s[k] = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
                }
                for a in 0..MR {
                    let q8 = (*x[a].add(i)).qs.as_ptr().add(128 * j);
                    for k in 0..4 {
                        let y = load(q8.add(32 * k));
                        let p = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(q[k], y),
                            _mm256_maddubs_epi16(m32, y),
                        );
                        sumi[a] = _mm256_add_epi32(sumi[a], _mm256_madd_epi16(s[k], p));
                    }
                }
            }
            for a in 0..MR {
                let d = (*x[a].add(i)).d * dw;
                acc[a] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[a]), acc[a]);
            }
        }
        finish(acc)
    }

    // --------------------------------------------------------------- F16 / F32

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_row<const MR: usize>(
        _lut: Lut,
        w: *const u8,
        n: usize,
        x: [*const f32; MR],
    ) -> [f32; MR] {
        let wp = w as *const u16;
        let mut acc0 = [_mm256_setzero_ps(); MR];
        let mut acc1 = [_mm256_setzero_ps(); MR];
        let mut i = 0;
        while i + 16 <= n {
            let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i) as *const __m128i));
            let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i + 8) as *const __m128i));
            for a in 0..MR {
                acc0[a] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[a].add(i)), acc0[a]);
                acc1[a] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[a].add(i + 8)), acc1[a]);
            }
            i += 16;
        }
        let mut out = [0f32; MR];
        for a in 0..MR {
            out[a] = hsum(_mm256_add_ps(acc0[a], acc1[a]));
            for k in i..n {
                let wk = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(*wp.add(k) as i32)));
                out[a] += wk * *x[a].add(k);
            }
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f32_row<const MR: usize>(
        _lut: Lut,
        w: *const u8,
        n: usize,
        x: [*const f32; MR],
    ) -> [f32; MR] {
        let wp = w as *const f32;
        let mut acc0 = [_mm256_setzero_ps(); MR];
        let mut acc1 = [_mm256_setzero_ps(); MR];
        let mut i = 0;
        while i + 16 <= n {
            let w0 = _mm256_loadu_ps(wp.add(i));
            let w1 = _mm256_loadu_ps(wp.add(i + 8));
            for a in 0..MR {
                acc0[a] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[a].add(i)), acc0[a]);
                acc1[a] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[a].add(i + 8)), acc1[a]);
            }
            i += 16;
        }
        let mut out = [0f32; MR];
        for a in 0..MR {
            out[a] = hsum(_mm256_add_ps(acc0[a], acc1[a]));
            for k in i..n {
                out[a] += wp.add(k).read_unaligned() * *x[a].add(k);
            }
        }
        out
    }
}
