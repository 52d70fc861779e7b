//! Straightforward scalar dequantization of every [`QuantKind`] to f32, following ggml's
//! `dequantize_row_*` functions. Slow and simple on purpose: the yardstick for the fast
//! kernels, and what token-embedding lookups use.
//!
//! Block layouts (little endian, `d`/`m`/`dmin` are f16):
//!
//! | kind | values | bytes | layout |
//! |---|---|---|---|
//! | Q4_0 | 32 | 18 | `d`, `qs[16]`: value `j` is the low nibble of `qs[j]`, `j + 16` the high one; `(q - 8) * d` |
//! | Q4_1 | 32 | 20 | `d`, `m`, `qs[16]`: `q * d + m` |
//! | Q5_0 | 32 | 22 | `d`, `qh` (u32: bit `j` is the 5th bit of value `j`), `qs[16]`: `(q - 16) * d` |
//! | Q8_0 | 32 | 34 | `d`, `qs[32]` (i8): `q * d` |
//! | Q4_K | 256 | 144 | `d`, `dmin`, `scales[12]` (8 six-bit scales and mins), `qs[128]` |
//! | Q5_K | 256 | 176 | `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]` |
//! | Q6_K | 256 | 210 | `ql[128]`, `qh[64]`, `scales[16]` (i8), `d` |
//! | MXFP4 | 32 | 17 | `e` (E8M0), `qs[16]` as Q4_0's: [`MXFP4_VALUES`]`[q] * 2^(e - 128)` |

use crate::f16::read_f16;
use crate::{KernelError, QuantKind};

/// Dequantize one row (`out.len()` values) stored as `data` in `kind`'s blocks.
pub fn dequantize_row(kind: QuantKind, data: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
    let cols = out.len();
    let bs = kind.block_size();
    if !cols.is_multiple_of(bs) {
        return Err(KernelError::PartialBlock {
            kind,
            cols,
            block: bs,
        });
    }
    if data.len() != kind.row_bytes(cols) {
        return Err(KernelError::DataSize {
            kind,
            rows: 1,
            cols,
            expected: kind.row_bytes(cols),
            got: data.len(),
        });
    }
    let ts = kind.type_size();
    for (block, y) in data.chunks_exact(ts).zip(out.chunks_exact_mut(bs)) {
        match kind {
            QuantKind::F32 => y[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]),
            QuantKind::F16 => y[0] = read_f16(block, 0),
            QuantKind::BF16 => y[0] = crate::f16::read_bf16(block, 0),
            QuantKind::Q4_0 => q4_0(block, y),
            QuantKind::Q4_1 => q4_1(block, y),
            QuantKind::Q5_0 => q5_0(block, y),
            QuantKind::Q8_0 => q8_0(block, y),
            QuantKind::Q4K => q4_k(block, y),
            QuantKind::Q5K => q5_k(block, y),
            QuantKind::Q6K => q6_k(block, y),
            QuantKind::Q2K => q2_k(block, y),
            QuantKind::Q3K => q3_k(block, y),
            QuantKind::Mxfp4 => mxfp4(block, y),
        }
    }
    Ok(())
}

/// Dequantize a whole `rows x cols` matrix into a new row-major vector.
pub fn dequantize(
    kind: QuantKind,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<Vec<f32>, KernelError> {
    let rb = kind.row_bytes(cols);
    if data.len() != rows * rb {
        return Err(KernelError::DataSize {
            kind,
            rows,
            cols,
            expected: rows * rb,
            got: data.len(),
        });
    }
    let mut out = vec![0f32; rows * cols];
    if cols == 0 {
        return Ok(out);
    }
    for (r, y) in out.chunks_exact_mut(cols).enumerate() {
        dequantize_row(kind, &data[r * rb..(r + 1) * rb], y)?;
    }
    Ok(out)
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0xf) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let m = read_f16(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0xf) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((q & 0xf) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    for j in 0..32 {
        y[j] = b[2 + j] as i8 as f32 * d;
    }
}

/// ggml's `kvalues_mxfp4`: the sixteen E2M1 values (sign, two exponent bits, one
/// mantissa bit) doubled, so they are integers; [`e8m0_half`] halves the scale to match.
pub const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half of the E8M0 scale `2^(e - 127)`, that is `2^(e - 128)`, exactly (ggml's
/// `GGML_E8M0_TO_FP32_HALF`; the two smallest are subnormal).
#[inline]
pub fn e8m0_half(e: u8) -> f32 {
    E8M0_HALF[e as usize]
}

static E8M0_HALF: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut e = 0;
    while e < 256 {
        t[e] = if e < 2 {
            f32::from_bits(0x0020_0000 << e)
        } else {
            f32::from_bits(((e as u32) - 1) << 23)
        };
        e += 1;
    }
    t
};

fn mxfp4(b: &[u8], y: &mut [f32]) {
    let d = e8m0_half(b[0]);
    for j in 0..16 {
        let q = b[1 + j];
        y[j] = MXFP4_VALUES[(q & 0xf) as usize] as f32 * d;
        y[j + 16] = MXFP4_VALUES[(q >> 4) as usize] as f32 * d;
    }
}

/// Quantize `x` (whole blocks of 32) to MXFP4 exactly as ggml's `quantize_row_mxfp4_ref`
/// does: the scale is the power of two that puts the block's largest magnitude in
/// `[4, 8)` doubled-E2M1 units, each value the nearest level (the first on a tie).
pub fn quantize_row_mxfp4(x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(32),
        "MXFP4 rows are whole blocks of 32"
    );
    let mut out = Vec::with_capacity(x.len() / 32 * 17);
    for block in x.chunks_exact(32) {
        let amax = block
            .iter()
            .fold(0f32, |a, v| if a < v.abs() { v.abs() } else { a });
        // Wrapping as ggml's C cast does on x86 (and gguf-py's numpy one) for a block so
        // tiny the exponent is negative: every value then rounds to zero either way.
        let e = if amax > 0.0 {
            (amax.log2().floor() - 2.0 + 127.0) as i32 as u8
        } else {
            0
        };
        let d = e8m0_half(e);
        let best = |v: f32| {
            let mut best = (0usize, (MXFP4_VALUES[0] as f32 * d - v).abs());
            for (i, &k) in MXFP4_VALUES.iter().enumerate().skip(1) {
                let err = (k as f32 * d - v).abs();
                if err < best.1 {
                    best = (i, err);
                }
            }
            best.0 as u8
        };
        out.push(e);
        for j in 0..16 {
            out.push(best(block[j]) | (best(block[j + 16]) << 4));
        }
    }
    out
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block's packed 12 bytes.
pub(crate) fn k4_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let dmin = read_f16(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for c in 0..4 {
        let (sc1, m1) = k4_scale_min(scales, 2 * c);
        let (sc2, m2) = k4_scale_min(scales, 2 * c + 1);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * c..32 * c + 32];
        for l in 0..32 {
            y[64 * c + l] = d1 * (q[l] & 0xf) as f32 - m1;
            y[64 * c + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let dmin = read_f16(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for c in 0..4 {
        let (sc1, m1) = k4_scale_min(scales, 2 * c);
        let (sc2, m2) = k4_scale_min(scales, 2 * c + 1);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * c..32 * c + 32];
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * c + l] = d1 * ((q[l] & 0xf) + h1) as f32 - m1;
            y[64 * c + 32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc = &b[192..208];
    let d = read_f16(b, 208);
    for half in 0..2 {
        let ql = &ql[64 * half..];
        let qh = &qh[32 * half..];
        let sc = &sc[8 * half..];
        let y = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Q2_K: 16 sub-blocks of 16 two-bit codes, each with a 4-bit scale and a 4-bit minimum
/// (`scales[s]`: scale low, minimum high), times `d` and `dmin`. Value `v`'s code is bits
/// `2j..2j+2` of `qs[32 * (v / 128) + v % 32]`, `j = (v % 128) / 32`.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (read_f16(b, 80), read_f16(b, 82));
    for (v, out) in y.iter_mut().enumerate().take(256) {
        let s = scales[v / 16];
        let q = (qs[32 * (v / 128) + v % 32] >> (2 * ((v % 128) / 32))) & 3;
        *out = d * (s & 0xf) as f32 * q as f32 - dmin * (s >> 4) as f32;
    }
}

/// Q3_K's sixteen 6-bit scales (each less 32), unpacked from their 12 bytes: scale `s`
/// has its low four bits in nibble `s / 8` of byte `s % 8` and its high two in bits
/// `2 (s / 4)` of byte `8 + s % 4`. Eight bytes at a time in `u64` lanes.
#[inline]
pub(crate) fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    const NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const PAIRS: u32 = 0x0303_0303;
    let low = u64::from_le_bytes(packed[0..8].try_into().expect("8 bytes"));
    let high = u32::from_le_bytes(packed[8..12].try_into().expect("4 bytes"));
    let h = |shift: u32| u64::from((high >> shift) & PAIRS);
    let first = (low & NIBBLES) | ((h(0) | (h(2) << 32)) << 4);
    let second = ((low >> 4) & NIBBLES) | ((h(4) | (h(6) << 32)) << 4);
    let mut out = [0i8; 16];
    for (o, b) in out
        .iter_mut()
        .zip(first.to_le_bytes().into_iter().chain(second.to_le_bytes()))
    {
        *o = (b as i8).wrapping_sub(32);
    }
    out
}

/// Q3_K: 16 sub-blocks of 16 three-bit codes (-4..3: two low bits in `qs` as Q2_K lays
/// them out, the third in `hmask`, set meaning no -4), with 6-bit scales, times `d`.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = read_f16(b, 108);
    for (v, out) in y.iter_mut().enumerate().take(256) {
        *out = d * scales[v / 16] as f32 * q3_k_code(qs, hmask, v) as f32;
    }
}

/// Code `v` (-4..3) of a Q3_K block.
#[inline(always)]
pub(crate) fn q3_k_code(qs: &[u8], hmask: &[u8], v: usize) -> i32 {
    let j = (v % 128) / 32;
    let low = (qs[32 * (v / 128) + v % 32] >> (2 * j)) & 3;
    let high = (hmask[v % 32] >> (4 * (v / 128) + j)) & 1;
    low as i32 - if high == 0 { 4 } else { 0 }
}

/// Plain f32 dot product accumulated in f64 (the reference for tests).
pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[cfg(test)]
mod tests {
    /// The unpacking as ggml's `dequantize_row_q3_K` states it, one scale at a time.
    fn q3_k_scales_plain(packed: &[u8]) -> [i8; 16] {
        std::array::from_fn(|s| {
            let low = if s < 8 {
                packed[s] & 0xf
            } else {
                packed[s - 8] >> 4
            };
            let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
            ((low | (high << 4)) as i32 - 32) as i8
        })
    }

    #[test]
    fn q3_k_scales_unpack_as_ggml_does() {
        let mut rng = crate::synth::Rng::new(5);
        for _ in 0..1000 {
            let packed: Vec<u8> = (0..12).map(|_| rng.next_u64() as u8).collect();
            assert_eq!(super::q3_k_scales(&packed), q3_k_scales_plain(&packed));
        }
    }
}
