//! Write one of wick's tiny seeded test models as a GGUF file.
//!
//!     cargo run --release -p wick-engine --example tiny_gguf -- <family> <smollm2.gguf> <out.gguf>
//!
//! `<family>` is one of `wick_engine::tiny_models::FAMILIES`; the vocabulary and
//! tokenizer metadata are copied from `<smollm2.gguf>`.

use std::path::Path;
use std::process::ExitCode;

use wick_engine::tiny_models;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [family, vocab, out] = args.as_slice() else {
        eprintln!(
            "usage: tiny_gguf <family> <smollm2.gguf> <out.gguf>\nfamilies: {}",
            tiny_models::FAMILIES.join(", ")
        );
        return ExitCode::FAILURE;
    };
    match tiny_models::write(family, Path::new(vocab), Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tiny_gguf: {e}");
            ExitCode::FAILURE
        }
    }
}
