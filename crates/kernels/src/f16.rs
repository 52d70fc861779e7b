//! IEEE half-precision conversions (exact f16 -> f32, round-to-nearest-even f32 -> f16,
//! as F16C's `vcvtph2ps` / `vcvtps2ph` with rounding mode 0, which ggml uses on x86).

#[inline]
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

#[inline]
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// `x` rounded to the nearest f16, as f32.
#[inline]
pub(crate) fn round_f16(x: f32) -> f32 {
    f16_to_f32(f32_to_f16(x))
}

/// bfloat16 to f32: exact (the upper half of the f32's bits).
#[inline]
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bfloat16, round to nearest even, a NaN kept quiet, as ggml converts.
#[inline]
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 64) as u16;
    }
    ((bits + (0x7fff + ((bits >> 16) & 1))) >> 16) as u16
}

#[inline]
pub(crate) fn read_bf16(b: &[u8], at: usize) -> f32 {
    bf16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[inline]
pub(crate) fn read_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// f32 value of every f16 bit pattern (256 KB, built once). Scalar F16C conversion of a
/// single scale compiles to `vpinsrw` + `vcvtph2ps`, whose merge into a stale register
/// chains every block of a row together; a table lookup has no such dependency (ggml
/// uses the same table for the same reason).
#[cfg_attr(
    not(all(target_arch = "x86_64", not(wick_kernels_portable))),
    allow(dead_code)
)]
pub(crate) fn f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(f16_to_f32).collect())
}
