//! Causal attention over an f16 KV cache, fused: scores, softmax and the weighted sum of
//! values in one pass per (sequence, head), reading only the positions in use.
//!
//! Grouped-query attention: one task takes a run of the query heads that share a KV
//! head, so each cached key and value is read (and widened from f16) once for all of
//! them, while every head's arithmetic stays exactly what it is alone. A prompt chunk's
//! task widens its KV head to f32 once, so its rows do not convert the same positions
//! again and again. Queries are rounded to f16 before the key dot product, as
//! llama.cpp's CPU flash attention does with an f16 cache.

use std::cell::RefCell;
use std::ops::Range;

use half::f16;
use half::slice::HalfFloatSliceExt;
use wick_kernels::ThreadPool;

/// Head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Multiplier of `q . k` (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// `cap * tanh(score / cap)` on the scaled scores (gemma2).
    pub softcap: Option<f32>,
    /// A query at position `p` sees keys `p - window + 1 ..= p` only (sliding-window
    /// layers); `None` sees every earlier position.
    pub window: Option<usize>,
}

impl AttnDims {
    /// Plain causal attention with the usual `1 / sqrt(head_dim)` scale.
    pub fn causal(n_head: usize, n_kv_head: usize, head_dim: usize) -> Self {
        Self {
            n_head,
            n_kv_head,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
            window: None,
        }
    }
}

/// One sequence's part of a batched attention call.
pub struct AttnJob<'a> {
    /// `t` query rows of `n_head * head_dim`.
    pub q: &'a [f32],
    /// Cached keys and values for positions `0..start + t`, rows of `n_kv_head * head_dim`.
    pub k: &'a [f16],
    pub v: &'a [f16],
    /// Position of the first query row.
    pub start: usize,
    /// Row of the batch output where this job's rows begin.
    pub out_row: usize,
}

/// Raw output pointer shared by the tasks; each task writes a disjoint set of
/// `(row, head)` spans of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint spans (see `attend`), and `attend` does not return until
// every task is done, so the pointer never outlives the borrow it came from.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Per-thread buffers of one (sequence, query heads) task.
struct Scratch {
    q16: Vec<f32>,
    /// The f16 running sum of values of a row.
    acc16: Vec<f16>,
    /// Per head and position: the online softmax's rescale factor and weight.
    steps: Vec<(f32, f32)>,
    /// Per head: the softmax's final maximum and sum of weights.
    totals: Vec<(f32, f32)>,
    scores: Vec<f32>,
    acc: Vec<f32>,
    /// The head's keys and values for every position, widened to f32 once per task.
    k: Vec<f32>,
    v: Vec<f32>,
    #[cfg(target_arch = "x86_64")]
    tiled: Option<super::attention_tiled::TiledScratch>,
}

impl Scratch {
    const fn new() -> Self {
        Self {
            q16: Vec::new(),
            acc16: Vec::new(),
            steps: Vec::new(),
            totals: Vec::new(),
            scores: Vec::new(),
            acc: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            #[cfg(target_arch = "x86_64")]
            tiled: None,
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Attention for every job's rows, written to `out` (rows of `n_head * head_dim`).
/// `sinks` holds, per head, the logit of a sink every query attends to besides the
/// keys (gpt-oss): it takes its share of the softmax and adds no value.
pub fn attend(
    pool: &ThreadPool,
    threads: usize,
    dims: AttnDims,
    sinks: Option<&[f32]>,
    jobs: &[AttnJob],
    out: &mut [f32],
) {
    attend_split(pool, threads, dims, sinks, jobs, out, usize::MAX);
}

/// [`attend`] with at most `max_heads` query heads per task (tests compare 1 with the
/// grouping `attend` chooses: the results must be the same bits).
fn attend_split(
    pool: &ThreadPool,
    threads: usize,
    dims: AttnDims,
    sinks: Option<&[f32]>,
    jobs: &[AttnJob],
    out: &mut [f32],
    max_heads: usize,
) {
    let width = dims.n_head * dims.head_dim;
    let rows: usize = jobs.iter().map(|j| j.q.len() / width).sum();
    let needed = jobs
        .iter()
        .map(|j| (j.out_row + j.q.len() / width) * width)
        .max()
        .unwrap_or(0);
    assert!(
        needed <= out.len() && rows * width <= out.len(),
        "attention output too small"
    );
    let tasks = head_tasks(dims, threads, jobs, max_heads);
    let ptr = OutPtr(out.as_mut_ptr());
    pool.run(threads, tasks.len(), &|task| {
        let (job, heads) = &tasks[task];
        let job = &jobs[*job];
        let ptr = ptr.get();
        SCRATCH.with(|s| {
            let scratch = &mut *s.borrow_mut();
            attend_heads(
                job,
                heads.clone(),
                dims,
                sinks,
                scratch,
                |row, head, values| {
                    let at = (job.out_row + row) * width + head * dims.head_dim;
                    // SAFETY: `at..at + head_dim` lies inside `out` (checked above) and no
                    // other task writes this (row, head) span.
                    unsafe {
                        std::ptr::copy_nonoverlapping(values.as_ptr(), ptr.add(at), values.len())
                    };
                },
            );
        });
    });
}

/// The tasks of one attention call: a job and a run of its query heads that share one
/// KV head, so each cached key and value is read (and widened) once for all of them.
/// A group is split when there would otherwise be fewer than two tasks per thread. A
/// long prompt chunk (the tiled path, which works head by head) keeps one head per task.
fn head_tasks(
    dims: AttnDims,
    threads: usize,
    jobs: &[AttnJob],
    max_heads: usize,
) -> Vec<(usize, Range<usize>)> {
    let width = dims.n_head * dims.head_dim;
    let group = (dims.n_head / dims.n_kv_head.max(1)).max(1);
    let groups = jobs.len() * dims.n_head.div_ceil(group);
    let parts = (2 * threads).div_ceil(groups.max(1)).clamp(1, group);
    let grouped = group.div_ceil(parts).min(max_heads).max(1);
    let mut tasks = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let per = if tiled_rows(job.q.len() / width, dims.head_dim) {
            1
        } else {
            grouped
        };
        for g0 in (0..dims.n_head).step_by(group) {
            let g1 = (g0 + group).min(dims.n_head);
            for h in (g0..g1).step_by(per) {
                tasks.push((j, h..(h + per).min(g1)));
            }
        }
    }
    tasks
}

/// Whether `t` query rows of one sequence take llama.cpp's tiled path.
fn tiled_rows(t: usize, head_dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use super::attention_tiled as tiled_path;
        t >= tiled_path::TILED_MIN_ROWS && tiled_path::available(head_dim)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (t, head_dim);
        false
    }
}

/// Attention of `job`'s rows for the query `heads` (all of one KV head); `emit(row,
/// head, values)` receives each output.
fn attend_heads(
    job: &AttnJob,
    heads: Range<usize>,
    dims: AttnDims,
    sinks: Option<&[f32]>,
    scratch: &mut Scratch,
    mut emit: impl FnMut(usize, usize, &[f32]),
) {
    let hd = dims.head_dim;
    let width = dims.n_head * hd;
    let kv_width = dims.n_kv_head * hd;
    let kv_head = heads.start / (dims.n_head / dims.n_kv_head);
    let t = job.q.len() / width;
    let positions = job.start + t;
    let sink = |head: usize| sinks.and_then(|s| s.get(head)).copied();
    // With a soft-cap the scale goes inside the tanh, as llama.cpp folds it.
    let (scale, cap) = match dims.softcap {
        Some(cap) if cap > 0.0 => (dims.scale / cap, Some(cap)),
        _ => (dims.scale, None),
    };
    let Scratch {
        q16,
        acc16,
        steps,
        totals,
        scores,
        acc,
        k,
        v,
        #[cfg(target_arch = "x86_64")]
        tiled,
    } = scratch;
    // A long prompt chunk: llama.cpp's tiled kernel (f32 throughout, see
    // `attention_tiled`), as llama.cpp takes it for micro-batches this large.
    #[cfg(target_arch = "x86_64")]
    if tiled_rows(t, hd) {
        use super::attention_tiled as tiled_path;
        widen_head(job.k, kv_width, kv_head * hd, hd, positions, k);
        widen_head(job.v, kv_width, kv_head * hd, hd, positions, v);
        for head in heads {
            let rows = tiled_path::HeadRows {
                q: &job.q[head * hd..],
                q_stride: width,
                t,
                start: job.start,
                k,
                v,
                head_dim: hd,
                window: dims.window,
                scale,
                softcap: cap,
                sink: sink(head),
            };
            let tiled = tiled.get_or_insert_with(Default::default);
            tiled_path::attend_head(&rows, tiled, |row, values| emit(row, head, values));
        }
        return;
    }
    // A prompt chunk reads every cached position once per row: widen the head to f32
    // once. A decode row reads each position once: read the f16 cache directly.
    let (k_rows, v_rows) = if t > 2 {
        widen_head(job.k, kv_width, kv_head * hd, hd, positions, k);
        widen_head(job.v, kv_width, kv_head * hd, hd, positions, v);
        (
            KvRows::F32 {
                data: k,
                stride: hd,
            },
            KvRows::F32 {
                data: v,
                stride: hd,
            },
        )
    } else {
        (
            KvRows::F16 {
                data: &job.k[(kv_head * hd).min(job.k.len())..],
                stride: kv_width,
            },
            KvRows::F16 {
                data: &job.v[(kv_head * hd).min(job.v.len())..],
                stride: kv_width,
            },
        )
    };
    let nh = heads.len();
    q16.resize(nh * hd, 0.0);
    acc.resize(hd, 0.0);
    acc16.resize(nh * hd, f16::ZERO);
    totals.resize(nh, (0.0, 0.0));
    for r in 0..t {
        let n = job.start + r + 1;
        let first = dims.window.map_or(0, |w| n.saturating_sub(w));
        let len = n - first;
        for (i, head) in heads.clone().enumerate() {
            let q = &job.q[r * width + head * hd..][..hd];
            for (dst, &src) in q16[i * hd..][..hd].iter_mut().zip(q) {
                *dst = f16::from_f32(src).to_f32();
            }
        }
        scores.resize(nh * len, 0.0);
        key_scores_heads(q16, nh, k_rows.skip(first), scale, scores);
        if let Some(cap) = cap {
            for s in scores.iter_mut() {
                *s = cap * s.tanh();
            }
        }
        // llama.cpp's CPU flash attention with an f16 cache keeps the running sum of
        // values in f16 (rounded after every position, rescaled by an online softmax);
        // follow it, its rounding moves the logits visibly. Prompt rows read the
        // widened copy of the same f16 values, so every row computes the same way.
        steps.resize(nh * len, (1.0, 1.0));
        for (i, total) in totals.iter_mut().enumerate() {
            let at = i * len..(i + 1) * len;
            *total = softmax_steps(&scores[at.clone()], &mut steps[at]);
        }
        accumulate_f16_heads(acc16, nh, v_rows.skip(first), steps);
        for (i, head) in heads.clone().enumerate() {
            let (max, sum) = totals[i];
            finish_values(max, sum, sink(head), &acc16[i * hd..][..hd], acc);
            emit(r, head, acc);
        }
    }
}

/// The online softmax's bookkeeping over one row's `scores`, as llama.cpp's CPU flash
/// attention does it: per position, the factor the sum of values so far is rescaled by
/// and the weight of that position's values (`steps`); returns the final maximum and
/// sum of weights. It is scalar and the same for every dimension of the values.
fn softmax_steps(scores: &[f32], steps: &mut [(f32, f32)]) -> (f32, f32) {
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    for (&s, step) in scores.iter().zip(steps.iter_mut()) {
        let (mut rescale, mut weight) = (1.0f32, 1.0f32);
        if s > max {
            rescale = (max - s).exp();
            max = s;
        } else {
            weight = (s - max).exp();
        }
        *step = (rescale, weight);
        sum = sum * rescale + weight;
    }
    (max, sum)
}

/// `out = acc / sum`, the values summed with weights whose maximum was `max`. A `sink`
/// logit joins the softmax after the values are summed (in f32, as ggml adds it).
fn finish_values(max: f32, mut sum: f32, sink: Option<f32>, acc16: &[f16], out: &mut [f32]) {
    // A sink above the running maximum rescales the values summed so far.
    let mut rescale = 1.0f32;
    if let Some(s) = sink {
        if s > max {
            rescale = (max - s).exp();
            sum = sum * rescale + 1.0;
        } else {
            sum += (s - max).exp();
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, a) in out.iter_mut().zip(acc16.iter()) {
        *o = a.to_f32() * rescale * inv;
    }
}

/// `acc = f16(acc * rescale_j)` (when not 1) then `acc = f16(acc + v[j] * weight_j)` for
/// every position `j` in order, from `acc = 0` (the fma fused on the SIMD path, as
/// ggml's is). Rows `0..steps.len()` of `v` must exist.
fn accumulate_f16(acc: &mut [f16], v: KvRows, steps: &[(f32, f32)]) {
    acc.fill(f16::ZERO);
    #[cfg(target_arch = "x86_64")]
    if has_simd() && acc.len().is_multiple_of(8) {
        // SAFETY: the CPU has the features; `online_f16_values` checked that every row
        // holds `acc.len()` values.
        unsafe {
            match v {
                KvRows::F16 { data, stride } => {
                    x86::accumulate_f16::<true>(acc, data.as_ptr().cast(), stride, steps)
                }
                KvRows::F32 { data, stride } => {
                    x86::accumulate_f16::<false>(acc, data.as_ptr().cast(), stride, steps)
                }
            }
        }
        return;
    }
    for (j, &(rescale, weight)) in steps.iter().enumerate() {
        for (i, a) in acc.iter_mut().enumerate() {
            let x = if rescale != 1.0 {
                f16::from_f32(a.to_f32() * rescale).to_f32()
            } else {
                a.to_f32()
            };
            *a = f16::from_f32(x + v.get(j, i) * weight);
        }
    }
}

/// [`key_scores`] for several query heads against the same keys: `q` holds the
/// `heads` queries one after another and `out` their scores (`out.len() /
/// heads` positions each, head by head). Each score is computed exactly as
/// [`key_scores`] computes it; on the SIMD path each key is loaded (and widened) once
/// for up to four heads.
fn key_scores_heads(q: &[f32], heads: usize, k: KvRows, scale: f32, out: &mut [f32]) {
    let head_dim = q.len() / heads.max(1);
    let n = out.len() / heads.max(1);
    assert!(k.holds(n, head_dim), "key rows out of range");
    #[cfg(target_arch = "x86_64")]
    if heads > 1 && has_simd() && head_dim.is_multiple_of(16) {
        let mut h = 0;
        while h < heads {
            let take = (heads - h).min(4);
            let qs = &q[h * head_dim..(h + take) * head_dim];
            let outs = &mut out[h * n..(h + take) * n];
            // SAFETY: the CPU has the features; the rows were bounds-checked above and
            // `qs`/`outs` hold `take` heads.
            unsafe {
                let (base, stride, half) = k.raw();
                match (take, half) {
                    (4, true) => x86::key_scores_heads::<true, 4>(qs, base, stride, scale, outs),
                    (3, true) => x86::key_scores_heads::<true, 3>(qs, base, stride, scale, outs),
                    (2, true) => x86::key_scores_heads::<true, 2>(qs, base, stride, scale, outs),
                    (4, false) => x86::key_scores_heads::<false, 4>(qs, base, stride, scale, outs),
                    (3, false) => x86::key_scores_heads::<false, 3>(qs, base, stride, scale, outs),
                    (2, false) => x86::key_scores_heads::<false, 2>(qs, base, stride, scale, outs),
                    _ => key_scores(qs, k, scale, outs),
                }
            }
            h += take;
        }
        return;
    }
    for h in 0..heads {
        key_scores(
            &q[h * head_dim..(h + 1) * head_dim],
            k,
            scale,
            &mut out[h * n..(h + 1) * n],
        );
    }
}

/// [`accumulate_f16`] for several heads reading the same value rows: `acc` holds the
/// `heads` running sums one after another and `steps` their softmax steps (the same
/// number each, head by head). Each head's sum is computed exactly as
/// [`accumulate_f16`] computes it; on the SIMD path each value row is loaded (and
/// widened) once for up to four heads.
fn accumulate_f16_heads(acc: &mut [f16], heads: usize, v: KvRows, steps: &[(f32, f32)]) {
    let hd = acc.len() / heads.max(1);
    let n = steps.len() / heads.max(1);
    assert!(v.holds(n, hd), "value rows out of range");
    #[cfg(target_arch = "x86_64")]
    if heads > 1 && has_simd() && hd.is_multiple_of(8) {
        acc.fill(f16::ZERO);
        let mut h = 0;
        while h < heads {
            let take = (heads - h).min(4);
            let a = &mut acc[h * hd..(h + take) * hd];
            let s = &steps[h * n..(h + take) * n];
            // SAFETY: the CPU has the features; the rows were bounds-checked above and
            // `a`/`s` hold `take` heads.
            unsafe {
                let (base, stride, half) = v.raw();
                match (take, half) {
                    (4, true) => x86::accumulate_f16_heads::<true, 4, 2>(a, base, stride, s, n),
                    (3, true) => x86::accumulate_f16_heads::<true, 3, 2>(a, base, stride, s, n),
                    (2, true) => x86::accumulate_f16_heads::<true, 2, 4>(a, base, stride, s, n),
                    (4, false) => x86::accumulate_f16_heads::<false, 4, 2>(a, base, stride, s, n),
                    (3, false) => x86::accumulate_f16_heads::<false, 3, 2>(a, base, stride, s, n),
                    (2, false) => x86::accumulate_f16_heads::<false, 2, 4>(a, base, stride, s, n),
                    _ => accumulate_f16(a, v, s),
                }
            }
            h += take;
        }
        return;
    }
    for h in 0..heads {
        accumulate_f16(
            &mut acc[h * hd..(h + 1) * hd],
            v,
            &steps[h * n..(h + 1) * n],
        );
    }
}

/// Copy one head's `head_dim` values at `offset` of each of `positions` cache rows into
/// a contiguous f32 buffer.
fn widen_head(
    cache: &[f16],
    row: usize,
    offset: usize,
    hd: usize,
    positions: usize,
    out: &mut Vec<f32>,
) {
    out.resize(positions * hd, 0.0);
    for (j, dst) in out.chunks_exact_mut(hd).enumerate() {
        cache[j * row + offset..][..hd].convert_to_f32_slice(dst);
    }
}

/// Rows of cached keys or values: row `j` is `data[j * stride..][..head_dim]`.
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    /// Straight from the f16 cache (decode: each position is read once per row).
    F16 { data: &'a [f16], stride: usize },
    /// Widened to f32 (prefill: each position is read by many rows).
    F32 { data: &'a [f32], stride: usize },
}

impl<'a> KvRows<'a> {
    /// The rows from row `first` on.
    fn skip(self, first: usize) -> KvRows<'a> {
        match self {
            KvRows::F16 { data, stride } => KvRows::F16 {
                data: &data[(first * stride).min(data.len())..],
                stride,
            },
            KvRows::F32 { data, stride } => KvRows::F32 {
                data: &data[(first * stride).min(data.len())..],
                stride,
            },
        }
    }

    /// Whether `n` rows of `hd` values exist.
    fn holds(&self, n: usize, hd: usize) -> bool {
        let (len, stride) = match self {
            KvRows::F16 { data, stride } => (data.len(), *stride),
            KvRows::F32 { data, stride } => (data.len(), *stride),
        };
        n == 0 || (n - 1) * stride + hd <= len
    }

    /// The rows' first byte, their stride in elements and whether they are f16 (for the
    /// SIMD kernels, generic over the element type).
    #[cfg(target_arch = "x86_64")]
    fn raw(self) -> (*const u8, usize, bool) {
        match self {
            KvRows::F16 { data, stride } => (data.as_ptr().cast(), stride, true),
            KvRows::F32 { data, stride } => (data.as_ptr().cast(), stride, false),
        }
    }

    fn get(&self, j: usize, i: usize) -> f32 {
        match self {
            KvRows::F16 { data, stride } => data[j * stride + i].to_f32(),
            KvRows::F32 { data, stride } => data[j * stride + i],
        }
    }
}

/// `out[j] = dot(q, k[j]) * scale` for the first `out.len()` key rows.
pub fn key_scores(q: &[f32], k: KvRows, scale: f32, out: &mut [f32]) {
    assert!(k.holds(out.len(), q.len()), "key rows out of range");
    #[cfg(target_arch = "x86_64")]
    if has_simd() {
        // SAFETY: the CPU has the features; the rows were bounds-checked above.
        unsafe {
            match k {
                KvRows::F16 { data, stride } => {
                    x86::key_scores::<true>(q, data.as_ptr().cast(), stride, scale, out)
                }
                KvRows::F32 { data, stride } => {
                    x86::key_scores::<false>(q, data.as_ptr().cast(), stride, scale, out)
                }
            }
        }
        return;
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = q
            .iter()
            .enumerate()
            .map(|(i, a)| a * k.get(j, i))
            .sum::<f32>()
            * scale;
    }
}

#[cfg(target_arch = "x86_64")]
fn has_simd() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! `HALF` selects f16 rows (widened with F16C on load) or f32 rows; the arithmetic
    //! is the same either way, so both give bit-identical results.

    use half::f16;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `acc.len()` a multiple of 8; rows
    /// `0..steps.len()` of `acc.len()` values (f16 if `HALF`, else f32), `stride` elements
    /// apart from `v`, must be readable.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn accumulate_f16<const HALF: bool>(
        acc: &mut [f16],
        v: *const u8,
        stride: usize,
        steps: &[(f32, f32)],
    ) {
        let hd = acc.len();
        let mut at = 0;
        while hd - at >= 64 {
            accumulate_chunk::<HALF, 8>(acc, at, v, stride, steps);
            at += 64;
        }
        while at < hd {
            accumulate_chunk::<HALF, 1>(acc, at, v, stride, steps);
            at += 8;
        }
    }

    /// `N` registers of the running sum (dimensions `at..at + 8N`) kept in registers
    /// over every position, rounded to f16 after each operation.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn accumulate_chunk<const HALF: bool, const N: usize>(
        acc: &mut [f16],
        at: usize,
        v: *const u8,
        stride: usize,
        steps: &[(f32, f32)],
    ) {
        #[inline(always)]
        unsafe fn round(x: __m256) -> __m256 {
            _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
        }
        let mut r = [_mm256_setzero_ps(); N];
        for (j, &(rescale, weight)) in steps.iter().enumerate() {
            let row = v.add((j * stride + at) * elem::<HALF>());
            if rescale != 1.0 {
                let m = _mm256_set1_ps(rescale);
                for x in r.iter_mut() {
                    *x = round(_mm256_mul_ps(*x, m));
                }
            }
            let w = _mm256_set1_ps(weight);
            for (k, x) in r.iter_mut().enumerate() {
                *x = round(_mm256_fmadd_ps(load8::<HALF>(row, 8 * k), w, *x));
            }
        }
        for (k, x) in r.iter().enumerate() {
            let p = acc.as_mut_ptr().add(at + 8 * k).cast::<__m128i>();
            _mm_storeu_si128(p, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(*x));
        }
    }

    /// The total of the eight lanes of `s0 + s1`, in [`dot`]'s order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn total(s0: __m256, s1: __m256) -> f32 {
        let s = _mm256_add_ps(s0, s1);
        let hi = _mm256_extractf128_ps(s, 1);
        let lo = _mm256_castps256_ps128(s);
        let q = _mm_add_ps(hi, lo);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        _mm_cvtss_f32(q)
    }

    /// [`key_scores`] for `H` query heads (`q`: their queries one after another, a
    /// multiple of 16 values each) against the same key rows, each key loaded once:
    /// `out[h * n + j]` is head `h`'s score of key `j`, computed exactly as [`dot`] does.
    ///
    /// # Safety
    /// As [`key_scores`], for `out.len() / H` rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn key_scores_heads<const HALF: bool, const H: usize>(
        q: &[f32],
        base: *const u8,
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let hd = q.len() / H;
        let n = out.len() / H;
        let qp = q.as_ptr();
        for j in 0..n {
            let row = base.add(j * stride * elem::<HALF>());
            prefetch_row(row, stride * elem::<HALF>(), hd * elem::<HALF>());
            let mut s0 = [_mm256_setzero_ps(); H];
            let mut s1 = [_mm256_setzero_ps(); H];
            for c in 0..hd / 16 {
                let i = c * 16;
                let b0 = load8::<HALF>(row, i);
                let b1 = load8::<HALF>(row, i + 8);
                for h in 0..H {
                    let a = qp.add(h * hd + i);
                    s0[h] = _mm256_fmadd_ps(_mm256_loadu_ps(a), b0, s0[h]);
                    s1[h] = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(8)), b1, s1[h]);
                }
            }
            for h in 0..H {
                *out.get_unchecked_mut(h * n + j) = total(s0[h], s1[h]) * scale;
            }
        }
    }

    /// [`accumulate_f16`] for `H` heads (`acc`: their sums one after another, a multiple
    /// of 8 values each; `steps`: their steps, head by head) over the same value rows,
    /// each row loaded once: `N` registers per head per pass, every head rounded as
    /// [`accumulate_chunk`] rounds it.
    ///
    /// # Safety
    /// As [`accumulate_f16`]; `acc` must be zero.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn accumulate_f16_heads<const HALF: bool, const H: usize, const N: usize>(
        acc: &mut [f16],
        v: *const u8,
        stride: usize,
        steps: &[(f32, f32)],
        n: usize,
    ) {
        let hd = acc.len() / H;
        let mut at = 0;
        while hd - at >= 8 * N {
            accumulate_heads_chunk::<HALF, H, N>(acc, hd, at, v, stride, steps, n);
            at += 8 * N;
        }
        while at < hd {
            accumulate_heads_chunk::<HALF, H, 1>(acc, hd, at, v, stride, steps, n);
            at += 8;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn accumulate_heads_chunk<const HALF: bool, const H: usize, const N: usize>(
        acc: &mut [f16],
        hd: usize,
        at: usize,
        v: *const u8,
        stride: usize,
        steps: &[(f32, f32)],
        n: usize,
    ) {
        #[inline(always)]
        unsafe fn round(x: __m256) -> __m256 {
            _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
        }
        let sp = steps.as_ptr();
        let mut r = [[_mm256_setzero_ps(); N]; H];
        for j in 0..n {
            let row = v.add((j * stride + at) * elem::<HALF>());
            if at == 0 {
                // The first pass brings the rows in; the later ones find them cached.
                prefetch_row(row, stride * elem::<HALF>(), hd * elem::<HALF>());
            }
            let x: [__m256; N] = std::array::from_fn(|k| load8::<HALF>(row, 8 * k));
            for (h, rh) in r.iter_mut().enumerate() {
                let (rescale, weight) = *sp.add(h * n + j);
                if rescale != 1.0 {
                    let m = _mm256_set1_ps(rescale);
                    for a in rh.iter_mut() {
                        *a = round(_mm256_mul_ps(*a, m));
                    }
                }
                let w = _mm256_set1_ps(weight);
                for (a, &xk) in rh.iter_mut().zip(&x) {
                    *a = round(_mm256_fmadd_ps(xk, w, *a));
                }
            }
        }
        for (h, rh) in r.iter().enumerate() {
            for (k, a) in rh.iter().enumerate() {
                let p = acc.as_mut_ptr().add(h * hd + at + 8 * k).cast::<__m128i>();
                _mm_storeu_si128(p, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(*a));
            }
        }
    }

    /// Cache rows this many positions ahead of the one being read: a cache row of one
    /// position is a few hundred bytes and the next position's is a stride away, a
    /// pattern the hardware prefetcher follows too late, so a decode row's attention
    /// waited on memory at every position.
    const PREFETCH_POSITIONS: usize = 8;

    /// Prefetch the `len` bytes of the row `PREFETCH_POSITIONS` rows (`row_bytes` apart)
    /// after `row` (addresses past the cache are harmless: a prefetch never faults).
    #[inline(always)]
    unsafe fn prefetch_row(row: *const u8, row_bytes: usize, len: usize) {
        let ahead = row.wrapping_add(PREFETCH_POSITIONS * row_bytes);
        let mut off = 0;
        while off < len {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off) as *const i8);
            off += 64;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8<const HALF: bool>(p: *const u8, i: usize) -> __m256 {
        if HALF {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<f16>().add(i).cast()))
        } else {
            _mm256_loadu_ps(p.cast::<f32>().add(i))
        }
    }

    #[inline]
    unsafe fn load1<const HALF: bool>(p: *const u8, i: usize) -> f32 {
        if HALF {
            (*p.cast::<f16>().add(i)).to_f32()
        } else {
            *p.cast::<f32>().add(i)
        }
    }

    fn elem<const HALF: bool>() -> usize {
        if HALF {
            2
        } else {
            4
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<const HALF: bool>(a: &[f32], b: *const u8) -> f32 {
        let n = a.len();
        let chunks = n / 16;
        let mut s0 = _mm256_setzero_ps();
        let mut s1 = _mm256_setzero_ps();
        for c in 0..chunks {
            let i = c * 16;
            let b0 = load8::<HALF>(b, i);
            let b1 = load8::<HALF>(b, i + 8);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), b0, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8)), b1, s1);
        }
        let mut sum = total(s0, s1);
        for (i, x) in a.iter().enumerate().skip(chunks * 16) {
            sum += x * load1::<HALF>(b, i);
        }
        sum
    }

    /// # Safety
    /// Rows `0..out.len()` of `q.len()` values, `stride` elements apart from `base`,
    /// must be readable; the CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn key_scores<const HALF: bool>(
        q: &[f32],
        base: *const u8,
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let row = |j: usize| base.add(j * stride * elem::<HALF>());
        // Four keys at a time: their dot products are independent chains, so the fma
        // latency of one hides behind the others. Each key's arithmetic (and result) is
        // exactly that of `dot`.
        let n = q.len();
        let mut quads = out.chunks_exact_mut(4);
        let mut j = 0;
        if n.is_multiple_of(16) {
            for o in &mut quads {
                let sums = dot4::<HALF>(q, [row(j), row(j + 1), row(j + 2), row(j + 3)]);
                for (dst, s) in o.iter_mut().zip(sums) {
                    *dst = s * scale;
                }
                j += 4;
            }
        }
        let rest = if n.is_multiple_of(16) {
            quads.into_remainder()
        } else {
            out
        };
        for o in rest.iter_mut() {
            *o = dot::<HALF>(q, row(j)) * scale;
            j += 1;
        }
    }

    /// `dot(a, b[r])` for four rows `b[r]`, with `a.len()` a multiple of 16: the same
    /// operations per row as [`dot`], interleaved.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot4<const HALF: bool>(a: &[f32], b: [*const u8; 4]) -> [f32; 4] {
        let mut s0 = [_mm256_setzero_ps(); 4];
        let mut s1 = [_mm256_setzero_ps(); 4];
        for c in 0..a.len() / 16 {
            let i = c * 16;
            let a0 = _mm256_loadu_ps(a.as_ptr().add(i));
            let a1 = _mm256_loadu_ps(a.as_ptr().add(i + 8));
            for r in 0..4 {
                s0[r] = _mm256_fmadd_ps(a0, load8::<HALF>(b[r], i), s0[r]);
                s1[r] = _mm256_fmadd_ps(a1, load8::<HALF>(b[r], i + 8), s1[r]);
            }
        }
        let mut out = [0.0f32; 4];
        for r in 0..4 {
            out[r] = total(s0[r], s1[r]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16s(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
    }

    #[test]
    fn keys_scored_four_at_a_time_equal_keys_scored_one_by_one() {
        // head_dim 64 takes the four-key path for positions 0..4 and the single-key
        // path for 4..7; scoring each key alone always takes the single-key path.
        let hd = 64;
        let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let k = f16s(
            &(0..7 * hd)
                .map(|i| (i as f32 * 0.11).cos())
                .collect::<Vec<_>>(),
        );
        let mut together = [0.0f32; 7];
        key_scores(
            &q,
            KvRows::F16 {
                data: &k,
                stride: hd,
            },
            0.125,
            &mut together,
        );
        for (j, &t) in together.iter().enumerate() {
            let mut alone = [0.0f32; 1];
            let row = KvRows::F16 {
                data: &k[j * hd..],
                stride: hd,
            };
            key_scores(&q, row, 0.125, &mut alone);
            assert_eq!(t.to_bits(), alone[0].to_bits(), "key {j}");
        }
    }

    #[test]
    fn simd_and_scalar_helpers_agree() {
        let q: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut got = [0.0f32; 3];
        key_scores(
            &q,
            KvRows::F32 {
                data: &k,
                stride: 37,
            },
            0.5,
            &mut got,
        );
        let kh = f16s(&k);
        let mut from_half = [0.0f32; 3];
        key_scores(
            &q,
            KvRows::F16 {
                data: &kh,
                stride: 37,
            },
            0.5,
            &mut from_half,
        );
        let widened: Vec<f32> = kh.iter().map(|x| x.to_f32()).collect();
        let mut from_wide = [0.0f32; 3];
        key_scores(
            &q,
            KvRows::F32 {
                data: &widened,
                stride: 37,
            },
            0.5,
            &mut from_wide,
        );
        assert_eq!(
            from_half, from_wide,
            "f16 and widened rows must agree exactly"
        );
        for (j, g) in got.iter().enumerate() {
            let want: f32 = q.iter().zip(&k[j * 37..]).map(|(a, b)| a * b).sum::<f32>() * 0.5;
            assert!((g - want).abs() < 1e-4);
        }
        // The f16 running sum of values, on the portable path (37 columns).
        let mut acc16 = vec![f16::ZERO; 37];
        accumulate_f16(
            &mut acc16,
            KvRows::F32 {
                data: &k,
                stride: 37,
            },
            &[(0.0, 0.5), (1.0, 2.0)],
        );
        for i in 0..37 {
            let first = f16::from_f32(0.5 * k[i]).to_f32();
            let want = f16::from_f32(first + 2.0 * k[37 + i]).to_f32();
            assert_eq!(acc16[i].to_f32(), want);
        }
    }

    /// Two query heads share one KV head; compare with a direct softmax computation,
    /// plain, with a sliding window, and with a soft-cap on the scores.
    #[test]
    fn matches_reference_softmax_attention() {
        let plain = AttnDims::causal(2, 1, 16);
        let windowed = AttnDims {
            window: Some(2),
            ..plain
        };
        let capped = AttnDims {
            softcap: Some(0.3),
            scale: 0.5,
            ..plain
        };
        for dims in [plain, windowed, capped] {
            check_against_reference(dims, None);
        }
        // Sinks above and below the scores: their share of the softmax leaves less
        // weight for the values.
        check_against_reference(plain, Some(&[3.0, -1.0]));
    }

    fn check_against_reference(dims: AttnDims, sinks: Option<&[f32]>) {
        let positions = 5;
        let k: Vec<f32> = (0..positions * 16)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let v: Vec<f32> = (0..positions * 16)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let (kh, vh) = (f16s(&k), f16s(&v));
        // two query rows at positions 3 and 4
        let q: Vec<f32> = (0..2 * 32)
            .map(|i| ((i * 3 % 7) as f32 - 3.0) / 3.0)
            .collect();
        let pool = ThreadPool::new(2);
        let mut out = vec![0.0; 2 * 32];
        let jobs = [AttnJob {
            q: &q,
            k: &kh,
            v: &vh,
            start: 3,
            out_row: 0,
        }];
        attend(&pool, 2, dims, sinks, &jobs, &mut out);
        for r in 0..2 {
            for h in 0..2 {
                let qh: Vec<f32> = q[r * 32 + h * 16..][..16]
                    .iter()
                    .map(|&x| f16::from_f32(x).to_f32())
                    .collect();
                let n = 3 + r + 1;
                let first = dims.window.map_or(0, |w| n.saturating_sub(w));
                let s: Vec<f32> = (0..n)
                    .map(|j| {
                        let dot = (0..16)
                            .map(|d| qh[d] * kh[j * 16 + d].to_f32())
                            .sum::<f32>();
                        let x = dot * dims.scale;
                        let x = dims.softcap.map_or(x, |c| c * (x / c).tanh());
                        if j < first {
                            f32::NEG_INFINITY
                        } else {
                            x
                        }
                    })
                    .collect();
                let sink = sinks.map(|s| s[h]);
                let m = s
                    .iter()
                    .cloned()
                    .chain(sink)
                    .fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum::<f32>() + sink.map_or(0.0, |s| (s - m).exp());
                for d in 0..16 {
                    let want: f32 = (0..n).map(|j| e[j] * vh[j * 16 + d].to_f32()).sum::<f32>() / z;
                    let got = out[r * 32 + h * 16 + d];
                    // The running sum of values is kept in f16, as llama.cpp keeps it.
                    assert!((got - want).abs() < 2e-3, "row {r} head {h} dim {d}");
                }
            }
        }
    }

    /// A prompt chunk (widened path) and the same rows one at a time (f16 path) give
    /// bit-identical outputs.
    #[test]
    fn chunk_and_single_rows_agree_exactly() {
        let dims = AttnDims::causal(4, 2, 64);
        let positions = 9;
        let kv: Vec<f32> = (0..positions * 128)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0)
            .collect();
        let (kh, vh) = (
            f16s(&kv),
            f16s(&kv.iter().rev().copied().collect::<Vec<_>>()),
        );
        let t = 4;
        let q: Vec<f32> = (0..t * 256)
            .map(|i| ((i * 3 % 17) as f32 - 8.0) / 5.0)
            .collect();
        let pool = ThreadPool::new(2);
        let start = positions - t;
        let mut chunk = vec![0.0; t * 256];
        let job = AttnJob {
            q: &q,
            k: &kh,
            v: &vh,
            start,
            out_row: 0,
        };
        attend(&pool, 2, dims, None, &[job], &mut chunk);
        let mut single = vec![0.0; t * 256];
        let jobs: Vec<AttnJob> = (0..t)
            .map(|r| AttnJob {
                q: &q[r * 256..(r + 1) * 256],
                k: &kh[..(start + r + 1) * 128],
                v: &vh[..(start + r + 1) * 128],
                start: start + r,
                out_row: r,
            })
            .collect();
        attend(&pool, 2, dims, None, &jobs, &mut single);
        assert_eq!(chunk, single);
    }
    /// Query heads of one KV head attended together (each key and value read once for
    /// them) give the same bits as each head alone: decode rows and short chunks, groups
    /// of 2 to 7 heads, head sizes with and without the SIMD paths, windows, soft-caps
    /// and sinks, several sequences in one call.
    #[test]
    fn grouped_heads_equal_heads_one_by_one() {
        let pool = ThreadPool::new(2);
        for (n_head, n_kv_head, hd) in
            [(4, 2, 64), (12, 2, 128), (7, 1, 64), (6, 2, 80), (9, 3, 32)]
        {
            let base = AttnDims::causal(n_head, n_kv_head, hd);
            let variants = [
                base,
                AttnDims {
                    window: Some(5),
                    ..base
                },
                AttnDims {
                    softcap: Some(0.7),
                    ..base
                },
            ];
            let sinks: Vec<f32> = (0..n_head).map(|h| h as f32 * 0.5 - 1.0).collect();
            let positions = 23;
            let kv_width = n_kv_head * hd;
            let wave = |i: usize, a: f32| (i as f32 * a).sin() * 2.0;
            let kh = f16s(
                &(0..positions * kv_width)
                    .map(|i| wave(i, 0.37))
                    .collect::<Vec<_>>(),
            );
            let vh = f16s(
                &(0..positions * kv_width)
                    .map(|i| wave(i, 0.23))
                    .collect::<Vec<_>>(),
            );
            let width = n_head * hd;
            let q: Vec<f32> = (0..8 * width).map(|i| wave(i, 0.11)).collect();
            // A decode row at the end, a 4-row chunk in the middle, another decode row.
            let jobs = [
                AttnJob {
                    q: &q[..width],
                    k: &kh,
                    v: &vh,
                    start: positions - 1,
                    out_row: 0,
                },
                AttnJob {
                    q: &q[width..5 * width],
                    k: &kh[..15 * kv_width],
                    v: &vh[..15 * kv_width],
                    start: 11,
                    out_row: 1,
                },
                AttnJob {
                    q: &q[5 * width..6 * width],
                    k: &kh[..3 * kv_width],
                    v: &vh[..3 * kv_width],
                    start: 2,
                    out_row: 5,
                },
            ];
            for dims in variants {
                for sink in [None, Some(&sinks[..])] {
                    let mut alone = vec![0.0; 6 * width];
                    let mut grouped = vec![0.0; 6 * width];
                    attend_split(&pool, 2, dims, sink, &jobs, &mut alone, 1);
                    attend_split(&pool, 2, dims, sink, &jobs, &mut grouped, usize::MAX);
                    let same = alone
                        .iter()
                        .zip(&grouped)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{dims:?} sinks {}: grouped heads differ",
                        sink.is_some()
                    );
                    // One thread: whole groups in one task.
                    attend_split(&pool, 1, dims, sink, &jobs, &mut grouped, usize::MAX);
                    let same = alone
                        .iter()
                        .zip(&grouped)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{dims:?} one thread: grouped heads differ");
                }
            }
        }
    }

    #[test]
    fn tasks_group_heads_of_one_kv_head() {
        let dims = AttnDims::causal(12, 2, 128);
        let q = vec![0.0; 12 * 128];
        let job = || AttnJob {
            q: &q,
            k: &[],
            v: &[],
            start: 0,
            out_row: 0,
        };
        // One sequence on two threads: each group of six split in two.
        let one = head_tasks(dims, 2, &[job()], usize::MAX);
        let heads: Vec<Range<usize>> = one.iter().map(|t| t.1.clone()).collect();
        assert_eq!(heads, [0..3, 3..6, 6..9, 9..12]);
        // Eight sequences: whole groups.
        let jobs: Vec<AttnJob> = (0..8).map(|_| job()).collect();
        let many = head_tasks(dims, 2, &jobs, usize::MAX);
        assert_eq!(many.len(), 16);
        assert!(many.iter().all(|t| t.1.len() == 6 && t.1.start % 6 == 0));
    }
}
