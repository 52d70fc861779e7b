//! Causal attention over an f16 KV cache, fused: scores, softmax and the weighted sum of
//! values in one pass per (sequence, head), reading only the positions in use.
//!
//! Grouped-query attention reads each KV head directly for all the query heads that
//! share it; nothing is repeated. Each task widens its head's cached keys and values to
//! f32 once, so a prompt chunk's rows do not convert the same positions again and again. Queries are rounded to f16 before the
//! key dot product, as llama.cpp's CPU flash attention does with an f16 cache.

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;
use wick_kernels::ThreadPool;

/// Head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
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

/// Per-thread buffers of one (sequence, head) task.
struct Scratch {
    q16: Vec<f32>,
    scores: Vec<f32>,
    acc: Vec<f32>,
    /// The head's keys and values for every position, widened to f32 once per task.
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Scratch {
    const fn new() -> Self {
        Self {
            q16: Vec::new(),
            scores: Vec::new(),
            acc: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Attention for every job's rows, written to `out` (rows of `n_head * head_dim`).
pub fn attend(
    pool: &ThreadPool,
    threads: usize,
    dims: AttnDims,
    jobs: &[AttnJob],
    out: &mut [f32],
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
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks = jobs.len() * dims.n_head;
    pool.run(threads, tasks, &|task| {
        let job = &jobs[task / dims.n_head];
        let head = task % dims.n_head;
        let ptr = ptr.get();
        SCRATCH.with(|s| {
            let scratch = &mut *s.borrow_mut();
            attend_head(job, head, dims, scratch, |row, values| {
                let at = (job.out_row + row) * width + head * dims.head_dim;
                // SAFETY: `at..at + head_dim` lies inside `out` (checked above) and no
                // other task writes this (row, head) span.
                unsafe {
                    std::ptr::copy_nonoverlapping(values.as_ptr(), ptr.add(at), values.len())
                };
            });
        });
    });
}

fn attend_head(
    job: &AttnJob,
    head: usize,
    dims: AttnDims,
    scratch: &mut Scratch,
    mut emit: impl FnMut(usize, &[f32]),
) {
    let hd = dims.head_dim;
    let width = dims.n_head * hd;
    let kv_width = dims.n_kv_head * hd;
    let kv_head = head / (dims.n_head / dims.n_kv_head);
    let scale = 1.0 / (hd as f32).sqrt();
    let t = job.q.len() / width;
    let positions = job.start + t;
    let Scratch {
        q16,
        scores,
        acc,
        k,
        v,
    } = scratch;
    widen_head(job.k, kv_width, kv_head * hd, hd, positions, k);
    widen_head(job.v, kv_width, kv_head * hd, hd, positions, v);
    q16.resize(hd, 0.0);
    acc.resize(hd, 0.0);
    for r in 0..t {
        let n = job.start + r + 1;
        let q = &job.q[r * width + head * hd..][..hd];
        for (dst, &src) in q16.iter_mut().zip(q) {
            *dst = f16::from_f32(src).to_f32();
        }
        scores.resize(n, 0.0);
        key_scores(q16, &k[..n * hd], scale, scores);
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        acc.fill(0.0);
        weighted_values(scores, &v[..n * hd], acc);
        let inv = 1.0 / sum;
        for a in acc.iter_mut() {
            *a *= inv;
        }
        emit(r, acc);
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

/// `out[j] = dot(q, k[j]) * scale` for every key row `k[j]` of `q.len()` values.
pub fn key_scores(q: &[f32], k: &[f32], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { x86::key_scores(q, k, scale, out) };
    }
    for (o, kj) in out.iter_mut().zip(k.chunks_exact(q.len())) {
        *o = q.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
}

/// `acc += sum_j w[j] * v[j]` over value rows `v[j]` of `acc.len()` values.
pub fn weighted_values(w: &[f32], v: &[f32], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { x86::weighted_values(w, v, acc) };
    }
    for (&wj, vj) in w.iter().zip(v.chunks_exact(acc.len())) {
        for (a, x) in acc.iter_mut().zip(vj) {
            *a += wj * x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let chunks = n / 16;
        let mut s0 = _mm256_setzero_ps();
        let mut s1 = _mm256_setzero_ps();
        for c in 0..chunks {
            let i = c * 16;
            let b0 = _mm256_loadu_ps(b.as_ptr().add(i));
            let b1 = _mm256_loadu_ps(b.as_ptr().add(i + 8));
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), b0, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8)), b1, s1);
        }
        let s = _mm256_add_ps(s0, s1);
        let hi = _mm256_extractf128_ps(s, 1);
        let lo = _mm256_castps256_ps128(s);
        let q = _mm_add_ps(hi, lo);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        let mut sum = _mm_cvtss_f32(q);
        for i in chunks * 16..n {
            sum += a[i] * b[i];
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn key_scores(q: &[f32], k: &[f32], scale: f32, out: &mut [f32]) {
        for (o, kj) in out.iter_mut().zip(k.chunks_exact(q.len())) {
            *o = dot(q, kj) * scale;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_values(w: &[f32], v: &[f32], acc: &mut [f32]) {
        let n = acc.len();
        let rows = w.len().min(v.len() / n.max(1));
        // 32 columns at a time stay in four registers across every value row.
        let blocks = n / 32;
        for b in 0..blocks {
            let c = b * 32;
            let p = acc.as_mut_ptr().add(c);
            let mut a0 = _mm256_loadu_ps(p);
            let mut a1 = _mm256_loadu_ps(p.add(8));
            let mut a2 = _mm256_loadu_ps(p.add(16));
            let mut a3 = _mm256_loadu_ps(p.add(24));
            for (j, &wj) in w.iter().enumerate().take(rows) {
                let wv = _mm256_set1_ps(wj);
                let x = v.as_ptr().add(j * n + c);
                a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x), a0);
                a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(8)), a1);
                a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(16)), a2);
                a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(24)), a3);
            }
            _mm256_storeu_ps(p, a0);
            _mm256_storeu_ps(p.add(8), a1);
            _mm256_storeu_ps(p.add(16), a2);
            _mm256_storeu_ps(p.add(24), a3);
        }
        // Remaining columns: 8 at a time, then one by one.
        let mut c = blocks * 32;
        while c + 8 <= n {
            let p = acc.as_mut_ptr().add(c);
            let mut a = _mm256_loadu_ps(p);
            for (j, &wj) in w.iter().enumerate().take(rows) {
                a = _mm256_fmadd_ps(
                    _mm256_set1_ps(wj),
                    _mm256_loadu_ps(v.as_ptr().add(j * n + c)),
                    a,
                );
            }
            _mm256_storeu_ps(p, a);
            c += 8;
        }
        for i in c..n {
            for (j, &wj) in w.iter().enumerate().take(rows) {
                acc[i] += wj * v[j * n + i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16s(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
    }

    #[test]
    fn simd_and_scalar_helpers_agree() {
        let q: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut got = [0.0f32; 3];
        key_scores(&q, &k, 0.5, &mut got);
        for (j, g) in got.iter().enumerate() {
            let want: f32 = q.iter().zip(&k[j * 37..]).map(|(a, b)| a * b).sum::<f32>() * 0.5;
            assert!((g - want).abs() < 1e-4);
        }
        let mut acc = q.clone();
        weighted_values(&[0.5, 2.0], &k[..2 * 37], &mut acc);
        for i in 0..37 {
            let want = q[i] + 0.5 * k[i] + 2.0 * k[37 + i];
            assert!((acc[i] - want).abs() < 1e-5);
        }
    }

    /// Two query heads share one KV head; compare with a direct softmax computation.
    #[test]
    fn matches_reference_softmax_attention() {
        let dims = AttnDims {
            n_head: 2,
            n_kv_head: 1,
            head_dim: 16,
        };
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
        attend(&pool, 2, dims, &jobs, &mut out);
        for r in 0..2 {
            for h in 0..2 {
                let qh: Vec<f32> = q[r * 32 + h * 16..][..16]
                    .iter()
                    .map(|&x| f16::from_f32(x).to_f32())
                    .collect();
                let n = 3 + r + 1;
                let s: Vec<f32> = (0..n)
                    .map(|j| {
                        (0..16)
                            .map(|d| qh[d] * kh[j * 16 + d].to_f32())
                            .sum::<f32>()
                            / 4.0
                    })
                    .collect();
                let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for d in 0..16 {
                    let want: f32 = (0..n).map(|j| e[j] * vh[j * 16 + d].to_f32()).sum::<f32>() / z;
                    let got = out[r * 32 + h * 16 + d];
                    assert!((got - want).abs() < 1e-5, "row {r} head {h} dim {d}");
                }
            }
        }
    }
}
