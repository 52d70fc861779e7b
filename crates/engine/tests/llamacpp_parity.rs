//! The engine against llama.cpp on the real models: token ids from the GGUF tokenizer,
//! and greedy continuations, compared with fixtures recorded from llama.cpp's server
//! (`scripts/record_llamacpp_fixtures.py`, command inside the fixture files).

mod common;

use common::{model_cache, repo};

use std::path::PathBuf;

use serde_json::Value;
use wick_engine::gguf::GgufFile;
use wick_engine::{Device, GgufTokenizer, Model};

/// A step whose top-2 margin in llama.cpp is below this (nats) is a near tie, reported
/// so a divergence can be read against it.
const NEAR_TIE: f64 = 0.05;
/// Tokens that must equal llama.cpp's, for at least `MIN_CASES` prompts per model.
const MIN_MATCH: usize = 16;
const MIN_CASES: usize = 3;

fn fixture(name: &str) -> Value {
    let path = repo().join("assets/fixtures").join(name);
    let text = std::fs::read_to_string(&path).expect("fixture file");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn model_path(file: &str) -> PathBuf {
    let path = model_cache().join(file);
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models.sh --with-gemma",
        path.display()
    );
    path
}

fn load(file: &str) -> Model {
    Model::load(&model_path(file), &Device::Cpu).expect("load model")
}

/// The tokenizer alone (no weights: a family without a decoder yet still tokenizes),
/// and how long it took to build.
fn load_tokenizer(file: &str) -> (GgufTokenizer, std::time::Duration) {
    let gguf = GgufFile::open(&model_path(file)).expect("open GGUF");
    let start = std::time::Instant::now();
    let tokenizer = GgufTokenizer::from_gguf(&gguf).expect("tokenizer");
    (tokenizer, start.elapsed())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// The fixture's models whose file name starts with one of `families`.
fn models_of(fix: &Value, families: &[&str]) -> Vec<(String, Value)> {
    fix["models"]
        .as_object()
        .expect("models")
        .values()
        .filter(|m| {
            let f = m["file"].as_str().unwrap_or("");
            families.iter().any(|family| f.starts_with(family))
        })
        .map(|m| (m["file"].as_str().unwrap_or("").to_string(), m.clone()))
        .collect()
}

/// Models whose decoder wick runs.
const DECODERS: &[&str] = &["smollm2", "qwen2.5", "gemma-3"];
/// Models whose tokenizer wick builds.
const TOKENIZERS: &[&str] = &["smollm2", "qwen2.5", "gemma-3"];

/// Greedy decoding as the fixture recorded it: argmax over all tokens, EOG included in
/// the scores but never emitted (llama.cpp's `ignore_eos`).
fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n + 1).expect("cache");
    let mut logits = model.forward(prompt, &mut cache).expect("prefill");
    let mut out = Vec::new();
    for _ in 0..n {
        let mut best = None;
        for (i, l) in logits.iter().enumerate() {
            if model.tokenizer.is_end_of_generation(i as u32) {
                continue;
            }
            if best.is_none_or(|(_, b)| *l > b) {
                best = Some((i as u32, *l));
            }
        }
        let (tok, _) = best.expect("non-empty vocabulary");
        out.push(tok);
        logits = model.forward(&[tok], &mut cache).expect("decode");
    }
    out
}

#[test]
fn greedy_continuations_match_llamacpp() {
    let fix = fixture("llamacpp_greedy.json");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (file, m) in models_of(&fix, DECODERS) {
        let mut full_matches = 0;
        let model = load(&file);
        let cases = m["cases"].as_array().expect("cases");
        assert!(cases.len() >= 3);
        for case in cases {
            let prompt = ids(&case["prompt_ids"]);
            let expected = ids(&case["generated_ids"]);
            let margins: Vec<f64> = case["top2_logprobs"]
                .as_array()
                .map(|steps| {
                    steps
                        .iter()
                        .map(|s| {
                            let a = s[0][1].as_f64().unwrap_or(0.0);
                            let b = s[1][1].as_f64().unwrap_or(f64::NEG_INFINITY);
                            a - b
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Steps after llama.cpp banned an EOG token are compared too: we ban the same.
            let first_tie = margins
                .iter()
                .position(|&m| m < NEAR_TIE)
                .unwrap_or(expected.len());
            let got = greedy(&model, &prompt, expected.len());
            let matched = got
                .iter()
                .zip(&expected)
                .take_while(|(a, b)| a == b)
                .count();
            if matched >= MIN_MATCH {
                full_matches += 1;
            }
            report.push(format!(
                "{file} {:?}: {matched}/{} match (first near tie at {first_tie})",
                case["prompt"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(30)
                    .collect::<String>(),
                expected.len()
            ));
        }
        if full_matches < MIN_CASES {
            failures.push(format!(
                "{file}: only {full_matches} prompts match llama.cpp for {MIN_MATCH} tokens"
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tokenizer_matches_llamacpp() {
    let fix = fixture("llamacpp_tokenizer.json");
    let mut failures = Vec::new();
    let mut report = Vec::new();
    let models = models_of(&fix, TOKENIZERS);
    assert_eq!(
        models.len(),
        TOKENIZERS.len(),
        "a model is missing from the fixture"
    );
    for (file, m) in models {
        let (tokenizer, load_time) = load_tokenizer(&file);
        let mut total = 0;
        let mut matched = 0;
        for case in m["cases"].as_array().expect("cases") {
            let text = case["text"].as_str().expect("text");
            // The fixture holds llama.cpp's ids without BOS (add_special false).
            let mut want = ids(&case["ids"]);
            if tokenizer.add_bos {
                want.splice(0..0, tokenizer.bos_token_id);
            }
            let got = tokenizer.encode(text, true).expect("encode");
            total += 1;
            if got == want {
                matched += 1;
            } else {
                failures.push(format!("{file} {text:?}\n got {got:?}\nwant {want:?}"));
            }
            // Decoding gives the text back byte for byte (BOS aside), or what llama.cpp
            // decodes where that differs (a literal `▁` comes back as a space).
            let body = &got[usize::from(tokenizer.add_bos)..];
            let decoded = case["detokenized"].as_str().unwrap_or(text);
            assert_eq!(tokenizer.decode(body), decoded, "{file} round trip");
        }
        assert!(total >= 20, "{file}: fixture too small");
        report.push(format!(
            "{file}: {matched}/{total} match llama.cpp; tokenizer built in {load_time:?}"
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
