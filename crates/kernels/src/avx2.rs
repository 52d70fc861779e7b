//! AVX2 + FMA + F16C kernels (x86-64 only; chosen at run time).

use crate::matrix::Acts;
use crate::QuantKind;

pub(crate) fn available() -> bool {
    false
}

pub(crate) fn row_dots(kind: QuantKind, w: &[u8], acts: &Acts, a0: usize, out: &mut [f32]) {
    crate::scalar::row_dots(kind, w, acts, a0, out)
}
