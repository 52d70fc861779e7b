//! A decoder's embeddings against llama.cpp's on the same GGUF: the input's token ids
//! equal llama-server's, and the vector (the last token's final-normed hidden state,
//! what Ollama returns for a decoder) points the same way as llama-server's with `last`
//! pooling. Fixture: `scripts/record_decoder_embeddings.py`.

mod common;

use common::{model_cache, repo};

use serde_json::Value;
use wick_engine::{Device, Model};

/// Cosine wick's vector must reach against llama.cpp's (issue 9's bar for embeddings).
const MIN_COSINE: f64 = 0.999;

fn fixture() -> Value {
    let path = repo().join("assets/fixtures/llamacpp_decoder_embeddings.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file")).expect("JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn check(name: &str) {
    let fx = fixture();
    let m = &fx["models"][name];
    let path = model_cache().join(m["file"].as_str().expect("file"));
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models.sh",
        path.display()
    );
    let model = Model::load(&path, &Device::Cpu).expect("load");
    let cases = m["cases"].as_array().expect("cases");
    let mut inputs = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want: Vec<u32> = floats(&case["ids"]).iter().map(|&x| x as u32).collect();
        let (ids, cut) = model
            .tokenizer
            .encode_for_embedding(text, 512, true)
            .expect("tokenize")
            .expect("fits");
        assert!(!cut);
        assert_eq!(ids, want, "{name}: token ids of {text:?}");
        inputs.push(ids);
    }
    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let batched = model.embed(&refs, 2).expect("embed");
    for (case, v) in cases.iter().zip(&batched) {
        let c = cosine(v, &floats(&case["embedding"]));
        eprintln!("{name} {:?}: cosine {c:.6}", case["text"].as_str());
        assert!(c >= MIN_COSINE, "{name}: cosine {c} for {}", case["text"]);
    }
    // One input alone gives the vector it gets beside the others: rows are independent.
    let alone = model.embed(&refs[1..2], 2).expect("embed one");
    assert_eq!(alone[0], batched[1], "{name}: batching changed a vector");
}

#[test]
fn smollm2_embeddings_match_llamacpp() {
    check("smollm2");
}

#[test]
fn qwen_embeddings_match_llamacpp() {
    check("qwen2.5-coder");
}
