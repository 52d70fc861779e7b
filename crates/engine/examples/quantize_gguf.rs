//! Quantize a float GGUF as `/api/create` with `quantize` does.
//!
//! `cargo run --release -p wick-engine --example quantize_gguf -- <in.gguf> <out.gguf> q4_K_M`

use wick_engine::quantize::{quantize_gguf, FileType};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst, kind] = args.as_slice() else {
        eprintln!(
            "usage: quantize_gguf <in.gguf> <out.gguf> <q8_0|q4_0|q4_K_S|q4_K_M|q5_K_M|q6_K>"
        );
        std::process::exit(2);
    };
    let Some(ftype) = FileType::parse(kind) else {
        eprintln!("unknown type {kind}");
        std::process::exit(2);
    };
    if let Err(e) = quantize_gguf(src.as_ref(), dst.as_ref(), ftype, |_, _| {}) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
