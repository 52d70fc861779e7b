//! Row-wise operations of the llama-family forward pass on plain f32 slices, written to
//! round the way llama.cpp's CPU backend does where that is cheap (RMS norm sums in f64,
//! rotary angles by repeated multiplication), so greedy outputs stay comparable.

/// `x[r] = x[r] / rms(x[r]) * weight` for every row of `weight.len()` values.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (row, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / d as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *o = (v * scale) * w;
        }
    }
}

/// LayerNorm in place for every row of `weight.len()` values: `(x - mean) / sqrt(var +
/// eps) * weight + bias`, the sums in f64.
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let d = weight.len();
    for row in x.chunks_exact_mut(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / d as f64;
        let scale = (1.0 / (var + eps as f64).sqrt()) as f32;
        let mean = mean as f32;
        for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * scale * w + b;
        }
    }
}

/// GELU in place as ggml's CPU backend computes it: the tanh approximation, looked up
/// by the input rounded to f16 in a table of f16 results (inputs beyond +-10: identity
/// and zero). A lookup is far cheaper than `tanh`, and it keeps llama.cpp's rounding.
pub fn gelu(x: &mut [f32]) {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let v = half::f16::from_bits(bits).to_f32();
                half::f16::from_f32(gelu_tanh(v)).to_f32()
            })
            .collect()
    });
    for v in x.iter_mut() {
        if *v <= -10.0 {
            *v = 0.0;
        } else if *v < 10.0 {
            *v = table[half::f16::from_f32(*v).to_bits() as usize];
        }
    }
}

/// GELU's tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))`.
pub fn gelu_tanh(a: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * a * (1.0 + (SQRT_2_OVER_PI * a * (1.0 + 0.044715 * a * a)).tanh())
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Add `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_in_place(row, bias);
    }
}

/// `gate = silu(gate) * up`, SwiGLU's elementwise half, for `rows` rows, computed as
/// ggml's CPU backend computes it: on AVX2 + FMA, eight values at a time with ggml's
/// vector `exp` (an Arm optimized-routines polynomial, within 2 ulp of the exact
/// one), and the last `width % 8` values of each row with libm's `expf`; elsewhere
/// `expf` throughout.
pub fn silu_mul(gate: &mut [f32], up: &[f32], rows: usize) {
    assert_eq!(gate.len(), up.len(), "silu_mul: gate and up differ in size");
    let width = gate.len() / rows.max(1);
    for (g, u) in gate.chunks_mut(width.max(1)).zip(up.chunks(width.max(1))) {
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if simd_exp::available() {
            // SAFETY: the CPU has AVX2 and FMA; `g` and `u` have the same length.
            done = unsafe { simd_exp::silu_mul(g, u) };
        }
        for (g, &u) in g[done..].iter_mut().zip(&u[done..]) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd_exp {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    /// `exp(x)` of eight lanes, ggml's `ggml_v_expf` for AVX2: `x = n ln2 + b` with `n`
    /// rounded by the `1.5 * 2^23` trick and `ln2` in two parts, a degree-5 polynomial
    /// in `b`, and `2^n` built in the exponent bits (with a two-factor scale where `|n|`
    /// passes 126, and 0 or infinity past 192).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000)); // 0x1.8p23
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), r); // 1/ln2
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(f32::from_bits(0x35bf_be8e)), // ln2, low part
            _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x), // high part
        );
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let c = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
        let u = _mm256_mul_ps(b, b);
        let c5 = _mm256_set1_ps(f32::from_bits(0x3c07_2010));
        let c4 = _mm256_set1_ps(f32::from_bits(0x3d2b_9f17));
        let c3 = _mm256_set1_ps(f32::from_bits(0x3e2a_af33));
        let c2 = _mm256_set1_ps(f32::from_bits(0x3eff_fedb));
        let c1 = _mm256_set1_ps(f32::from_bits(0x3f7f_fff6));
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_fmadd_ps(c5, b, c4), u, _mm256_fmadd_ps(c3, b, c2)),
            u,
            _mm256_mul_ps(c1, b),
        );
        if _mm256_movemask_ps(c) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
        _mm256_or_ps(
            _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                d,
                _mm256_or_ps(
                    _mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                    _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }

    /// `g = g / (1 + exp(-g)) * u` for the leading multiple of eight values; returns
    /// how many were done.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(g: &mut [f32], u: &[f32]) -> usize {
        let n = g.len().min(u.len()) / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        for i in (0..n).step_by(8) {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
            let y = _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr().add(i)));
            _mm256_storeu_ps(g.as_mut_ptr().add(i), y);
        }
        n
    }
}

/// Rotary position embedding angles for one position: `cos`, `sin` of `pos * base^(-2i/d)`
/// for `i < d/2`, the angle advanced by repeated multiplication as ggml does.
pub fn rope_angles(pos: usize, head_dim: usize, base: f32, cos: &mut [f32], sin: &mut [f32]) {
    rope_angles_scaled(pos, head_dim, base, 1.0, None, cos, sin);
}

/// [`rope_angles`] with ggml's linear position scaling and per-frequency divisors
/// (llama 3's `rope_freqs`): angle `i` is `freq_scale * theta_i / factors[i]`, where
/// `theta_i` advances by repeated multiplication.
pub fn rope_angles_scaled(
    pos: usize,
    dims: usize,
    base: f32,
    freq_scale: f32,
    factors: Option<&[f32]>,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    rope_angles_yarn(
        pos,
        dims,
        base,
        freq_scale,
        factors,
        &Yarn::OFF,
        1.0,
        cos,
        sin,
    );
}

/// YaRN's parameters (ggml's `ext_factor`, `beta_fast`, `beta_slow`, `n_ctx_orig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    pub ext_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    pub n_ctx_orig: usize,
}

impl Yarn {
    /// No extension: plain linear scaling.
    pub const OFF: Yarn = Yarn {
        ext_factor: 0.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: 0,
    };

    /// The first and last rotary pair YaRN blends, as ggml computes them.
    fn corr_dims(&self, dims: usize, base: f32) -> [f32; 2] {
        let corr_dim = |n_rot: f32| {
            dims as f32 * (self.n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        [
            corr_dim(self.beta_fast).floor().max(0.0),
            corr_dim(self.beta_slow).ceil().min(dims as f32 - 1.0),
        ]
    }
}

/// ggml's `rope_yarn`, which every rope is: angle `i` is `freq_scale * theta_i /
/// factors[i]` ([`rope_angles_scaled`]); with YaRN on (`ext_factor` > 0) it is blended
/// with the unscaled angle by a ramp over the pairs, and the magnitude grows by
/// `1 + 0.1 ln(1 / freq_scale)`. The cosines and sines are multiplied by `attn_factor`.
#[allow(clippy::too_many_arguments)]
pub fn rope_angles_yarn(
    pos: usize,
    dims: usize,
    base: f32,
    freq_scale: f32,
    factors: Option<&[f32]>,
    yarn: &Yarn,
    attn_factor: f32,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let theta_scale = base.powf(-2.0 / dims as f32);
    let ramp = (yarn.ext_factor != 0.0).then(|| yarn.corr_dims(dims, base));
    let mut mscale = attn_factor;
    if ramp.is_some() {
        mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
    }
    let mut theta = pos as f32;
    for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
        let divisor = factors.and_then(|f| f.get(i)).copied().unwrap_or(1.0);
        let extrap = theta / divisor;
        let interp = freq_scale * extrap;
        let angle = if let Some([low, high]) = ramp {
            let y = (i as f32 - low) / (high - low).max(0.001);
            let mix = (1.0 - y.clamp(0.0, 1.0)) * yarn.ext_factor;
            interp * (1.0 - mix) + extrap * mix
        } else {
            interp
        };
        *c = angle.cos() * mscale;
        *s = angle.sin() * mscale;
        theta *= theta_scale;
    }
}

/// gpt-oss's gated activation (ggml's `swiglu_oai`):
/// `min(g, limit) * sigmoid(alpha * min(g, limit)) * (clamp(u, -limit, limit) + 1)`.
pub fn swiglu_oai_mul(gate: &mut [f32], up: &[f32], alpha: f32, limit: f32) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = g.min(limit);
        let y = u.clamp(-limit, limit);
        *g = x / (1.0 + (alpha * -x).exp()) * (y + 1.0);
    }
}

/// Rotate every head of one row in place. `neox` pairs `x[i]` with `x[i + d/2]` (Qwen);
/// otherwise adjacent pairs `x[2i], x[2i+1]` (llama).
pub fn rope_row(row: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], neox: bool) {
    rope_row_partial(row, head_dim, head_dim, cos, sin, neox);
}

/// [`rope_row`] rotating only the first `dims` values of each head (the rest pass
/// through), as `rope.dimension_count` asks.
pub fn rope_row_partial(
    row: &mut [f32],
    head_dim: usize,
    dims: usize,
    cos: &[f32],
    sin: &[f32],
    neox: bool,
) {
    let half = dims / 2;
    for head in row.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for row in x.chunks_exact_mut(d) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / d as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

/// `gate = gelu(gate) * up`, GEGLU's elementwise half, with [`gelu`]'s rounding.
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    gelu(gate);
    for (g, &u) in gate.iter_mut().zip(up) {
        *g *= u;
    }
}

/// `x *= factor`.
pub fn scale(x: &mut [f32], factor: f32) {
    for v in x.iter_mut() {
        *v *= factor;
    }
}

/// `x = cap * tanh(x / cap)`.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_extrapolates_fast_pairs_interpolates_slow_ones_and_scales_magnitude() {
        let yarn = Yarn {
            ext_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 4096,
        };
        let (dims, base, scale, pos) = (64, 150_000.0f32, 1.0 / 32.0, 100);
        let (mut c, mut s) = (vec![0.0; 32], vec![0.0; 32]);
        rope_angles_yarn(pos, dims, base, scale, None, &yarn, 1.0, &mut c, &mut s);
        let mscale = 1.0 + 0.1 * 32f32.ln();
        // Pair 0 (fastest) keeps its angle, the last pair is interpolated.
        assert!((c[0] - (pos as f32).cos() * mscale).abs() < 1e-5);
        let theta_last = pos as f32 * base.powf(-2.0 * 31.0 / dims as f32);
        assert!((c[31] - (theta_last * scale).cos() * mscale).abs() < 1e-4);
    }

    #[test]
    fn swiglu_oai_clamps_gate_above_and_up_on_both_sides() {
        let mut g = vec![10.0, -3.0, 1.0];
        swiglu_oai_mul(&mut g, &[-20.0, 20.0, 0.5], 1.702, 7.0);
        let act = |x: f32| x / (1.0 + (-1.702 * x).exp());
        assert!((g[0] - act(7.0) * (-7.0 + 1.0)).abs() < 1e-5);
        assert!((g[1] - act(-3.0) * (7.0 + 1.0)).abs() < 1e-5);
        assert!((g[2] - act(1.0) * 1.5).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_scales_to_unit_rms() {
        let x = [3.0f32, 4.0, 0.0, 0.0, 1.0, 1.0];
        let mut out = [0.0; 6];
        rms_norm(&x, &[1.0, 2.0, 1.0], 0.0, &mut out);
        let rms = (25.0f32 / 3.0).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6);
        assert!((out[1] - 8.0 / rms).abs() < 1e-6);
        let rms2 = (2.0f32 / 3.0).sqrt();
        assert!((out[4] - 2.0 / rms2).abs() < 1e-6);
    }

    #[test]
    fn rope_at_zero_is_identity_and_preserves_norm() {
        let mut cos = [0.0; 2];
        let mut sin = [0.0; 2];
        rope_angles(0, 4, 10_000.0, &mut cos, &mut sin);
        let mut row = [1.0, 2.0, 3.0, 4.0];
        rope_row(&mut row, 4, &cos, &sin, false);
        assert_eq!(row, [1.0, 2.0, 3.0, 4.0]);
        rope_angles(7, 4, 10_000.0, &mut cos, &mut sin);
        for neox in [false, true] {
            let mut row = [1.0f32, 2.0, 3.0, 4.0];
            rope_row(&mut row, 4, &cos, &sin, neox);
            let norm: f32 = row.iter().map(|v| v * v).sum();
            assert!((norm - 30.0).abs() < 1e-4);
        }
    }

    #[test]
    fn scaled_angles_reduce_to_plain_ones_and_divide_by_factors() {
        let (mut c0, mut s0) = ([0.0; 4], [0.0; 4]);
        let (mut c1, mut s1) = ([0.0; 4], [0.0; 4]);
        rope_angles(5, 8, 10_000.0, &mut c0, &mut s0);
        rope_angles_scaled(5, 8, 10_000.0, 1.0, None, &mut c1, &mut s1);
        assert_eq!((c0, s0), (c1, s1));
        rope_angles_scaled(
            5,
            8,
            10_000.0,
            0.5,
            Some(&[1.0, 2.0, 4.0, 8.0]),
            &mut c1,
            &mut s1,
        );
        let theta1 = 5.0f32 * 10_000f32.powf(-2.0 / 8.0);
        assert!((s1[0] - 2.5f32.sin()).abs() < 1e-6);
        assert!((s1[1] - (0.5 * theta1 / 2.0).sin()).abs() < 1e-6);
    }

    #[test]
    fn partial_rope_leaves_the_tail_alone() {
        let (mut c, mut s) = ([0.0; 1], [0.0; 1]);
        rope_angles(3, 2, 10_000.0, &mut c, &mut s);
        let mut row = [1.0f32, 2.0, 3.0, 4.0];
        rope_row_partial(&mut row, 4, 2, &c, &s, true);
        assert_eq!(row[2..], [3.0, 4.0]);
        assert!((row[0] - (3.0f32.cos() - 2.0 * 3.0f32.sin())).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_centers_and_scales() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.5; 4], 0.0);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6);
        let var: f32 = x.iter().map(|v| (v - 0.5) * (v - 0.5)).sum::<f32>() / 4.0;
        assert!((var - 1.0).abs() < 1e-5);
    }

    #[test]
    fn gelu_is_close_to_the_exact_one() {
        let mut x = [-3.0f32, -1.0, 0.0, 0.5, 2.0, -12.0, 11.0];
        gelu(&mut x);
        assert_eq!(x[5..], [0.0, 11.0]);
        // x * Phi(x) from tables of the normal distribution.
        let exact = [-0.004_049_6f32, -0.158_655_3, 0.0, 0.345_731_4, 1.954_5];
        for (a, b) in x.iter().zip(exact) {
            assert!((a - b).abs() < 2e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn silu_mul_matches_definition() {
        let mut g = [0.0f32, 1.0, -2.0];
        silu_mul(&mut g, &[1.0, 2.0, 3.0], 1);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert!((g[2] - 3.0 * -2.0 / (1.0 + 2.0f32.exp())).abs() < 1e-6);
    }

    /// Rows whose width is not a multiple of eight: the vector part is within a few ulp
    /// of the libm formula, each row's last `width % 8` values are exactly it, and no
    /// vector straddles two rows.
    #[test]
    fn silu_mul_rows_vector_part_and_tails() {
        let (rows, width) = (3, 21);
        let gate: Vec<f32> = (0..rows * width)
            .map(|i| (i as f32 * 0.71).sin() * 12.0)
            .collect();
        let up: Vec<f32> = (0..rows * width).map(|i| (i as f32 * 0.37).cos()).collect();
        let mut got = gate.clone();
        silu_mul(&mut got, &up, rows);
        for (i, ((&x, &u), &y)) in gate.iter().zip(&up).zip(&got).enumerate() {
            let want = x / (1.0 + (-x).exp()) * u;
            if i % width >= width / 8 * 8 {
                assert_eq!(y.to_bits(), want.to_bits(), "tail value {i}");
            } else {
                assert!(
                    (y - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(1e-30),
                    "{i}"
                );
            }
        }
    }

    /// ggml's vector exp against libm's `expf`: within 2 ulp over the range where both
    /// are normal, zero below and infinity above theirs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_follows_libm() {
        use std::arch::x86_64::*;
        if !simd_exp::available() {
            return;
        }
        let exp = |x: f32| -> f32 {
            let mut out = [0f32; 8];
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), simd_exp::exp8(_mm256_set1_ps(x))) };
            out[0]
        };
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulps <= 2, "exp({x}) = {got}, libm {want}");
            x += 0.0137;
        }
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(200.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }
}
