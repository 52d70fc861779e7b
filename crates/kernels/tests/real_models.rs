//! The kernels on tensors of the real models in `models-cache/` (skipped, with a note,
//! when the files are not there).

use std::collections::HashMap;
use std::path::PathBuf;

use wick_kernels::gguf::GgufIndex;
use wick_kernels::reference::dot_f64;
use wick_kernels::synth::Rng;
use wick_kernels::{Backend, QuantKind, ThreadPool};

const MODELS: [&str; 3] = [
    "smollm2-135m-instruct-q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma-3-270m-q4_k_m.gguf",
];

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models-cache")
}

#[test]
fn real_tensors_match_reference_dequantization() {
    let pool = ThreadPool::new(2);
    let mut tested: HashMap<QuantKind, usize> = HashMap::new();
    for file in MODELS {
        let path = models_dir().join(file);
        if !path.exists() {
            eprintln!("note: {} not found, skipping", path.display());
            continue;
        }
        let index = GgufIndex::open(&path).unwrap();
        let mut per_kind: HashMap<QuantKind, usize> = HashMap::new();
        for t in &index.tensors {
            let Some(kind) = QuantKind::from_ggml_type(t.ggml_type) else {
                continue;
            };
            let elems: u64 = t.dims.iter().product();
            // Two tensors of each type per model, small enough to dequantize quickly.
            if t.dims.len() != 2
                || elems > 8 << 20
                || per_kind.get(&kind).copied().unwrap_or(0) >= 2
            {
                continue;
            }
            let Some(w) = index.read_matrix(t).unwrap() else {
                continue;
            };
            *per_kind.entry(kind).or_default() += 1;
            *tested.entry(kind).or_default() += 1;
            let (rows, cols, m) = (w.rows(), w.cols(), 3);
            let x = Rng::new(elems).vec(m * cols);
            let mut wrow = vec![0f32; cols];
            let mut outs = Vec::new();
            for backend in [Backend::Scalar, Backend::Avx2] {
                if !backend.is_available() {
                    continue;
                }
                let mut out = vec![0f32; m * rows];
                w.matmul_with(backend, &pool, 2, &x, m, &mut out).unwrap();
                outs.push(out);
            }
            let mut worst = 0f64;
            let mut worst_backends = 0f64;
            for j in 0..rows {
                w.dequantize_row(j, &mut wrow).unwrap();
                assert!(wrow.iter().all(|v| v.is_finite()), "{}: row {j}", t.name);
                for i in 0..m {
                    let xi = &x[i * cols..(i + 1) * cols];
                    let scale = dot_f64(&wrow, &wrow).sqrt() * dot_f64(xi, xi).sqrt() + 1e-30;
                    let want = dot_f64(&wrow, xi);
                    for out in &outs {
                        worst = worst.max((out[i * rows + j] as f64 - want).abs() / scale);
                    }
                    if outs.len() == 2 {
                        let d = (outs[0][i * rows + j] - outs[1][i * rows + j]).abs() as f64;
                        worst_backends = worst_backends.max(d / scale);
                    }
                }
            }
            eprintln!(
                "{file}: {} {kind} {rows}x{cols}: error {worst:.2e} (of |w||x|), scalar vs avx2 {worst_backends:.1e}",
                t.name
            );
            // Same bounds as tests/matmul.rs (8-bit activations: 1e-2; see there).
            let tol = if kind == QuantKind::F32 {
                1e-5
            } else if kind == QuantKind::F16 {
                1e-3
            } else {
                1e-2
            };
            assert!(worst <= tol, "{}: {kind} error {worst:.2e}", t.name);
            assert!(
                worst_backends <= 1e-5,
                "{}: backends differ by {worst_backends:.2e}",
                t.name
            );
        }
    }
    eprintln!("tested tensors per kind: {tested:?}");
}
