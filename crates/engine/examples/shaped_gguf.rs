//! Write a llama-shaped synthetic Q4_K model of realistic size (random weights) as a
//! GGUF file, for the GPU benchmark (`benches/gpu.sh`).
//!
//!     cargo run --release -p wick-engine --example shaped_gguf -- <shape> <smollm2.gguf> <out.gguf>
//!
//! `<shape>` is one of `wick_engine::tiny_models::SHAPES` (`llama-1b`, `llama-8b`); the
//! vocabulary and tokenizer metadata are copied from `<smollm2.gguf>`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use wick_engine::tiny_models;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shape, vocab, out] = args.as_slice() else {
        let shapes: Vec<&str> = tiny_models::SHAPES.iter().map(|s| s.name).collect();
        eprintln!(
            "usage: shaped_gguf <shape> <smollm2.gguf> <out.gguf>\nshapes: {}",
            shapes.join(", ")
        );
        return ExitCode::FAILURE;
    };
    let started = Instant::now();
    match tiny_models::write_shaped(shape, Path::new(vocab), Path::new(out)) {
        Ok(()) => {
            eprintln!(
                "shaped_gguf: wrote {out} ({shape}) in {:.1?}",
                started.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shaped_gguf: {e}");
            ExitCode::FAILURE
        }
    }
}
