//! The GEMM: K-quant (Q2_K to Q6_K) and 32-value (Q4_0, Q4_1, Q5_0, MXFP4) weights times
//! many activation rows.
//!
//! The row-by-row kernels unpack a weight block once for up to four activation rows, but
//! every (weight row, activation row) pair still pays its own widening multiply
//! (`vpmaddwd`) per 32 values and its own float finish per block. Here the layout is
//! turned around so one vector lane is one activation row:
//!
//! * activations are quantized to Q8_K as usual, then interleaved in groups of eight
//!   rows ([`ActGroupBlock`]): one 32-byte vector holds four consecutive columns of each
//!   of the eight rows;
//! * a weight row is unpacked once per call into plain byte codes (`0..=63`) and per
//!   block scales ([`WeightBlock`]), kept in L1; with only one or two groups (up to 16
//!   activation rows), where each row serves a single pass, Q4_0, Q4_1 and Q5_0 rows
//!   are read as stored instead ([`direct_dots`]);
//! * the inner step broadcasts four codes of the weight row and multiplies them with the
//!   group's vector (`vpmaddubsw`), summing in 16 bits over as many steps as cannot
//!   overflow, then applies the sub-block scale with one `vpmaddwd` for all eight rows;
//!   the codes' offsets (Q6_K's 32) and Q4_K/Q5_K's minimums come from the activations'
//!   sub-block sums;
//! * each block's exact integer total then goes into the pair's `fma` chain in the order
//!   of [`crate::scalar::k_chain`], for eight pairs at once.
//!
//! The integers are exact and the float order is the row-by-row kernels' own, so a row
//! computed here is bit-identical to the same row computed alone (tested).

use crate::act::{Q8Block, Q8KBlock};
use crate::f16::read_f16;
use crate::reference::k4_scale_min;
use crate::QuantKind;

/// Eight activation rows of one 256-value block, interleaved.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct ActGroupBlock {
    /// `qs[k]`: columns `4k..4k + 4` of row 0, then of row 1, ... row 7.
    qs: [[i8; 32]; 64],
    /// Each row's scale.
    d: [f32; 8],
    /// `sum32[p]`: each row's sums over the 32-column sub-blocks `2p` and `2p + 1`.
    sum32: [[i16; 16]; 4],
    /// `sum16[p]`: each row's sums over the 16-column sub-blocks `2p` and `2p + 1`.
    sum16: [[i16; 16]; 8],
}

impl Default for ActGroupBlock {
    fn default() -> Self {
        Self {
            qs: [[0; 32]; 64],
            d: [0.0; 8],
            sum32: [[0; 16]; 4],
            sum16: [[0; 16]; 8],
        }
    }
}

/// Row `r`'s quants `qs` into the group's vectors: columns `4k..4k + 4` go to bytes
/// `4r..4r + 4` of vector `k`.
fn interleave(qs: &[i8], r: usize, dst: &mut [[i8; 32]]) {
    for (v, q) in dst.iter_mut().zip(qs.chunks_exact(4)) {
        v[4 * r..4 * r + 4].copy_from_slice(q);
    }
}

/// Interleave up to eight quantized rows (each `out.len()` blocks) into `out`; missing
/// rows are zero.
pub(crate) fn pack_group(rows: &[&[Q8KBlock]], out: &mut [ActGroupBlock]) {
    debug_assert!(rows.len() <= 8);
    for (b, g) in out.iter_mut().enumerate() {
        *g = ActGroupBlock::default();
        for (r, row) in rows.iter().enumerate() {
            let y = &row[b];
            interleave(&y.qs, r, &mut g.qs);
            g.d[r] = y.d;
            for p in 0..4 {
                g.sum32[p][2 * r] = y.pair_sums[2 * p];
                g.sum32[p][2 * r + 1] = y.pair_sums[2 * p + 1];
            }
            for p in 0..8 {
                g.sum16[p][2 * r] = y.bsums[2 * p];
                g.sum16[p][2 * r + 1] = y.bsums[2 * p + 1];
            }
        }
    }
}

/// One weight block's scales, unpacked; its 256 codes live in a separate byte row.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
pub(crate) struct WeightBlock {
    /// `d` as f32.
    d: f32,
    /// `dmin` as f32 (Q4_K, Q5_K).
    dmin: f32,
    /// Sub-block scales, each as an i16 twice in one i32 (a `vpmaddwd` operand once
    /// broadcast): 8 of 32 values (Q4_K, Q5_K) or 16 of 16 values (Q6_K).
    scale: [i32; 16],
    /// i16 pairs `(x[2p], x[2p + 1])` for the offset terms: the minimums of the 32-value
    /// sub-blocks (Q4_K, Q5_K, 4 pairs) or the scales of the 16-value ones (Q6_K, 8).
    pairs: [i32; 8],
}

fn twice(v: i16) -> i32 {
    (v as u16 as i32) | ((v as u16 as i32) << 16)
}

fn pair(lo: i16, hi: i16) -> i32 {
    (lo as u16 as i32) | ((hi as u16 as i32) << 16)
}

/// Unpack one weight row of `kind` (whole blocks) into `codes` (one byte per value) and
/// `meta` (one [`WeightBlock`] per block).
pub(crate) fn unpack_row(kind: QuantKind, w: &[u8], codes: &mut [u8], meta: &mut [WeightBlock]) {
    unpack_codes(kind, w, codes);
    for (b, m) in w.chunks_exact(kind.type_size()).zip(meta.iter_mut()) {
        match kind {
            QuantKind::Q4K | QuantKind::Q5K => {
                let sm: [(u8, u8); 8] = std::array::from_fn(|j| k4_scale_min(&b[4..16], j));
                m.d = read_f16(b, 0);
                m.dmin = read_f16(b, 2);
                for (dst, &(sc, _)) in m.scale.iter_mut().zip(&sm) {
                    *dst = twice(sc as i16);
                }
                for p in 0..4 {
                    m.pairs[p] = pair(sm[2 * p].1 as i16, sm[2 * p + 1].1 as i16);
                }
            }
            QuantKind::Q6K => {
                let sc = &b[192..208];
                m.d = read_f16(b, 208);
                m.dmin = 0.0;
                for (dst, &v) in m.scale.iter_mut().zip(sc) {
                    *dst = twice(v as i8 as i16);
                }
                for p in 0..8 {
                    m.pairs[p] = pair(sc[2 * p] as i8 as i16, sc[2 * p + 1] as i8 as i16);
                }
            }
            QuantKind::Q2K => {
                let sc = &b[0..16];
                m.d = read_f16(b, 80);
                m.dmin = read_f16(b, 82);
                for (dst, &v) in m.scale.iter_mut().zip(sc) {
                    *dst = twice((v & 0xf) as i16);
                }
                for p in 0..8 {
                    m.pairs[p] = pair((sc[2 * p] >> 4) as i16, (sc[2 * p + 1] >> 4) as i16);
                }
            }
            QuantKind::Q3K => {
                let sc = crate::reference::q3_k_scales(&b[96..108]);
                m.d = read_f16(b, 108);
                m.dmin = 0.0;
                for (dst, &v) in m.scale.iter_mut().zip(&sc) {
                    *dst = twice(v as i16);
                }
                for p in 0..8 {
                    m.pairs[p] = pair(sc[2 * p] as i16, sc[2 * p + 1] as i16);
                }
            }
            _ => unreachable!("unpack_row handles the K-quants only"),
        }
    }
}

/// Q2_K's codes (`0..=3`) or Q3_K's plus 4 (`0..=7`), in value order: value
/// `128 h + 32 j + l` has bits `2j..2j+2` of `qs[32 h + l]` (and Q3_K's bit `4h + j` of
/// `hmask[l]`, set meaning no -4). Plain loops the compiler vectorizes.
#[cfg_attr(
    not(all(target_arch = "x86_64", not(wick_kernels_portable))),
    allow(dead_code)
)]
fn low_bit_codes(kind: QuantKind, w: &[u8], codes: &mut [u8]) {
    let three = kind == QuantKind::Q3K;
    let ts = kind.type_size();
    for (b, out) in w.chunks_exact(ts).zip(codes.chunks_exact_mut(256)) {
        let (qs, hmask) = if three {
            (&b[32..96], &b[0..32])
        } else {
            (&b[16..80], &b[0..0])
        };
        for h in 0..2 {
            for j in 0..4 {
                let dst = &mut out[128 * h + 32 * j..128 * h + 32 * j + 32];
                let src = &qs[32 * h..32 * h + 32];
                for l in 0..32 {
                    dst[l] = (src[l] >> (2 * j)) & 3;
                }
                if three {
                    for l in 0..32 {
                        dst[l] |= ((hmask[l] >> (4 * h + j)) & 1) << 2;
                    }
                }
            }
        }
    }
}

/// A row's byte codes, one per value (the GEMM runs on the AVX2 backend only).
fn unpack_codes(kind: QuantKind, w: &[u8], codes: &mut [u8]) {
    #[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
    match kind {
        QuantKind::Q2K | QuantKind::Q3K => low_bit_codes(kind, w, codes),
        QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K => crate::avx2::codes_k(kind, w, codes),
        _ => crate::avx2::codes32(kind, w, codes),
    }
    #[cfg(not(all(target_arch = "x86_64", not(wick_kernels_portable))))]
    {
        let _ = (kind, w, codes);
        unreachable!("the GEMM runs on the AVX2 backend only")
    }
}

/// The fewest activation rows that take the GEMM (smaller batches take the row-by-row
/// kernels: same bits, see the module doc). A K-quant GEMM unpacks every weight row to
/// bytes before it multiplies, a pass over memory that does not overlap the arithmetic;
/// in a model, where every matrix comes cold from memory, that pass costs more than the
/// row-by-row kernels' slower arithmetic until 16 rows. (Qwen2.5-Coder-1.5B Q4_K_M,
/// `batch_decode`: a step of 8 decode rows 154-157 ms through the GEMM, 121-128 ms row by
/// row; 12 rows 205-217 ms against 190 ms; 16 rows 215-232 ms against 254 ms.) The
/// 32-value kinds' unpacking is cheaper, and their GEMM wins from 8 rows on.
pub(crate) fn min_rows(kind: QuantKind) -> usize {
    if kind.is_k_quant() {
        16
    } else {
        8
    }
}

/// A task's unpacked weight rows (two at most).
#[derive(Default)]
pub(crate) struct RowScratch {
    /// One byte code per value.
    pub codes: Vec<u8>,
    /// K-quants: per 256-value block.
    pub meta: Vec<WeightBlock>,
    /// 32-value kinds: per block, `d` and the minimum `m` (Q4_1).
    pub dm: Vec<[f32; 2]>,
}

thread_local! {
    static WEIGHTS: std::cell::RefCell<RowScratch> =
        std::cell::RefCell::new(RowScratch::default());
}

/// Run `f` with room for `rows` unpacked weight rows of `cols` values in `blocks`
/// blocks each.
pub(crate) fn with_scratch(
    rows: usize,
    cols: usize,
    blocks: usize,
    k_quant: bool,
    f: impl FnOnce(&mut RowScratch),
) {
    WEIGHTS.with(|cell| {
        let mut own;
        let mut borrowed = cell.try_borrow_mut();
        let s = match borrowed.as_deref_mut() {
            Ok(s) => s,
            Err(_) => {
                own = RowScratch::default();
                &mut own
            }
        };
        if s.codes.len() < rows * cols {
            s.codes.resize(rows * cols, 0);
        }
        if k_quant && s.meta.len() < rows * blocks {
            s.meta.resize(rows * blocks, WeightBlock::default());
        }
        if !k_quant && s.dm.len() < rows * blocks {
            s.dm.resize(rows * blocks, [0.0; 2]);
        }
        f(s);
    })
}

// ------------------------------------------------------------- 32-value kinds

/// Eight activation rows of one 32-value block (Q8_0/Q8_1), interleaved.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
pub(crate) struct ActGroup32 {
    /// `qs[k]`: columns `4k..4k + 4` of row 0, then of row 1, ... row 7.
    qs: [[i8; 32]; 8],
    d: [f32; 8],
    /// Q8_1's `s` (Q4_1 weights).
    s: [f32; 8],
    /// Each row's sum of its 32 quants (for the weights' code offset).
    isum: [i32; 8],
}

/// Interleave up to eight quantized rows (each `out.len()` blocks) into `out`.
pub(crate) fn pack_group32(rows: &[&[Q8Block]], out: &mut [ActGroup32]) {
    debug_assert!(rows.len() <= 8);
    for (b, g) in out.iter_mut().enumerate() {
        *g = ActGroup32::default();
        for (r, row) in rows.iter().enumerate() {
            let y = &row[b];
            interleave(&y.qs, r, &mut g.qs);
            g.d[r] = y.d;
            g.s[r] = y.s;
            g.isum[r] = y.qs.iter().map(|&q| q as i32).sum();
        }
    }
}

/// Unpack one row of a 32-value kind (Q4_0, Q4_1, Q5_0, MXFP4: its values plus 12) into
/// unsigned byte codes and per-block `[d, m]`.
pub(crate) fn unpack_row32(kind: QuantKind, w: &[u8], codes: &mut [u8], dm: &mut [[f32; 2]]) {
    unpack_codes(kind, w, codes);
    // The table, not a scalar F16C conversion per scale (see `f16_table`).
    let lut = crate::f16::f16_table();
    let f = |b: &[u8], at: usize| lut[u16::from_le_bytes([b[at], b[at + 1]]) as usize];
    let blocks = w.chunks_exact(kind.type_size()).zip(dm.iter_mut());
    match kind {
        QuantKind::Q4_0 | QuantKind::Q5_0 => blocks.for_each(|(b, m)| *m = [f(b, 0), 0.0]),
        QuantKind::Q4_1 => blocks.for_each(|(b, m)| *m = [f(b, 0), f(b, 2)]),
        QuantKind::Mxfp4 => blocks.for_each(|(b, m)| *m = [crate::reference::e8m0_half(b[0]), 0.0]),
        _ => unreachable!("unpack_row32 handles Q4_0, Q4_1, Q5_0 and MXFP4"),
    }
}

/// The interleaved activation groups of one call.
#[derive(Clone, Copy)]
#[cfg_attr(
    not(all(target_arch = "x86_64", not(wick_kernels_portable))),
    allow(dead_code)
)]
pub(crate) enum Groups<'a> {
    K(&'a [ActGroupBlock]),
    B32(&'a [ActGroup32]),
}

/// Continue the `fma` chains `accs[p][r][8 * i + l]` (pair of unpacked weight row
/// `2 * p + r` of `s` and activation row `l` of group `g + i`, `per_row` blocks per
/// row) over the blocks `span`, for the first `rows` rows of `s` and `ng` groups (1 or
/// 2). Chains continued over consecutive spans end with the same bits as one call over
/// their union.
#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dots(
    kind: QuantKind,
    rows: usize,
    ng: usize,
    s: &RowScratch,
    groups: Groups,
    g: usize,
    per_row: usize,
    span: std::ops::Range<usize>,
    accs: &mut [[[f32; 16]; 2]],
) {
    let bs = kind.block_size();
    let cols = per_row * bs;
    let nb = span.len();
    assert!((1..=2).contains(&ng) && span.end <= per_row && crate::avx2::available());
    assert!(s.codes.len() >= rows * cols && accs.len() >= rows.div_ceil(2));
    let k = matches!(groups, Groups::K(_));
    match groups {
        Groups::K(a) => assert!(s.meta.len() >= rows * per_row && a.len() >= (g + ng) * per_row),
        Groups::B32(a) => assert!(s.dm.len() >= rows * per_row && a.len() >= (g + ng) * per_row),
    }
    let codes = s.codes[span.start * bs..].as_ptr();
    let accs = accs.as_mut_ptr();
    // SAFETY: CPU features and every extent read or written were checked above.
    unsafe {
        macro_rules! rows {
            ($ng:literal) => {{
                if k {
                    let Groups::K(a) = groups else { unreachable!() };
                    let meta = s.meta[span.start..].as_ptr();
                    let gs: [*const ActGroupBlock; $ng] =
                        std::array::from_fn(|i| a[(g + i) * per_row + span.start..].as_ptr());
                    // (sub-blocks per block, 16-bit steps, log2 of the codes' offset)
                    let run = match kind {
                        QuantKind::Q6K => imp::rows_k::<$ng, 16, 2, 5>,
                        QuantKind::Q3K => imp::rows_k::<$ng, 16, 4, 2>,
                        QuantKind::Q2K => imp::rows_k::<$ng, 16, 4, 0>,
                        QuantKind::Q4K => imp::rows_k::<$ng, 8, 8, 0>,
                        _ => imp::rows_k::<$ng, 8, 4, 0>,
                    };
                    run(codes, cols, meta, per_row, rows, gs, nb, accs)
                } else {
                    let Groups::B32(a) = groups else {
                        unreachable!()
                    };
                    let dm = s.dm[span.start..].as_ptr();
                    let gs: [*const ActGroup32; $ng] =
                        std::array::from_fn(|i| a[(g + i) * per_row + span.start..].as_ptr());
                    // (16-bit steps, the codes' offset, Q4_1's minimum)
                    let run = match kind {
                        QuantKind::Q4_0 => imp::rows_q32::<$ng, 4, 8, false>,
                        QuantKind::Q4_1 => imp::rows_q32::<$ng, 4, 0, true>,
                        QuantKind::Mxfp4 => imp::rows_q32::<$ng, 4, 12, false>,
                        _ => imp::rows_q32::<$ng, 4, 16, false>,
                    };
                    run(codes, cols, dm, per_row, rows, gs, nb, accs)
                }
            }};
        }
        if ng == 2 {
            rows!(2)
        } else {
            rows!(1)
        }
    }
}

/// The kinds [`direct_dots`] takes straight from their blocks.
pub(crate) fn has_direct(kind: QuantKind) -> bool {
    matches!(kind, QuantKind::Q4_0 | QuantKind::Q4_1 | QuantKind::Q5_0)
}

/// [`dots`] for a kind that [`has_direct`], with the weight rows `w` (whole rows) read
/// as stored instead of unpacked: for calls with few activation groups, where the
/// unpacking pass would cost as much as the products it serves.
#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn direct_dots(
    kind: QuantKind,
    w: &[&[u8]],
    ng: usize,
    groups: &[ActGroup32],
    g: usize,
    per_row: usize,
    span: std::ops::Range<usize>,
    accs: &mut [[[f32; 16]; 2]],
) {
    let ts = kind.type_size();
    assert!(has_direct(kind) && (1..=2).contains(&ng) && span.end <= per_row);
    assert!(crate::avx2::available() && accs.len() >= w.len().div_ceil(2));
    assert!(w.iter().all(|r| r.len() == per_row * ts) && groups.len() >= (g + ng) * per_row);
    let lut = crate::f16::f16_table().as_ptr();
    let (nb, off) = (span.len(), span.start * ts);
    let accs = accs.as_mut_ptr();
    let at = |i: usize| groups[(g + i) * per_row + span.start..].as_ptr();
    // SAFETY: CPU features and every extent read or written were checked above.
    unsafe {
        macro_rules! run {
            ($kind:literal) => {
                if ng == 2 {
                    imp::rows_q4_direct::<2, $kind>(w, off, lut, [at(0), at(1)], nb, accs)
                } else {
                    imp::rows_q4_direct::<1, $kind>(w, off, lut, [at(0)], nb, accs)
                }
            };
        }
        match kind {
            QuantKind::Q4_0 => run!(0),
            QuantKind::Q4_1 => run!(1),
            _ => run!(2),
        }
    }
}

/// Without AVX2 the GEMM is never chosen.
#[cfg(not(all(target_arch = "x86_64", not(wick_kernels_portable))))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn direct_dots(
    _kind: QuantKind,
    _w: &[&[u8]],
    _ng: usize,
    _groups: &[ActGroup32],
    _g: usize,
    _per_row: usize,
    _span: std::ops::Range<usize>,
    _accs: &mut [[[f32; 16]; 2]],
) {
    unreachable!("the GEMM runs on the AVX2 backend only")
}

/// Write the chains [`dots`] left in `accs` for `rows` unpacked rows and the first
/// `lanes` (at most 16) activation rows of its groups: activation row `l`'s value for
/// unpacked row `r` goes to `out[l * out_stride + r]`. Eight unpacked rows at a time are
/// transposed in registers and stored as runs of eight.
///
/// # Safety
/// `out[l * out_stride + r]` must be writable for every `l < lanes`, `r < rows`, and no
/// other thread may write those elements meanwhile.
#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
pub(crate) unsafe fn write_out(
    accs: &[[[f32; 16]; 2]],
    rows: usize,
    lanes: usize,
    out: *mut f32,
    out_stride: usize,
) {
    assert!(lanes <= 16 && accs.len() >= rows.div_ceil(2) && crate::avx2::available());
    let full = rows / 8 * 8;
    for half in 0..lanes.div_ceil(8) {
        let l0 = 8 * half;
        let n = (lanes - l0).min(8);
        for r8 in (0..full).step_by(8) {
            // SAFETY: rows r8..r8 + 8 exist in `accs` (asserted); the caller vouches for
            // `out`.
            unsafe {
                imp::store_transposed(
                    &accs[r8 / 2..r8 / 2 + 4],
                    l0,
                    n,
                    out.add(l0 * out_stride + r8),
                    out_stride,
                )
            };
        }
        for r in full..rows {
            for (l, &v) in accs[r / 2][r % 2].iter().enumerate().skip(l0).take(n) {
                // SAFETY: as above.
                unsafe { *out.add(l * out_stride + r) = v };
            }
        }
    }
}

/// Without AVX2 the GEMM is never chosen.
#[cfg(not(all(target_arch = "x86_64", not(wick_kernels_portable))))]
pub(crate) unsafe fn write_out(
    _accs: &[[[f32; 16]; 2]],
    _rows: usize,
    _lanes: usize,
    _out: *mut f32,
    _out_stride: usize,
) {
    unreachable!("the GEMM runs on the AVX2 backend only")
}

/// Without AVX2 the GEMM is never chosen.
#[cfg(not(all(target_arch = "x86_64", not(wick_kernels_portable))))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dots(
    _kind: QuantKind,
    _rows: usize,
    _ng: usize,
    _s: &RowScratch,
    _groups: Groups,
    _g: usize,
    _per_row: usize,
    _span: std::ops::Range<usize>,
    _accs: &mut [[[f32; 16]; 2]],
) {
    unreachable!("the GEMM runs on the AVX2 backend only")
}

#[cfg(all(target_arch = "x86_64", not(wick_kernels_portable)))]
#[allow(clippy::needless_range_loop)]
mod imp {
    use std::arch::x86_64::*;

    use super::{ActGroup32, ActGroupBlock, WeightBlock};

    /// Generate a driver running a microkernel over the row pairs of unpacked rows
    /// (`codes` rows `stride` bytes apart, block data `mstride` entries apart).
    macro_rules! row_driver {
        ($name:ident, $kernel:ident, $meta:ty, $act:ty, $quad:literal; $($c:ident: $ct:ty),*) => {
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $name<const NG: usize, $(const $c: $ct),*>(
                codes: *const u8,
                stride: usize,
                meta: *const $meta,
                mstride: usize,
                rows: usize,
                acts: [*const $act; NG],
                nb: usize,
                accs: *mut [[f32; 16]; 2],
            ) {
                let mut r = 0;
                // One group: four rows at a time where that measured faster (the
                // K-quants), each loaded activation vector feeding four products; two
                // groups fill the registers with two rows.
                while $quad && NG == 1 && r + 4 <= rows {
                    let cs = std::array::from_fn(|i| codes.add((r + i) * stride));
                    let ms = std::array::from_fn(|i| meta.add((r + i) * mstride));
                    $kernel::<4, NG, $($c),*>(cs, ms, acts, nb, accs.add(r / 2));
                    r += 4;
                }
                while r + 2 <= rows {
                    let cs = [codes.add(r * stride), codes.add((r + 1) * stride)];
                    let ms = [meta.add(r * mstride), meta.add((r + 1) * mstride)];
                    $kernel::<2, NG, $($c),*>(cs, ms, acts, nb, accs.add(r / 2));
                    r += 2;
                }
                if r < rows {
                    let cs = [codes.add(r * stride)];
                    let ms = [meta.add(r * mstride)];
                    $kernel::<1, NG, $($c),*>(cs, ms, acts, nb, accs.add(r / 2));
                }
            }
        };
    }

    /// The 8 x 8 block of `pairs` (rows `2p + k`) and lanes `l0..l0 + 8`, transposed:
    /// lane `l0 + j`'s eight values go to `out[j * stride..][..8]`, for `j < n` (`out`
    /// points at lane `l0`'s run).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn store_transposed(
        pairs: &[[[f32; 16]; 2]],
        l0: usize,
        n: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let row = |r: usize| _mm256_loadu_ps(pairs[r / 2][r % 2][l0..].as_ptr());
        let x: [__m256; 8] = std::array::from_fn(row);
        // Pairs of rows interleaved, then quads, then the 128-bit halves swapped.
        let t0 = _mm256_unpacklo_ps(x[0], x[1]);
        let t1 = _mm256_unpackhi_ps(x[0], x[1]);
        let t2 = _mm256_unpacklo_ps(x[2], x[3]);
        let t3 = _mm256_unpackhi_ps(x[2], x[3]);
        let t4 = _mm256_unpacklo_ps(x[4], x[5]);
        let t5 = _mm256_unpackhi_ps(x[4], x[5]);
        let t6 = _mm256_unpacklo_ps(x[6], x[7]);
        let t7 = _mm256_unpackhi_ps(x[6], x[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
        let y = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, v) in y.iter().enumerate().take(n) {
            _mm256_storeu_ps(out.add(j * stride), *v);
        }
    }

    row_driver!(rows_k, k_quant, WeightBlock, ActGroupBlock, true; SUBS: usize, STEPS: usize, SHIFT: i32);
    row_driver!(rows_q32, q32, [f32; 2], ActGroup32, false; STEPS: usize, OFFSET: i32, MIN: bool);

    /// The inner loop: per (weight row, group), the 16-bit sums over `STEPS` steps of
    /// four columns from column `4 * col4` on, of each row's codes (`codes[r]`, already
    /// at the block) broadcast against the group's interleaved quants (`qs[g]`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn steps<const NR: usize, const NG: usize, const STEPS: usize>(
        codes: [*const u8; NR],
        qs: [*const [i8; 32]; NG],
        col4: usize,
    ) -> [[__m256i; NG]; NR] {
        let mut s16 = [[_mm256_setzero_si256(); NG]; NR];
        for k in col4..col4 + STEPS {
            // Plain loops, not closures: a closure does not inherit the target features
            // and would be called, not inlined, per step.
            let mut a = [_mm256_setzero_si256(); NG];
            for g in 0..NG {
                a[g] = _mm256_loadu_si256(qs[g].add(k) as *const __m256i);
            }
            for r in 0..NR {
                // Four codes of the row, broadcast.
                let w = _mm256_set1_epi32((codes[r].add(4 * k) as *const i32).read_unaligned());
                for g in 0..NG {
                    s16[r][g] = _mm256_add_epi16(s16[r][g], _mm256_maddubs_epi16(w, a[g]));
                }
            }
        }
        s16
    }

    /// The K-quants: 16-bit sums over `STEPS` steps (Q4_K's codes `0..=15`: 8 steps, at
    /// most 8 * 2 * 15 * 127 < 2^15; Q5_K's `0..=31`: 4; Q6_K's `0..=63`: 2; Q2_K's
    /// `0..=3` and Q3_K's `0..=7`: the 4 of a 16-value sub-block), then the scale of the
    /// sub-block (`SUBS` per block: 8 of 32 values, or 16 of 16 for Q2_K, Q3_K, Q6_K).
    /// Then, from the activations' sub-block sums, Q4_K/Q5_K/Q2_K subtract their
    /// minimums (`SHIFT` 0), Q6_K and Q3_K their codes' offset (`1 << SHIFT`: 32, 4).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k_quant<
        const NR: usize,
        const NG: usize,
        const SUBS: usize,
        const STEPS: usize,
        const SHIFT: i32,
    >(
        codes: [*const u8; NR],
        meta: [*const WeightBlock; NR],
        acts: [*const ActGroupBlock; NG],
        nb: usize,
        acc: *mut [[f32; 16]; 2],
    ) {
        let sub4 = 64 / SUBS;
        for b in 0..nb {
            let mut ints = [[_mm256_setzero_si256(); NG]; NR];
            let mut cs = codes;
            for c in cs.iter_mut() {
                *c = c.add(256 * b);
            }
            let mut qs = [std::ptr::null(); NG];
            for g in 0..NG {
                qs[g] = (*acts[g].add(b)).qs.as_ptr();
            }
            for sub in 0..SUBS {
                for h in 0..sub4 / STEPS {
                    let s16 = steps::<NR, NG, STEPS>(cs, qs, sub4 * sub + STEPS * h);
                    for r in 0..NR {
                        let sc = _mm256_set1_epi32((*meta[r].add(b)).scale[sub]);
                        for g in 0..NG {
                            ints[r][g] =
                                _mm256_add_epi32(ints[r][g], _mm256_madd_epi16(s16[r][g], sc));
                        }
                    }
                }
            }
            for r in 0..NR {
                let wb = &*meta[r].add(b);
                for g in 0..NG {
                    let ab = &*acts[g].add(b);
                    let c = (*acc.add(r / 2))[r % 2].as_mut_ptr().add(8 * g);
                    let dy = _mm256_load_ps(ab.d.as_ptr());
                    let d = _mm256_mul_ps(_mm256_set1_ps(wb.d), dy);
                    let mut extra = _mm256_setzero_si256();
                    let sums: &[[i16; 16]] = if SUBS == 16 { &ab.sum16 } else { &ab.sum32 };
                    for (p, sum) in sums.iter().enumerate() {
                        extra = _mm256_add_epi32(
                            extra,
                            _mm256_madd_epi16(
                                _mm256_set1_epi32(wb.pairs[p]),
                                _mm256_loadu_si256(sum.as_ptr() as *const __m256i),
                            ),
                        );
                    }
                    if SHIFT != 0 {
                        let shift = _mm_cvtsi32_si128(SHIFT);
                        let total = _mm256_sub_epi32(ints[r][g], _mm256_sll_epi32(extra, shift));
                        let v = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(total), _mm256_loadu_ps(c));
                        _mm256_storeu_ps(c, v);
                    } else {
                        let dmin = _mm256_mul_ps(_mm256_set1_ps(wb.dmin), dy);
                        let v =
                            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(ints[r][g]), _mm256_loadu_ps(c));
                        _mm256_storeu_ps(c, _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(extra), v));
                    }
                }
            }
        }
    }

    /// Q4_0, Q4_1, Q5_0, MXFP4: 16-bit sums over `STEPS` steps of 4 columns (4 for all:
    /// codes `0..=15` would allow 8, but the shorter chains measured faster; MXFP4's
    /// `0..=24` allow 5), widened with ones; the codes' `OFFSET` times the row sums
    /// subtracted; Q4_1's `m * s` added.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q32<
        const NR: usize,
        const NG: usize,
        const STEPS: usize,
        const OFFSET: i32,
        const MIN: bool,
    >(
        codes: [*const u8; NR],
        dm: [*const [f32; 2]; NR],
        acts: [*const ActGroup32; NG],
        nb: usize,
        acc: *mut [[f32; 16]; 2],
    ) {
        let ones = _mm256_set1_epi16(1);
        // The chains stay in the caller's memory, touched once per block: in registers
        // they would crowd out the inner loop's and spill there instead.
        for b in 0..nb {
            let mut ints = [[_mm256_setzero_si256(); NG]; NR];
            let mut cs = codes;
            for c in cs.iter_mut() {
                *c = c.add(32 * b);
            }
            let mut qs = [std::ptr::null(); NG];
            for g in 0..NG {
                qs[g] = (*acts[g].add(b)).qs.as_ptr();
            }
            for h in 0..8 / STEPS {
                let s16 = steps::<NR, NG, STEPS>(cs, qs, STEPS * h);
                for r in 0..NR {
                    for g in 0..NG {
                        ints[r][g] =
                            _mm256_add_epi32(ints[r][g], _mm256_madd_epi16(s16[r][g], ones));
                    }
                }
            }
            let dm: [[f32; 2]; NR] = std::array::from_fn(|r| *dm[r].add(b));
            finish32::<NR, NG, OFFSET, MIN>(ints, dm, acts, b, acc);
        }
    }

    /// A 32-value block's integer totals `ints[r][g]` into the chains `acc` (see
    /// [`q32`]): the codes' `OFFSET` times the activation row sums subtracted, scaled by
    /// `dm[r][0]` times each row's scale, and Q4_1's `dm[r][1] * s` added.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn finish32<const NR: usize, const NG: usize, const OFFSET: i32, const MIN: bool>(
        ints: [[__m256i; NG]; NR],
        dm: [[f32; 2]; NR],
        acts: [*const ActGroup32; NG],
        b: usize,
        acc: *mut [[f32; 16]; 2],
    ) {
        // A power of two (Q4_0's 8, Q5_0's 16) is a shift: `vpmulld` in this loop costs
        // Q4_0's GEMM a tenth of its speed. MXFP4's 12 is two shifts.
        let (shift_a, shift_b) = match OFFSET {
            12 => (3, 2),
            o => (o.trailing_zeros() as i32, -1),
        };
        const { assert!(OFFSET == 0 || OFFSET == 12 || OFFSET.count_ones() == 1) };
        let (shift_a, shift_b) = (_mm_cvtsi32_si128(shift_a), _mm_cvtsi32_si128(shift_b));
        // Per group, shared by the weight rows: the codes' offset times the row
        // sums, and the rows' scales.
        let mut corr = [_mm256_setzero_si256(); NG];
        let mut dy = [_mm256_setzero_ps(); NG];
        for g in 0..NG {
            let ab = &*acts[g].add(b);
            if OFFSET != 0 {
                let isum = _mm256_load_si256(ab.isum.as_ptr() as *const __m256i);
                corr[g] = _mm256_sll_epi32(isum, shift_a);
                if OFFSET == 12 {
                    corr[g] = _mm256_add_epi32(corr[g], _mm256_sll_epi32(isum, shift_b));
                }
            }
            dy[g] = _mm256_load_ps(ab.d.as_ptr());
        }
        for r in 0..NR {
            let [dw, mw] = dm[r];
            for g in 0..NG {
                let ab = &*acts[g].add(b);
                let mut total = ints[r][g];
                if OFFSET != 0 {
                    total = _mm256_sub_epi32(total, corr[g]);
                }
                let d = _mm256_mul_ps(_mm256_set1_ps(dw), dy[g]);
                let c = (*acc.add(r / 2))[r % 2].as_mut_ptr().add(8 * g);
                let mut v = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(total), _mm256_loadu_ps(c));
                if MIN {
                    v = _mm256_fmadd_ps(_mm256_set1_ps(mw), _mm256_load_ps(ab.s.as_ptr()), v);
                }
                _mm256_storeu_ps(c, v);
            }
        }
    }

    /// Dword `k` (0..4) of each 128-bit lane of `v`, broadcast over the lane: four codes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dword(v: __m256i, k: usize) -> __m256i {
        match k {
            0 => _mm256_shuffle_epi32::<0x00>(v),
            1 => _mm256_shuffle_epi32::<0x55>(v),
            2 => _mm256_shuffle_epi32::<0xaa>(v),
            _ => _mm256_shuffle_epi32::<0xff>(v),
        }
    }

    /// Q4_0 (`KIND` 0), Q4_1 (1) and Q5_0 (2) straight from their blocks, with no
    /// unpacking pass: a block's 16 bytes of nibbles go to both 128-bit lanes, its low
    /// nibbles (values 0..16, steps 0..4) and high ones (values 16..32, steps 4..8) are
    /// masked out once (Q5_0's fifth bits spread to 16 each), and each step's four
    /// codes are one in-lane shuffle away. The same codes, 16-bit sums over four steps
    /// and finish as [`q32`] after `unpack_row32`, so the same bits.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_direct<const NR: usize, const NG: usize, const KIND: u8>(
        w: [*const u8; NR],
        lut: *const f32,
        acts: [*const ActGroup32; NG],
        nb: usize,
        acc: *mut [[f32; 16]; 2],
    ) {
        let (stride, quants) = match KIND {
            0 => (18, 2),
            1 => (20, 4),
            _ => (22, 6),
        };
        let m4 = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        // Q5_0: byte l of each lane picks the byte of `qh` that holds its bit, then the
        // bit itself (values l of half 0 are bits l, of half 1 bits 16 + l).
        let low = _mm256_set_epi64x(0x0101_0101_0101_0101, 0, 0x0101_0101_0101_0101, 0);
        let spread = [low, _mm256_add_epi8(low, _mm256_set1_epi8(2))];
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let sixteen = _mm256_set1_epi8(0x10);
        let f16 = |p: *const u8| *lut.add((p as *const u16).read_unaligned() as usize);
        for b in 0..nb {
            let mut halves = [[_mm256_setzero_si256(); NR]; 2];
            let mut dm = [[0f32; 2]; NR];
            for r in 0..NR {
                let blk = w[r].add(b * stride);
                let v =
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(blk.add(quants) as *const __m128i));
                halves[0][r] = _mm256_and_si256(v, m4);
                halves[1][r] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                if KIND == 2 {
                    let qh = _mm256_set1_epi32((blk.add(2) as *const i32).read_unaligned());
                    for (h, half) in halves.iter_mut().enumerate() {
                        let bytes = _mm256_shuffle_epi8(qh, spread[h]);
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
                        half[r] = _mm256_or_si256(half[r], _mm256_and_si256(set, sixteen));
                    }
                }
                dm[r] = [f16(blk), if KIND == 1 { f16(blk.add(2)) } else { 0.0 }];
            }
            let mut ints = [[_mm256_setzero_si256(); NG]; NR];
            for (h, half) in halves.iter().enumerate() {
                let mut s16 = [[_mm256_setzero_si256(); NG]; NR];
                for k in 0..4 {
                    let mut a = [_mm256_setzero_si256(); NG];
                    for g in 0..NG {
                        let qs = (*acts[g].add(b)).qs.as_ptr().add(4 * h + k);
                        a[g] = _mm256_loadu_si256(qs as *const __m256i);
                    }
                    for r in 0..NR {
                        let wv = dword(half[r], k);
                        for g in 0..NG {
                            s16[r][g] = _mm256_add_epi16(s16[r][g], _mm256_maddubs_epi16(wv, a[g]));
                        }
                    }
                }
                for r in 0..NR {
                    for g in 0..NG {
                        ints[r][g] =
                            _mm256_add_epi32(ints[r][g], _mm256_madd_epi16(s16[r][g], ones));
                    }
                }
            }
            match KIND {
                0 => finish32::<NR, NG, 8, false>(ints, dm, acts, b, acc),
                1 => finish32::<NR, NG, 0, true>(ints, dm, acts, b, acc),
                _ => finish32::<NR, NG, 16, false>(ints, dm, acts, b, acc),
            }
        }
    }

    /// [`q4_direct`] over weight rows `w` from byte `off` on (the span's first block),
    /// two at a time, into the chains `accs[r / 2][r % 2]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_q4_direct<const NG: usize, const KIND: u8>(
        w: &[&[u8]],
        off: usize,
        lut: *const f32,
        acts: [*const ActGroup32; NG],
        nb: usize,
        accs: *mut [[f32; 16]; 2],
    ) {
        let at = |r: &[u8]| r.as_ptr().add(off);
        let mut pairs = w.chunks_exact(2);
        for (i, pair) in pairs.by_ref().enumerate() {
            q4_direct::<2, NG, KIND>([at(pair[0]), at(pair[1])], lut, acts, nb, accs.add(i));
        }
        if let [last] = pairs.remainder() {
            q4_direct::<1, NG, KIND>([at(last)], lut, acts, nb, accs.add(w.len() / 2));
        }
    }
}
