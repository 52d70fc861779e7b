//! Causal attention over an f16 KV cache, fused: scores, softmax and the weighted sum of
//! values in one pass per (sequence, head), reading only the positions in use.
//!
//! Grouped-query attention reads each KV head directly for all the query heads that
//! share it; nothing is repeated or materialised. Queries are rounded to f16 before the
//! key dot product, as llama.cpp's CPU flash attention does with an f16 cache.

use std::cell::RefCell;

use half::f16;
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

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
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
            let (q16, scores, acc) = &mut *s.borrow_mut();
            attend_head(job, head, dims, q16, scores, acc, |row, values| {
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
    q16: &mut Vec<f32>,
    scores: &mut Vec<f32>,
    acc: &mut Vec<f32>,
    mut emit: impl FnMut(usize, &[f32]),
) {
    let hd = dims.head_dim;
    let width = dims.n_head * hd;
    let kv_width = dims.n_kv_head * hd;
    let kv_head = head / (dims.n_head / dims.n_kv_head);
    let scale = 1.0 / (hd as f32).sqrt();
    let t = job.q.len() / width;
    q16.resize(hd, 0.0);
    acc.resize(hd, 0.0);
    for r in 0..t {
        let n = job.start + r + 1;
        let q = &job.q[r * width + head * hd..][..hd];
        for (dst, &src) in q16.iter_mut().zip(q) {
            *dst = f16::from_f32(src).to_f32();
        }
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in 0..n {
            let s = dot_f16(q16, &job.k[j * kv_width + kv_head * hd..][..hd]) * scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        acc.fill(0.0);
        for (j, &w) in scores.iter().enumerate() {
            axpy_f16(acc, w, &job.v[j * kv_width + kv_head * hd..][..hd]);
        }
        let inv = 1.0 / sum;
        for a in acc.iter_mut() {
            *a *= inv;
        }
        emit(r, acc);
    }
}

/// `sum(a[i] * b[i])` with `b` in f16.
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { x86::dot_f16(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// `acc += w * v` with `v` in f16.
pub fn axpy_f16(acc: &mut [f32], w: f32, v: &[f16]) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: as above.
        return unsafe { x86::axpy_f16(acc, w, v) };
    }
    for (a, x) in acc.iter_mut().zip(v) {
        *a += w * x.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        let chunks = n / 16;
        let mut s0 = _mm256_setzero_ps();
        let mut s1 = _mm256_setzero_ps();
        for c in 0..chunks {
            let i = c * 16;
            let b0 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
            let b1 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8) as *const __m128i));
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
            sum += a[i] * b[i].to_f32();
        }
        sum
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(acc: &mut [f32], w: f32, v: &[f16]) {
        let n = acc.len().min(v.len());
        let chunks = n / 8;
        let wv = _mm256_set1_ps(w);
        for c in 0..chunks {
            let i = c * 8;
            let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
            let p = acc.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(p)));
        }
        for i in chunks * 8..n {
            acc[i] += w * v[i].to_f32();
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
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let bh = f16s(&b);
        let scalar: f32 = a.iter().zip(&bh).map(|(x, y)| x * y.to_f32()).sum();
        assert!((dot_f16(&a, &bh) - scalar).abs() < 1e-4);
        let mut acc = a.clone();
        axpy_f16(&mut acc, 0.5, &bh);
        for i in 0..37 {
            assert!((acc[i] - (a[i] + 0.5 * bh[i].to_f32())).abs() < 1e-6);
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
