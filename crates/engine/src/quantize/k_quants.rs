//! ggml's reference K-quant quantizers (`quantize_row_q{4,5,6}_K_ref`, what
//! `llama-quantize` runs without an importance matrix), written to give the same bytes:
//! the same search for each sub-block's scale and minimum, the same rounding (ggml's
//! `nearest_int` rounds halves to even), the same order of float operations.
//!
//! candle's ports follow an older ggml (a different `make_qx_quants` for Q6_K, rounding
//! halves away from zero), so their files differ from llama.cpp's in a fraction of the
//! bytes; these do not.

use half::f16;

/// Values per super-block.
const QK_K: usize = 256;
/// Below this a group is all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Bytes per super-block of each kind.
pub const Q4K_BLOCK: usize = 144;
pub const Q5K_BLOCK: usize = 176;
pub const Q6K_BLOCK: usize = 210;

/// ggml's `nearest_int`: round to nearest with halves to even, through the float
/// trick ggml uses (exact for |v| < 2^22; ggml asserts that range, here a value
/// outside it gives a meaningless level but never a panic).
fn nearest_int(v: f32) -> i32 {
    let biased = v + 12_582_912.0;
    (biased.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

fn half_bits(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

fn half_value(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// The scale (returned) and minimum of one group of `x` quantized to `0..=nmax`
/// around a minimum, searching `nstep + 1` candidate scales (ggml's
/// `make_qkx2_quants`). Levels go to `levels`.
#[allow(clippy::too_many_arguments)]
fn scale_and_min(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let error = |d: f32, use_mad: bool| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * error(diff, use_mad);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut aux = [0u8; 32];
    let aux = &mut aux[..n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let w = weights[i];
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * error(diff, use_mad);
            }
            if cur_error < best_error {
                levels.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The signed scale of one group quantized symmetrically to `-nmax..nmax` with
/// weights x² (ggml's `make_qx_quants` with `rmse_type` 1 and no importance); levels
/// (offset by `nmax`) go to `levels`.
fn symmetric_scale(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let fit = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let set = |levels: &mut [i8], iscale: f32| {
        for (l, &v) in levels.iter_mut().zip(x) {
            *l = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    set(levels, iscale);
    let (sumlx, suml2) = fit(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set(levels, iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The shared part of Q4_K and Q5_K: eight 32-value groups with 6-bit scales and
/// minimums. Returns (d, dmin, packed scales, levels 0..=nmax).
fn super_block_with_mins(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> ([u8; 2], [u8; 2], [u8; 12], [u8; QK_K]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    let mut weights = [0f32; 32];
    for j in 0..QK_K / 32 {
        let group = &x[32 * j..32 * j + 32];
        let sum_x2 = group.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(group) {
            *w = av_x + v.abs();
        }
        let (scale, min) = scale_and_min(
            nmax,
            group,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..QK_K / 32 {
        // ggml stores the int into a uint8_t before clamping to 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = half_bits(max_scale / 63.0);
    let dmin = half_bits(max_min / 63.0);
    let (dv, dminv) = (
        f16::from_le_bytes(d).to_f32(),
        f16::from_le_bytes(dmin).to_f32(),
    );
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = dv * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dminv * m as f32;
        for ii in 0..32 {
            levels[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, levels)
}

/// Quantize `x` (a multiple of 256 values) to Q4_K blocks, as ggml does.
pub fn quantize_q4_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q4K_BLOCK);
    for block in x.chunks_exact(QK_K) {
        let (d, dmin, scales, levels) = super_block_with_mins(block, 15, -1.0, 20);
        out.extend_from_slice(&d);
        out.extend_from_slice(&dmin);
        out.extend_from_slice(&scales);
        for j in (0..QK_K).step_by(64) {
            for l in 0..32 {
                out.push(levels[j + l] | (levels[j + l + 32] << 4));
            }
        }
    }
    out
}

/// Quantize `x` (a multiple of 256 values) to Q5_K blocks, as ggml does.
pub fn quantize_q5_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q5K_BLOCK);
    for block in x.chunks_exact(QK_K) {
        let (d, dmin, scales, levels) = super_block_with_mins(block, 31, -0.5, 15);
        let mut qh = [0u8; QK_K / 8];
        let mut ql = [0u8; QK_K / 2];
        let (mut m1, mut m2) = (1u8, 2u8);
        for (chunk, n) in (0..QK_K).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = levels[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = levels[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[32 * chunk + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
        out.extend_from_slice(&d);
        out.extend_from_slice(&dmin);
        out.extend_from_slice(&scales);
        out.extend_from_slice(&qh);
        out.extend_from_slice(&ql);
    }
    out
}

/// Quantize `x` (a multiple of 256 values) to Q6_K blocks, as ggml does.
pub fn quantize_q6_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q6K_BLOCK);
    for block in x.chunks_exact(QK_K) {
        let mut levels = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ib in 0..QK_K / 16 {
            let scale = symmetric_scale(
                32,
                &block[16 * ib..16 * ib + 16],
                &mut levels[16 * ib..16 * ib + 16],
            );
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.extend_from_slice(&[0u8; Q6K_BLOCK]);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = half_bits(1.0 / iscale);
        let dv = half_value(1.0 / iscale);
        let mut sc = [0i8; QK_K / 16];
        for ib in 0..QK_K / 16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let dj = dv * sc[j] as f32;
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(block[16 * j + ii] / dj).clamp(-32, 31);
                levels[16 * j + ii] = (l + 32) as i8;
            }
        }
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for (half, j) in (0..QK_K).step_by(128).enumerate() {
            let (ql, qh) = (&mut ql[64 * half..], &mut qh[32 * half..]);
            for l in 0..32 {
                let at = |k: usize| levels[j + l + k] as u8;
                ql[l] = (at(0) & 0xF) | ((at(64) & 0xF) << 4);
                ql[l + 32] = (at(32) & 0xF) | ((at(96) & 0xF) << 4);
                qh[l] = (at(0) >> 4)
                    | ((at(32) >> 4) << 2)
                    | ((at(64) >> 4) << 4)
                    | ((at(96) >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
    use candle_core::Device;

    fn dequantize_kind(name: &str, bytes: &[u8], n: usize) -> Vec<f32> {
        let dtype = match name {
            "q4_K" => GgmlDType::Q4K,
            "q5_K" => GgmlDType::Q5K,
            _ => GgmlDType::Q6K,
        };
        qtensor_from_ggml(dtype, bytes, vec![n], &Device::Cpu)
            .and_then(|t| t.dequantize(&Device::Cpu))
            .and_then(|t| t.to_vec1::<f32>())
            .expect("candle reads the block")
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    }

    #[test]
    fn nearest_int_rounds_halves_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(3.49), 3);
        assert_eq!(nearest_int(-7.6), -8);
    }

    #[test]
    fn blocks_dequantize_close_to_their_values() {
        let x = values(2 * QK_K, 7);
        for (name, bytes, tolerance) in [
            ("q4_K", quantize_q4_k(&x), 0.012),
            ("q5_K", quantize_q5_k(&x), 0.006),
            ("q6_K", quantize_q6_k(&x), 0.003),
        ] {
            let back = dequantize_kind(name, &bytes, x.len());
            let worst = x
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < tolerance, "{name}: worst error {worst}");
        }
    }

    #[test]
    fn zeros_stay_zeros() {
        let x = vec![0.0f32; QK_K];
        assert!(quantize_q6_k(&x).iter().all(|&b| b == 0));
        let q4 = quantize_q4_k(&x);
        assert_eq!(q4.len(), Q4K_BLOCK);
        assert!(dequantize_kind("q4_K", &q4, QK_K).iter().all(|&v| v == 0.0));
    }
}
