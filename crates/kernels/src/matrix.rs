//! [`QMatrix`] and the matmul driver: activation quantization, task split, tiling.

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::act::{
    quantize_q8_0, quantize_q8_k, round_to_bf16, round_to_f16, Q8Aux, Q8Block, Q8Extras, Q8KBlock,
};
use crate::{avx2, reference, scalar, KernelError, QuantKind, ThreadPool, WeightBytes};

/// Activation rows per tile: their quantized form (at most ~18 KB for 1024 columns)
/// stays in L1 while each weight row of a task is multiplied with all of them.
pub const ACT_TILE: usize = 16;

/// Weight bytes one task works on when `m > ACT_TILE`, so the task's weights stay in L2
/// from one activation tile to the next.
const L2_WEIGHTS: usize = 256 * 1024;

/// Which kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Portable Rust, any CPU.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
}

impl Backend {
    /// The fastest backend this CPU supports (detected once).
    pub fn detect() -> Self {
        static BEST: OnceLock<Backend> = OnceLock::new();
        *BEST.get_or_init(|| {
            if Backend::Avx2.is_available() {
                Backend::Avx2
            } else {
                Backend::Scalar
            }
        })
    }

    /// Whether this backend can run here.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Scalar => true,
            Backend::Avx2 => avx2::available(),
        }
    }
}

/// Quantized activations of one call, shared read-only by every task.
pub(crate) enum Acts<'a> {
    Q8 {
        blocks: &'a [Q8Block],
        /// Decode extras, filled for `m = 1` only (empty otherwise); read by the AVX2
        /// decode kernels.
        #[cfg_attr(
            not(all(target_arch = "x86_64", not(wick_kernels_portable))),
            allow(dead_code)
        )]
        aux: &'a [Q8Aux],
        per_row: usize,
    },
    Q8K {
        blocks: &'a [Q8KBlock],
        per_row: usize,
    },
    F32 {
        data: &'a [f32],
        cols: usize,
    },
}

#[derive(Default)]
struct Scratch {
    q8: Vec<Q8Block>,
    q8aux: Vec<Q8Aux>,
    q8k: Vec<Q8KBlock>,
    groups: Vec<crate::kgemm::ActGroupBlock>,
    groups32: Vec<crate::kgemm::ActGroup32>,
    f: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A raw pointer tasks write disjoint parts through.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: every use writes a region no other task touches during the same `run`.
unsafe impl<T> Sync for SyncPtr<T> {}
unsafe impl<T> Send for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// A weight matrix as GGUF stores it: `rows` output features, each a row of `cols`
/// inputs, raw ggml blocks. Its rows may come in several parts (weights stacked
/// without copying, see [`QMatrix::stack`]), each a [`WeightBytes`].
#[derive(Clone)]
pub struct QMatrix {
    kind: QuantKind,
    rows: usize,
    cols: usize,
    parts: Vec<Part>,
}

/// Consecutive rows of a matrix, starting at row `first`.
#[derive(Clone)]
struct Part {
    first: usize,
    bytes: WeightBytes,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} {}x{})", self.kind, self.rows, self.cols)
    }
}

impl QMatrix {
    /// Checks `cols` is a whole number of blocks and `data` holds exactly `rows` rows.
    pub fn new(
        kind: QuantKind,
        rows: usize,
        cols: usize,
        data: impl Into<WeightBytes>,
    ) -> Result<Self, KernelError> {
        let data: WeightBytes = data.into();
        let block = kind.block_size();
        if !cols.is_multiple_of(block) {
            return Err(KernelError::PartialBlock { kind, cols, block });
        }
        let expected = rows
            .checked_mul(kind.row_bytes(cols))
            .ok_or(KernelError::DataSize {
                kind,
                rows,
                cols,
                expected: usize::MAX,
                got: data.len(),
            })?;
        if data.len() != expected {
            return Err(KernelError::DataSize {
                kind,
                rows,
                cols,
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            kind,
            rows,
            cols,
            parts: vec![Part {
                first: 0,
                bytes: data,
            }],
        })
    }

    /// The same matrix in newly allocated memory (a clone shares the bytes): what a
    /// benchmark reads to stream weights from DRAM rather than from a cache.
    pub fn deep_copy(&self) -> Self {
        Self {
            parts: self
                .parts
                .iter()
                .map(|p| Part {
                    first: p.first,
                    bytes: p.bytes.to_vec().into(),
                })
                .collect(),
            ..*self
        }
    }

    /// The rows of `parts`, in order, as one matrix, without copying them: every part
    /// must have the same kind and width.
    pub fn stack(parts: &[QMatrix]) -> Result<Self, KernelError> {
        let Some(first) = parts.first() else {
            return Err(KernelError::BufferSize {
                what: "stacked matrices",
                expected: 1,
                got: 0,
            });
        };
        let (kind, cols) = (first.kind, first.cols);
        let mut rows = 0;
        let mut out = Vec::new();
        for m in parts {
            if m.kind != kind || m.cols != cols {
                return Err(KernelError::StackMismatch {
                    first: kind,
                    first_cols: cols,
                    other: m.kind,
                    other_cols: m.cols,
                });
            }
            out.extend(m.parts.iter().map(|p| Part {
                first: rows + p.first,
                bytes: p.bytes.clone(),
            }));
            rows += m.rows;
        }
        Ok(Self {
            kind,
            rows,
            cols,
            parts: out,
        })
    }

    pub fn kind(&self) -> QuantKind {
        self.kind
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of weight data.
    pub fn size_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }

    /// The raw ggml blocks, row after row (copied only when the matrix is stacked
    /// from several parts).
    pub fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.parts.as_slice() {
            [one] => std::borrow::Cow::Borrowed(&one.bytes),
            parts => std::borrow::Cow::Owned(
                parts.iter().flat_map(|p| p.bytes.iter().copied()).collect(),
            ),
        }
    }

    /// The part holding `row`, and `row`'s index within it.
    fn part_of(&self, row: usize) -> (&[u8], usize) {
        let i = self.parts.partition_point(|p| p.first <= row) - 1;
        let p = &self.parts[i];
        (&p.bytes, row - p.first)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.kind.row_bytes(self.cols)
    }

    /// Dequantize one row into `out` (`cols` values), e.g. for a token-embedding lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<(), KernelError> {
        if row >= self.rows {
            return Err(KernelError::RowOutOfRange {
                row,
                rows: self.rows,
            });
        }
        if out.len() != self.cols {
            return Err(KernelError::BufferSize {
                what: "dequantize_row output",
                expected: self.cols,
                got: out.len(),
            });
        }
        let rb = self.row_bytes();
        let (bytes, at) = self.part_of(row);
        reference::dequantize_row(self.kind, &bytes[at * rb..(at + 1) * rb], out)
    }

    /// `out[i*rows + j] = dot(x[i*cols..(i+1)*cols], W[j])` for `i` in `0..m`: `x` is
    /// `m x cols` row-major, `out` is `m x rows`. Uses at most `threads` threads of
    /// `pool` (the caller included) and the best backend of this CPU.
    pub fn matmul(
        &self,
        pool: &ThreadPool,
        threads: usize,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        self.matmul_with(Backend::detect(), pool, threads, x, m, out)
    }

    /// [`matmul`](Self::matmul) for the weight rows `rows` alone: `out` is `m` rows of
    /// `rows.len()` values, bit-identical to those columns of the whole product. For a
    /// matrix that stacks several projections, to compute one of them.
    pub fn matmul_rows(
        &self,
        rows: std::ops::Range<usize>,
        pool: &ThreadPool,
        threads: usize,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        if rows.start > rows.end || rows.end > self.rows {
            return Err(KernelError::BufferSize {
                what: "matmul row range end",
                expected: self.rows,
                got: rows.end,
            });
        }
        self.matmul_range(Backend::detect(), rows, pool, threads, x, m, out)
    }

    /// [`matmul`](Self::matmul) on a chosen backend (tests compare them).
    pub fn matmul_with(
        &self,
        backend: Backend,
        pool: &ThreadPool,
        threads: usize,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        self.matmul_range(backend, 0..self.rows, pool, threads, x, m, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_range(
        &self,
        backend: Backend,
        range: std::ops::Range<usize>,
        pool: &ThreadPool,
        threads: usize,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        if !backend.is_available() {
            return Err(KernelError::BackendUnavailable(backend));
        }
        let check = |what, expected: Option<usize>, got| match expected {
            Some(e) if e == got => Ok(()),
            e => Err(KernelError::BufferSize {
                what,
                expected: e.unwrap_or(usize::MAX),
                got,
            }),
        };
        check("matmul input", m.checked_mul(self.cols), x.len())?;
        let n_rows = range.len();
        check("matmul output", m.checked_mul(n_rows), out.len())?;
        if m == 0 || n_rows == 0 {
            return Ok(());
        }
        if self.cols == 0 {
            out.fill(0.0);
            return Ok(());
        }
        let threads = threads.clamp(1, pool.n_threads());
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.run(&mut scratch, backend, &range, pool, threads, x, m, out),
            Err(_) => self.run(
                &mut Scratch::default(),
                backend,
                &range,
                pool,
                threads,
                x,
                m,
                out,
            ),
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        scratch: &mut Scratch,
        backend: Backend,
        range: &std::ops::Range<usize>,
        pool: &ThreadPool,
        threads: usize,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) {
        let cols = self.cols;
        let acts = match self.kind {
            QuantKind::F32 => Acts::F32 { data: x, cols },
            QuantKind::F16 => {
                let buf = grow(&mut scratch.f, m * cols);
                match backend {
                    Backend::Avx2 => {
                        par_rows(pool, threads, m, cols, x, buf, avx2::quant::round_to_f16)
                    }
                    Backend::Scalar => par_rows(pool, threads, m, cols, x, buf, round_to_f16),
                }
                Acts::F32 { data: buf, cols }
            }
            QuantKind::BF16 => {
                let buf = grow(&mut scratch.f, m * cols);
                par_rows(pool, threads, m, cols, x, buf, round_to_bf16);
                Acts::F32 { data: buf, cols }
            }
            QuantKind::Q4_0
            | QuantKind::Q4_1
            | QuantKind::Q5_0
            | QuantKind::Q8_0
            | QuantKind::Mxfp4 => {
                let per_row = cols / 32;
                let extras = Q8Extras::for_kind(self.kind);
                let buf = grow(&mut scratch.q8, m * per_row);
                let aux: &[Q8Aux] = if m == 1 {
                    let aux = grow(&mut scratch.q8aux, per_row);
                    match backend {
                        Backend::Avx2 => avx2::quant::q8_0(x, buf, Some(&mut *aux), extras),
                        Backend::Scalar => quantize_q8_0(x, buf, Some(&mut *aux), extras),
                    }
                    aux
                } else {
                    match backend {
                        Backend::Avx2 => par_rows(pool, threads, m, cols, x, buf, |x, b| {
                            avx2::quant::q8_0(x, b, None, extras)
                        }),
                        Backend::Scalar => par_rows(pool, threads, m, cols, x, buf, |x, b| {
                            quantize_q8_0(x, b, None, extras)
                        }),
                    }
                    &[]
                };
                Acts::Q8 {
                    blocks: buf,
                    aux,
                    per_row,
                }
            }
            QuantKind::Q2K | QuantKind::Q3K | QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K => {
                let per_row = cols / 256;
                let buf = grow(&mut scratch.q8k, m * per_row);
                match backend {
                    Backend::Avx2 => par_rows(pool, threads, m, cols, x, buf, avx2::quant::q8_k),
                    Backend::Scalar => par_rows(pool, threads, m, cols, x, buf, quantize_q8_k),
                }
                Acts::Q8K {
                    blocks: buf,
                    per_row,
                }
            }
        };

        if backend == Backend::Avx2 && m >= crate::kgemm::min_rows(self.kind) {
            let n_groups = m.div_ceil(8);
            match acts {
                Acts::Q8K { blocks, per_row } if self.kind.is_k_quant() => {
                    let groups = grow(&mut scratch.groups, n_groups * per_row);
                    let pack = crate::kgemm::pack_group;
                    pack_groups(pool, threads, m, per_row, blocks, groups, pack);
                    let groups = crate::kgemm::Groups::K(groups);
                    self.run_gemm(range, pool, threads, m, per_row, groups, out);
                    return;
                }
                Acts::Q8 {
                    blocks, per_row, ..
                } if matches!(
                    self.kind,
                    QuantKind::Q4_0 | QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Mxfp4
                ) =>
                {
                    let groups = grow(&mut scratch.groups32, n_groups * per_row);
                    let pack = crate::kgemm::pack_group32;
                    pack_groups(pool, threads, m, per_row, blocks, groups, pack);
                    let groups = crate::kgemm::Groups::B32(groups);
                    self.run_gemm(range, pool, threads, m, per_row, groups, out);
                    return;
                }
                _ => {}
            }
        }
        let rows = range.len();
        let rb = self.row_bytes();
        let tasks_wanted = threads
            * if m <= ACT_TILE {
                DECODE_TASKS_PER_THREAD
            } else {
                2
            };
        let mut chunk = rows.div_ceil(tasks_wanted).max(1);
        if m > ACT_TILE {
            chunk = chunk.min((L2_WEIGHTS / rb).max(4));
        }
        let n_tasks = rows.div_ceil(chunk);
        let outp = SyncPtr(out.as_mut_ptr());
        let kind = self.kind;
        // Each part's bytes and the rows of `range` it holds (relative to the range).
        let segments: Vec<(usize, usize, &[u8])> = self
            .parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let end = self.parts.get(i + 1).map_or(self.rows, |n| n.first);
                let (lo, hi) = (p.first.max(range.start), end.min(range.end));
                (lo < hi).then(|| {
                    (
                        lo - range.start,
                        hi - range.start,
                        &p.bytes[(lo - p.first) * rb..(hi - p.first) * rb],
                    )
                })
            })
            .collect();
        let task = |t: usize| {
            let r0 = t * chunk;
            let r1 = (r0 + chunk).min(rows);
            let mut res = [0f32; 4 * ACT_TILE];
            for a0 in (0..m).step_by(ACT_TILE) {
                let n = (m - a0).min(ACT_TILE);
                let mut r = r0;
                let mut seg = segments.partition_point(|s| s.1 <= r);
                while r < r1 {
                    let Some(&(s0, s1, data)) = segments.get(seg) else {
                        break;
                    };
                    if r >= s1 {
                        seg += 1;
                        continue;
                    }
                    let nr = (r1.min(s1) - r).min(4);
                    let w = &data[(r - s0) * rb..(r - s0 + nr) * rb];
                    block_dots(backend, kind, w, rb, nr, &acts, a0, n, &mut res[..nr * n]);
                    for ri in 0..nr {
                        for i in 0..n {
                            // SAFETY: a0 + i < m and r + ri < rows: in bounds of `out`;
                            // rows r0..r1 belong to this task alone.
                            unsafe { *outp.get().add((a0 + i) * rows + r + ri) = res[ri * n + i] };
                        }
                    }
                    r += nr;
                }
            }
        };
        pool.run(threads, n_tasks, &task);
    }
}

/// Row chunks per thread of a product with few activation rows: enough to even out a
/// thread that falls behind, few enough that the chunks are long streams. Every chunk
/// starts cold (its rows are not prefetched) and each one's last rows prefetch the next
/// chunk's, which another thread may read. Measured on Zen 3 with 2 threads, from 8
/// chunks per thread to 2: Qwen2.5-1.5B's 256-row `attn_k`/`attn_v` 16-17 -> 24-25 GB/s,
/// its 1536-row `attn_output` 28 -> 32, the large matrices the same or better.
const DECODE_TASKS_PER_THREAD: usize = 2;

/// `m` quantized activation rows (`per_row` blocks each) interleaved in groups of 8 by
/// `pack`, one task per group.
fn pack_groups<B: Sync, G: Send>(
    pool: &ThreadPool,
    threads: usize,
    m: usize,
    per_row: usize,
    blocks: &[B],
    groups: &mut [G],
    pack: impl Fn(&[&[B]], &mut [G]) + Sync,
) {
    let gp = SyncPtr(groups.as_mut_ptr());
    pool.run(threads, m.div_ceil(8), &|g| {
        let rows: Vec<&[B]> = (8 * g..(8 * g + 8).min(m))
            .map(|a| &blocks[a * per_row..(a + 1) * per_row])
            .collect();
        // SAFETY: group g's blocks are written by this task alone and are in bounds.
        let dst = unsafe { std::slice::from_raw_parts_mut(gp.get().add(g * per_row), per_row) };
        pack(&rows, dst);
    });
}

/// Unpacked weight bytes a GEMM task keeps at once (in L2), and interleaved activation
/// bytes of the two groups one pass multiplies them with (in L1).
const GEMM_WEIGHT_BYTES: usize = 160 * 1024;
const GEMM_ACT_BYTES: usize = 20 * 1024;

/// The most groups of 8 activation rows a GEMM call takes its weights as stored
/// ([`crate::kgemm::direct_dots`]) instead of unpacked.
const DIRECT_MAX_GROUPS: usize = 2;

impl QMatrix {
    /// The GEMM ([`crate::kgemm`]) over activations interleaved in groups of 8: the weight
    /// rows of `range` are split over tasks; a task unpacks as many rows as fit
    /// [`GEMM_WEIGHT_BYTES`], then, for each pair of groups, runs every two of those rows
    /// against the pair over a span of blocks that fits [`GEMM_ACT_BYTES`], span after
    /// span, continuing each pair's chain.
    #[allow(clippy::too_many_arguments)]
    fn run_gemm(
        &self,
        range: &std::ops::Range<usize>,
        pool: &ThreadPool,
        threads: usize,
        m: usize,
        per_row: usize,
        groups: crate::kgemm::Groups,
        out: &mut [f32],
    ) {
        let n_groups = m.div_ceil(8);
        let rows = range.len();
        let rb = self.row_bytes();
        let chunk = rows.div_ceil(threads * 8).max(2).next_multiple_of(2);
        let outp = SyncPtr(out.as_mut_ptr());
        let kind = self.kind;
        let cols = self.cols;
        let k_quant = matches!(groups, crate::kgemm::Groups::K(_));
        let (meta_bytes, group_block_bytes) = if k_quant {
            (
                std::mem::size_of::<crate::kgemm::WeightBlock>(),
                std::mem::size_of::<crate::kgemm::ActGroupBlock>(),
            )
        } else {
            (8, std::mem::size_of::<crate::kgemm::ActGroup32>())
        };
        let unpacked_row = cols + per_row * meta_bytes;
        let held = (GEMM_WEIGHT_BYTES / unpacked_row)
            .clamp(2, chunk)
            .next_multiple_of(2);
        let span = (GEMM_ACT_BYTES / (2 * group_block_bytes)).clamp(1, per_row);
        // Few activation groups: each weight row serves one pass, so it is read as
        // stored rather than unpacked first.
        let direct = n_groups <= DIRECT_MAX_GROUPS && crate::kgemm::has_direct(kind);
        // Room for unpacked rows only where they are unpacked.
        let unpacked = if direct { 0 } else { held };
        pool.run(threads, rows.div_ceil(chunk), &|t| {
            crate::kgemm::with_scratch(unpacked, cols, per_row, k_quant, |s| {
                let end = ((t + 1) * chunk).min(rows);
                let mut accs = vec![[[0f32; 16]; 2]; held / 2];
                let mut r0 = t * chunk;
                let mut stored: Vec<&[u8]> = Vec::new();
                while r0 < end {
                    let r1 = (r0 + held).min(end);
                    stored.clear();
                    for i in 0..r1 - r0 {
                        let (bytes, at) = self.part_of(range.start + r0 + i);
                        let w = &bytes[at * rb..(at + 1) * rb];
                        if direct {
                            stored.push(w);
                            continue;
                        }
                        let codes = &mut s.codes[i * cols..(i + 1) * cols];
                        if k_quant {
                            let meta = &mut s.meta[i * per_row..(i + 1) * per_row];
                            crate::kgemm::unpack_row(kind, w, codes, meta);
                        } else {
                            let dm = &mut s.dm[i * per_row..(i + 1) * per_row];
                            crate::kgemm::unpack_row32(kind, w, codes, dm);
                        }
                    }
                    for g in (0..n_groups).step_by(2) {
                        let ng = (n_groups - g).min(2);
                        let pairs = (r1 - r0).div_ceil(2);
                        accs[..pairs].fill([[0f32; 16]; 2]);
                        for b0 in (0..per_row).step_by(span) {
                            let blocks = b0..(b0 + span).min(per_row);
                            let accs = &mut accs[..pairs];
                            match groups {
                                crate::kgemm::Groups::B32(a) if direct => {
                                    crate::kgemm::direct_dots(
                                        kind, &stored, ng, a, g, per_row, blocks, accs,
                                    );
                                }
                                _ => crate::kgemm::dots(
                                    kind,
                                    r1 - r0,
                                    ng,
                                    s,
                                    groups,
                                    g,
                                    per_row,
                                    blocks,
                                    accs,
                                ),
                            }
                        }
                        // Activation row after activation row, each a run of
                        // consecutive outputs.
                        let lanes = (8 * ng).min(m - 8 * g);
                        // SAFETY: activation rows 8g..8g + lanes < m and weight rows
                        // r0..r1 < rows: in bounds of `out`; this task's rows are its own.
                        unsafe {
                            let at = outp.get().add(8 * g * rows + r0);
                            crate::kgemm::write_out(&accs[..pairs], r1 - r0, lanes, at, rows);
                        }
                    }
                    r0 = r1;
                }
            });
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn block_dots(
    backend: Backend,
    kind: QuantKind,
    w: &[u8],
    rb: usize,
    nr: usize,
    acts: &Acts,
    a0: usize,
    n: usize,
    out: &mut [f32],
) {
    match backend {
        Backend::Avx2 => avx2::block_dots(kind, w, rb, nr, acts, a0, n, out),
        Backend::Scalar => scalar::block_dots(kind, w, rb, nr, acts, a0, n, out),
    }
}

/// The first `n` elements of `v`, growing it if needed (contents are overwritten).
fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// Apply `f(x_row, out_row)` to each of `m` rows, over the pool when there are several.
fn par_rows<T: Send>(
    pool: &ThreadPool,
    threads: usize,
    m: usize,
    cols: usize,
    x: &[f32],
    out: &mut [T],
    f: impl Fn(&[f32], &mut [T]) + Sync,
) {
    let per_row = out.len() / m;
    if m < 4 || threads == 1 {
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(per_row)) {
            f(xr, or);
        }
        return;
    }
    let rows_per_task = m.div_ceil(threads * 2);
    let outp = SyncPtr(out.as_mut_ptr());
    pool.run(threads, m.div_ceil(rows_per_task), &|t| {
        let r0 = t * rows_per_task;
        let r1 = (r0 + rows_per_task).min(m);
        for r in r0..r1 {
            // SAFETY: row r of `out` is written by this task alone and is in bounds.
            let or =
                unsafe { std::slice::from_raw_parts_mut(outp.get().add(r * per_row), per_row) };
            f(&x[r * cols..(r + 1) * cols], or);
        }
    });
}
