//! Kernel benchmark: per kind and shape, the time of `QMatrix::matmul` for m = 1 (as
//! GB/s of weight bytes streamed, against the measured memory bandwidth), m = 8 and
//! m = 512 (as GFLOP/s), with 1 and 2 threads, and m = 512 on 2 threads as a fraction
//! of the machine's measured int8 peak (`%pk`).
//!
//! `cargo run --release -p wick-kernels --bin kernel_bench -- [--quick] [--no-real]
//! [--no-synthetic] [--only Q4_K,Q6_K] [--models DIR]`
//!
//! Times are the best of repeated calls. m = 1 is timed "cold": it cycles through enough copies of the matrix (>= 192 MB) that
//! the weights come from DRAM as in real decoding, not from the 32 MB L3.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wick_kernels::gguf::GgufIndex;
use wick_kernels::synth::{random_matrix, Rng};
use wick_kernels::{Backend, QMatrix, QuantKind, ThreadPool};

struct Opts {
    quick: bool,
    real: bool,
    synthetic: bool,
    only: Option<Vec<QuantKind>>,
    models: PathBuf,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        quick: false,
        real: true,
        synthetic: true,
        only: None,
        models: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models-cache"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-real" => o.real = false,
            "--no-synthetic" => o.synthetic = false,
            "--only" => {
                let list = args.next().unwrap_or_default();
                o.only = Some(
                    QuantKind::ALL
                        .into_iter()
                        .filter(|k| list.split(',').any(|n| n.eq_ignore_ascii_case(k.name())))
                        .collect(),
                );
            }
            "--models" => o.models = PathBuf::from(args.next().unwrap_or_default()),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    o
}

/// Best (minimum) seconds per call of `f`, run for about `budget` after one warm-up
/// call. The minimum, not the median: other processes on this 2-core machine (builds)
/// only ever add time.
fn time_it(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < budget && samples.len() < 2000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.into_iter().fold(f64::INFINITY, f64::min)
}

/// Read bandwidth (GB/s): summing a 512 MB buffer on `threads` threads, each task
/// reading four streams at once (one stream leaves the hardware prefetcher short of
/// requests in flight and under-reports what the memory can deliver).
fn memory_bandwidth(pool: &ThreadPool, threads: usize) -> f64 {
    let n = 128 << 20; // f32s
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let chunk = n / 64;
    let sink = std::sync::atomic::AtomicU32::new(0);
    let t = time_it(Duration::from_millis(1500), || {
        pool.run(threads, 64, &|task| {
            let part = &buf[task * chunk..(task + 1) * chunk];
            let q = part.len() / 4;
            let (s0, rest) = part.split_at(q);
            let (s1, rest) = rest.split_at(q);
            let (s2, s3) = rest.split_at(q);
            let mut acc = [0f32; 32];
            for (((a, b), c), d) in s0
                .chunks_exact(8)
                .zip(s1.chunks_exact(8))
                .zip(s2.chunks_exact(8))
                .zip(s3.chunks_exact(8))
            {
                for k in 0..8 {
                    acc[k] += a[k];
                    acc[8 + k] += b[k];
                    acc[16 + k] += c[k];
                    acc[24 + k] += d[k];
                }
            }
            let s: f32 = acc.iter().sum();
            sink.fetch_add(s as u32 & 1, std::sync::atomic::Ordering::Relaxed);
        });
    });
    (n * 4) as f64 / t / 1e9
}

/// The machine's int8 peak (GOP/s, a multiply and an add counted as two operations):
/// `threads` threads each running independent `vpmaddubsw` + `vpaddw` pairs, the GEMM's
/// inner step, from registers. `None` without AVX2.
fn int8_peak(pool: &ThreadPool, threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !is_x86_feature_detected!("avx2") {
            return None;
        }
        const ITERS: usize = 1 << 20;
        let t = time_it(Duration::from_millis(500), || {
            pool.run(threads, threads, &|task| {
                // SAFETY: AVX2 was detected above.
                let v = unsafe { maddubs_loop(ITERS, task as i8) };
                std::hint::black_box(v);
            });
        });
        // 12 instructions of 32 byte pairs per iteration, 2 operations per pair.
        Some((threads * ITERS * 12 * 32 * 2) as f64 / t / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pool, threads);
        None
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn maddubs_loop(iters: usize, seed: i8) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_epi8(3);
    let mut acc = [_mm256_set1_epi8(seed); 12];
    for _ in 0..iters {
        // Twelve independent chains (more than latency x throughput), each product
        // depending on its chain so none can be hoisted out of the loop.
        for v in acc.iter_mut() {
            *v = _mm256_add_epi16(*v, _mm256_maddubs_epi16(a, *v));
        }
    }
    let mut total = 0;
    for v in acc {
        total += _mm256_extract_epi16::<0>(v);
    }
    total
}

struct Case {
    label: String,
    w: QMatrix,
}

fn synthetic_cases(only: &Option<Vec<QuantKind>>) -> Vec<Case> {
    // (rows, cols): SmolLM2 (576 wide, 1536 FFN), Qwen2.5-0.5B (896 wide, 4864 FFN,
    // 151936-token output).
    let shapes = [
        (576, 576),
        (1536, 576),
        (576, 1536),
        (896, 4864),
        (4864, 896),
        (151_936, 896),
    ];
    let kinds = [
        QuantKind::Q4_0,
        QuantKind::Q4_1,
        QuantKind::Q5_0,
        QuantKind::Q8_0,
        QuantKind::Q2K,
        QuantKind::Q3K,
        QuantKind::Q4K,
        QuantKind::Q5K,
        QuantKind::Q6K,
        QuantKind::Mxfp4,
        QuantKind::F16,
        QuantKind::BF16,
        QuantKind::F32,
    ];
    let mut cases = Vec::new();
    for kind in kinds {
        if only.as_ref().is_some_and(|o| !o.contains(&kind)) {
            continue;
        }
        for (rows, cols) in shapes {
            if cols % kind.block_size() != 0 {
                continue;
            }
            // The output head only in the kinds models store it in.
            if rows > 100_000 && !matches!(kind, QuantKind::Q8_0 | QuantKind::Q6K | QuantKind::Q5_0)
            {
                continue;
            }
            cases.push(Case {
                label: format!("synthetic {rows}x{cols}"),
                w: random_matrix(kind, rows, cols, (rows * cols) as u64),
            });
        }
    }
    cases
}

fn real_cases(dir: &std::path::Path, only: &Option<Vec<QuantKind>>) -> Vec<Case> {
    let mut cases = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("note: no models directory at {}", dir.display());
        return cases;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    for path in files {
        let Ok(index) = GgufIndex::open(&path) else {
            continue;
        };
        let model = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for t in &index.tensors {
            let Some(kind) = QuantKind::from_ggml_type(t.ggml_type) else {
                continue;
            };
            if t.dims.len() != 2 || only.as_ref().is_some_and(|o| !o.contains(&kind)) {
                continue;
            }
            // One tensor per (kind, shape) and model.
            if !seen.insert((kind, t.dims.clone())) {
                continue;
            }
            if let Ok(Some(w)) = index.read_matrix(t) {
                cases.push(Case {
                    label: format!("{model} {}", t.name),
                    w,
                });
            }
        }
    }
    cases
}

/// `--case KIND ROWS COLS M THREADS`: time one synthetic call (hot), for tuning.
fn single_case(args: &[String]) {
    let kind = QuantKind::ALL
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(&args[0]))
        .expect("kind");
    let num = |i: usize| args[i].parse::<usize>().expect("number");
    let (rows, cols, m, threads) = (num(1), num(2), num(3), num(4));
    let pool = ThreadPool::new(threads);
    let w = random_matrix(kind, rows, cols, 1);
    let x = Rng::new(2).vec(m * cols);
    let mut out = vec![0f32; m * rows];
    let t = time_it(Duration::from_millis(1000), || {
        w.matmul(&pool, threads, &x, m, &mut out).expect("matmul")
    });
    println!(
        "{kind} {rows}x{cols} m={m} threads={threads}: {:.1} us, {:.2} GB/s, {:.1} GFLOP/s",
        t * 1e6,
        w.size_bytes() as f64 / t / 1e9,
        2.0 * (m * rows * cols) as f64 / t / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--case") && args.len() == 6 {
        single_case(&args[1..]);
        return;
    }
    let opts = parse_args();
    let backend = Backend::detect();
    let pool = ThreadPool::new(2);
    println!("backend: {backend:?}, pool threads: {}", pool.n_threads());
    let bw1 = memory_bandwidth(&pool, 1);
    let bw2 = memory_bandwidth(&pool, 2);
    println!("memory read bandwidth: {bw1:.1} GB/s (1 thread), {bw2:.1} GB/s (2 threads)");
    // Two tasks of 5 us each on two threads: the excess over 5 us is the pool's cost
    // (publish, wake, join, wait).
    let spin = |_: usize| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(5) {
            std::hint::spin_loop();
        }
    };
    let t_run = time_it(Duration::from_millis(300), || pool.run(2, 2, &spin));
    let peak = int8_peak(&pool, 2);
    if let (Some(p1), Some(p2)) = (int8_peak(&pool, 1), peak) {
        println!(
            "int8 peak (vpmaddubsw + vpaddw from registers): {p1:.0} GOP/s (1 thread), {p2:.0} GOP/s (2 threads)"
        );
    }
    println!(
        "pool.run of 2 x 5 us tasks on 2 threads: {:.2} us (overhead {:.2} us)\n",
        t_run * 1e6,
        t_run * 1e6 - 5.0
    );

    let mut cases = Vec::new();
    if opts.synthetic {
        cases.extend(synthetic_cases(&opts.only));
    }
    if opts.real {
        cases.extend(real_cases(&opts.models, &opts.only));
    }
    let budget = Duration::from_millis(if opts.quick { 150 } else { 400 });
    println!(
        "{:<5} {:<52} {:>8} | {:>9} {:>6} | {:>9} {:>6} {:>4} | {:>7} | {:>7} {:>7} {:>5}",
        "kind",
        "matrix (rows x cols)",
        "MB",
        "m=1 t1 us",
        "GB/s",
        "t2 us",
        "GB/s",
        "%bw",
        "m=8 GF",
        "m512 t1",
        "t2 GF",
        "%pk"
    );
    for case in &cases {
        let w = &case.w;
        let (rows, cols) = (w.rows(), w.cols());
        let bytes = w.size_bytes();
        let mut rng = Rng::new(1);
        // Cold m = 1: rotate over copies totalling >= 192 MB.
        let copies = if std::env::var_os("WICK_BENCH_HOT").is_some() {
            1
        } else {
            (192usize << 20).div_ceil(bytes).clamp(1, 4096)
        };
        // Copies in their own memory: a clone would share the bytes, and a matrix smaller
        // than the L3 would then be read from the cache.
        let ring: Vec<QMatrix> = (0..copies).map(|_| w.deep_copy()).collect();
        let x1 = rng.vec(cols);
        let mut out1 = vec![0f32; rows];
        let mut m1 = [0f64; 2];
        for (ti, threads) in [1usize, 2].into_iter().enumerate() {
            let mut k = 0;
            m1[ti] = time_it(budget, || {
                k = (k + 1) % copies;
                ring[k]
                    .matmul(&pool, threads, &x1, 1, &mut out1)
                    .expect("matmul");
            });
        }
        drop(ring);
        let flops = |m: usize, t: f64| 2.0 * (m * rows * cols) as f64 / t / 1e9;
        let x8 = rng.vec(8 * cols);
        let mut out8 = vec![0f32; 8 * rows];
        let t8 = time_it(budget, || {
            w.matmul(&pool, 2, &x8, 8, &mut out8).expect("matmul")
        });
        let (mut g512_1, mut g512_2) = (f64::NAN, f64::NAN);
        if rows * cols <= 8 << 20 && !opts.quick {
            let x512 = rng.vec(512 * cols);
            let mut out512 = vec![0f32; 512 * rows];
            let b = Duration::from_millis(200);
            g512_1 = flops(
                512,
                time_it(b, || {
                    w.matmul(&pool, 1, &x512, 512, &mut out512).expect("matmul")
                }),
            );
            g512_2 = flops(
                512,
                time_it(b, || {
                    w.matmul(&pool, 2, &x512, 512, &mut out512).expect("matmul")
                }),
            );
        }
        let gbs = |t: f64| bytes as f64 / t / 1e9;
        println!(
            "{:<5} {:<52} {:>8.2} | {:>9.1} {:>6.1} | {:>9.1} {:>6.1} {:>3.0}% | {:>7.1} | {:>7.1} {:>7.1} {:>4.0}%",
            w.kind().name(),
            format!("{} ({rows}x{cols})", case.label),
            bytes as f64 / 1e6,
            m1[0] * 1e6,
            gbs(m1[0]),
            m1[1] * 1e6,
            gbs(m1[1]),
            100.0 * gbs(m1[1]) / bw2,
            flops(8, t8),
            g512_1,
            g512_2,
            100.0 * g512_2 / peak.unwrap_or(f64::NAN),
        );
    }
}
