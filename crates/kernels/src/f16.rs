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

#[inline]
pub(crate) fn read_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}
