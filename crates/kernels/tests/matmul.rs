//! `QMatrix::matmul` against dequantize-then-f64-dot, for every kind, several `m`, odd
//! row counts, both backends, and the batching invariants.

use wick_kernels::reference::{dequantize, dot_f64};
use wick_kernels::synth::{random_matrix, Rng};
use wick_kernels::{Backend, QMatrix, QuantKind, ThreadPool};

/// Tolerance on `|got - want|`, in units of `|w_j| * |x_i|` (the Cauchy-Schwarz scale
/// of the dot product, so the bound does not blow up for dots near zero).
///
/// * 8-bit activations (Q8_0/Q8_1/Q8_K): each activation moves by at most half a step,
///   `amax / 254`; for uniform data `|x| ~ 0.577 amax sqrt(n)`, so
///   `|dx| / |x| <= 1 / (254 * 0.577) = 0.0068`, and `|w . dx| <= |w| |dx|`. Add the f16
///   rounding of the scales (5e-4): 1e-2 is a bound, not a fit.
/// * F16: activations rounded to f16, relative 2^-11 per value: 1e-3.
/// * F32: only summation order: 1e-5.
fn tolerance(kind: QuantKind) -> f64 {
    match kind {
        QuantKind::F32 => 1e-5,
        QuantKind::F16 => 1e-3,
        // Activations rounded to bfloat16, relative 2^-8 per value.
        QuantKind::BF16 => 1e-2,
        _ => 1e-2,
    }
}

fn norm(v: &[f32]) -> f64 {
    dot_f64(v, v).sqrt()
}

/// Max over outputs of `|got - want| / (|w_j| |x_i|)`.
fn worst_error(w: &QMatrix, x: &[f32], m: usize, got: &[f32]) -> f64 {
    let (rows, cols) = (w.rows(), w.cols());
    let wd = dequantize(w.kind(), rows, cols, &w.data()).unwrap();
    let mut worst = 0f64;
    for i in 0..m {
        let xi = &x[i * cols..(i + 1) * cols];
        for j in 0..rows {
            let wj = &wd[j * cols..(j + 1) * cols];
            let want = dot_f64(wj, xi);
            let scale = norm(wj) * norm(xi) + 1e-30;
            let err = (got[i * rows + j] as f64 - want).abs() / scale;
            worst = worst.max(err);
        }
    }
    worst
}

fn cols_for(kind: QuantKind) -> &'static [usize] {
    match kind.block_size() {
        256 => &[256, 768],
        32 => &[96, 544],
        _ => &[1, 37, 200],
    }
}

fn backends() -> Vec<Backend> {
    [Backend::Scalar, Backend::Avx2]
        .into_iter()
        .filter(|b| b.is_available())
        .collect()
}

#[test]
fn matmul_matches_reference_for_every_kind() {
    let pool = ThreadPool::new(2);
    for kind in QuantKind::ALL {
        for &cols in cols_for(kind) {
            for &rows in &[1usize, 7, 33] {
                let w = random_matrix(kind, rows, cols, 1000 + rows as u64 + cols as u64);
                for &m in &[1usize, 3, 8, 37] {
                    let x = Rng::new(7 * m as u64 + cols as u64).vec(m * cols);
                    for backend in backends() {
                        let mut out = vec![f32::NAN; m * rows];
                        w.matmul_with(backend, &pool, 2, &x, m, &mut out).unwrap();
                        let err = worst_error(&w, &x, m, &out);
                        assert!(
                            err <= tolerance(kind),
                            "{kind} {rows}x{cols} m={m} {backend:?}: error {err:.2e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn backends_agree_on_integer_sums() {
    let backends = backends();
    if backends.len() < 2 {
        eprintln!("note: only the scalar backend on this CPU; nothing to compare");
        return;
    }
    let pool = ThreadPool::new(2);
    for kind in QuantKind::ALL {
        let cols = cols_for(kind)[1];
        let (rows, m) = (19, 21);
        let w = random_matrix(kind, rows, cols, 42);
        let wd = dequantize(kind, rows, cols, &w.data()).unwrap();
        let x = Rng::new(9).vec(m * cols);
        let mut a = vec![0f32; m * rows];
        let mut b = vec![0f32; m * rows];
        w.matmul_with(Backend::Scalar, &pool, 2, &x, m, &mut a)
            .unwrap();
        w.matmul_with(Backend::Avx2, &pool, 2, &x, m, &mut b)
            .unwrap();
        if matches!(
            kind,
            QuantKind::Q2K
                | QuantKind::Q3K
                | QuantKind::Q4K
                | QuantKind::Q5K
                | QuantKind::Q6K
                | QuantKind::Mxfp4
        ) {
            // These kinds follow one float order on every backend and tile shape.
            assert_eq!(a, b, "{kind}: scalar and AVX2 bits differ");
        }
        for i in 0..m {
            for j in 0..rows {
                // Same integer block sums; only the float summation order differs.
                let scale =
                    norm(&wd[j * cols..(j + 1) * cols]) * norm(&x[i * cols..(i + 1) * cols]);
                let d = (a[i * rows + j] - b[i * rows + j]).abs() as f64 / scale;
                assert!(
                    d <= 1e-5,
                    "{kind} row {j} act {i}: scalar {} avx2 {}",
                    a[i * rows + j],
                    b[i * rows + j]
                );
            }
        }
    }
}

/// A row of a batched call is bit-identical to the same row computed alone, with any
/// number of threads: batching at temperature 0 must not change tokens.
#[test]
fn batched_rows_equal_single_rows_bitwise() {
    let pool = ThreadPool::new(2);
    for kind in QuantKind::ALL {
        let cols = cols_for(kind)[1];
        let rows = 45;
        let w = random_matrix(kind, rows, cols, 5);
        // 40: more than one activation tile; 13 and 7: every group size of the kernels.
        for (m, backend) in [40, 13, 7]
            .into_iter()
            .flat_map(|m| backends().into_iter().map(move |b| (m, b)))
        {
            let x = Rng::new(11 + m as u64).vec(m * cols);
            let mut batched = vec![0f32; m * rows];
            w.matmul_with(backend, &pool, 2, &x, m, &mut batched)
                .unwrap();
            let mut one_thread = vec![0f32; m * rows];
            w.matmul_with(backend, &pool, 1, &x, m, &mut one_thread)
                .unwrap();
            assert_eq!(
                batched, one_thread,
                "{kind} {backend:?}: threads changed bits"
            );
            for i in 0..m {
                let mut single = vec![0f32; rows];
                w.matmul_with(
                    backend,
                    &pool,
                    2,
                    &x[i * cols..(i + 1) * cols],
                    1,
                    &mut single,
                )
                .unwrap();
                assert_eq!(
                    &batched[i * rows..(i + 1) * rows],
                    &single[..],
                    "{kind} {backend:?} row {i}"
                );
            }
        }
    }
}

/// Tall matrices: each GEMM task holds many rows, and its results leave in transposed
/// blocks of eight rows plus a remainder; every output still equals the row alone.
#[test]
fn tall_batched_products_equal_single_rows_bitwise() {
    let pool = ThreadPool::new(2);
    for kind in QuantKind::ALL {
        let cols = cols_for(kind)[0];
        let rows = 301;
        let w = random_matrix(kind, rows, cols, 21);
        // The 32-value kinds' GEMM from 8 rows: 8 is one group of activation rows, 13
        // two. The K-quants' from 16: 20 is a pair of groups (weight rows two at a time),
        // then one (four at a time).
        for m in [8, 13, 20] {
            let x = Rng::new(17).vec(m * cols);
            let mut batched = vec![0f32; m * rows];
            w.matmul(&pool, 2, &x, m, &mut batched).unwrap();
            for i in 0..m {
                let mut single = vec![0f32; rows];
                w.matmul(&pool, 2, &x[i * cols..(i + 1) * cols], 1, &mut single)
                    .unwrap();
                let got = &batched[i * rows..(i + 1) * rows];
                assert_eq!(got, &single[..], "{kind} m {m} row {i}");
            }
        }
    }
}

#[test]
fn a_row_range_equals_those_columns_of_the_whole_product() {
    let pool = ThreadPool::new(2);
    for kind in QuantKind::ALL {
        let cols = cols_for(kind)[0];
        let rows = 37;
        let w = random_matrix(kind, rows, cols, 9);
        for m in [1, 5, 40] {
            let x = Rng::new(3 + m as u64).vec(m * cols);
            let mut whole = vec![0f32; m * rows];
            w.matmul(&pool, 2, &x, m, &mut whole).unwrap();
            for range in [0..rows, 0..8, 5..30, 36..37, 10..10] {
                let n = range.len();
                let mut part = vec![0f32; m * n];
                w.matmul_rows(range.clone(), &pool, 2, &x, m, &mut part)
                    .unwrap();
                for i in 0..m {
                    assert_eq!(
                        &part[i * n..(i + 1) * n],
                        &whole[i * rows + range.start..i * rows + range.end],
                        "{kind} m={m} rows {range:?} activation row {i}"
                    );
                }
            }
        }
        let mut out = vec![0f32; 2];
        assert!(w
            .matmul_rows(36..38, &pool, 1, &vec![0.0; cols], 1, &mut out)
            .is_err());
    }
}

#[test]
fn prefill_sized_batch() {
    let pool = ThreadPool::new(2);
    for kind in [
        QuantKind::Q4_1,
        QuantKind::Q5_0,
        QuantKind::Q8_0,
        QuantKind::Q4K,
        QuantKind::Q6K,
    ] {
        let (rows, cols, m) = (67, 512, 130);
        let w = random_matrix(kind, rows, cols, 3);
        let x = Rng::new(4).vec(m * cols);
        let mut out = vec![0f32; m * rows];
        w.matmul(&pool, 2, &x, m, &mut out).unwrap();
        let err = worst_error(&w, &x, m, &out);
        assert!(err <= tolerance(kind), "{kind}: {err:.2e}");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let pool = ThreadPool::new(1);
    assert!(QMatrix::new(QuantKind::Q4_0, 2, 48, vec![0; 2 * 18]).is_err());
    assert!(QMatrix::new(QuantKind::Q4_0, 2, 64, vec![0; 3 * 18]).is_err());
    let w = random_matrix(QuantKind::Q8_0, 4, 64, 1);
    let mut out = vec![0f32; 4];
    assert!(w.matmul(&pool, 1, &[0.0; 63], 1, &mut out).is_err());
    assert!(w.matmul(&pool, 1, &[0.0; 64], 1, &mut out[..3]).is_err());
    assert!(w.matmul(&pool, 1, &[], 0, &mut []).is_ok());
    let mut row = vec![0f32; 64];
    assert!(w.dequantize_row(4, &mut row).is_err());
    assert!(w.dequantize_row(3, &mut row[..10]).is_err());
    w.dequantize_row(3, &mut row).unwrap();
}

/// A matrix stacked from parts (no copy) multiplies bit-identically to the same rows
/// stored in one buffer, for every kind, `m`, backend and row sub-range.
#[test]
fn stacked_parts_equal_one_buffer() {
    let pool = ThreadPool::new(2);
    for kind in QuantKind::ALL {
        let cols = cols_for(kind)[0];
        let parts = [
            random_matrix(kind, 13, cols, 1),
            random_matrix(kind, 6, cols, 2),
            random_matrix(kind, 9, cols, 3),
        ];
        let stacked = QMatrix::stack(&parts).unwrap();
        let whole = QMatrix::new(kind, 28, cols, stacked.data().into_owned()).unwrap();
        assert_eq!(stacked.rows(), 28);
        for backend in backends() {
            for m in [1, 3, 17] {
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                    .collect();
                let mut a = vec![0f32; m * 28];
                let mut b = vec![0f32; m * 28];
                stacked
                    .matmul_with(backend, &pool, 2, &x, m, &mut a)
                    .unwrap();
                whole.matmul_with(backend, &pool, 2, &x, m, &mut b).unwrap();
                assert_eq!(a, b, "{kind} {backend:?} m={m}");
                let mut c = vec![0f32; m * 10];
                let mut d = vec![0f32; m * 10];
                stacked
                    .matmul_rows(11..21, &pool, 2, &x, m, &mut c)
                    .unwrap();
                whole.matmul_rows(11..21, &pool, 2, &x, m, &mut d).unwrap();
                assert_eq!(c, d, "{kind} rows 11..21 m={m}");
            }
        }
        let mut row = vec![0f32; cols];
        let mut want = vec![0f32; cols];
        stacked.dequantize_row(20, &mut row).unwrap();
        whole.dequantize_row(20, &mut want).unwrap();
        assert_eq!(row, want);
    }
    let mismatched = [
        random_matrix(QuantKind::Q8_0, 2, 64, 1),
        random_matrix(QuantKind::Q4_0, 2, 64, 1),
    ];
    assert!(QMatrix::stack(&mismatched).is_err());
}
