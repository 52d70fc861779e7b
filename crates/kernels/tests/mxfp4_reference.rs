//! MXFP4 against llama.cpp's gguf-py (which mirrors ggml's reference quantizer and
//! dequantizer): blocks recorded by scripts/record_mxfp4_fixture.py.

use wick_kernels::reference::{dequantize_row, quantize_row_mxfp4};
use wick_kernels::QuantKind;

fn words(s: &str) -> Vec<f32> {
    s.split_whitespace()
        .map(|w| f32::from_bits(u32::from_str_radix(w, 16).expect("hex word")))
        .collect()
}

fn bytes(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex byte"))
        .collect()
}

#[test]
fn quantize_and_dequantize_match_gguf_py_bit_for_bit() {
    let text = include_str!("fixtures/mxfp4.txt");
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split('|').collect();
        let [input, quantized, values] = parts[..] else {
            panic!("bad fixture line: {line}");
        };
        let (input, quantized, values) = (words(input), bytes(quantized), words(values));
        assert_eq!((input.len(), quantized.len(), values.len()), (32, 17, 32));
        assert_eq!(
            quantize_row_mxfp4(&input),
            quantized,
            "block {n}: quantized bytes"
        );
        let mut got = vec![0f32; 32];
        dequantize_row(QuantKind::Mxfp4, &quantized, &mut got).expect("dequantize");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&values), "block {n}: dequantized values");
        n += 1;
    }
    assert_eq!(n, 20, "every recorded block checked");
}
