//! Write a quantized GGUF back as F16 (matrices) and F32 (vectors): the float file that
//! quantize tests and fixtures start from.
//!
//! `cargo run --release -p wick-engine --example dequantize_gguf -- <in.gguf> <out.gguf>`

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: dequantize_gguf <in.gguf> <out.gguf>");
        std::process::exit(2);
    };
    if let Err(e) = wick_engine::quantize::dequantize_to_f16(src.as_ref(), dst.as_ref()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
