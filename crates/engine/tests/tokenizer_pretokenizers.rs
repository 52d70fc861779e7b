//! Every BPE pre-tokenizer wick knows splits text as llama.cpp's does: SmolLM2's
//! vocabulary and merges under each `tokenizer.ggml.pre` value give llama.cpp's token
//! ids on a text set with code, several scripts, emoji, contractions in every case,
//! letter-case runs, digit runs and whitespace (recorded by
//! `scripts/record_pretokenizer_fixtures.py` into `fixtures/pretokenizers.json`). A
//! value wick does not know is refused by name, as llama.cpp refuses it.

mod common;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;
use wick_engine::gguf::GgufFile;
use wick_engine::GgufTokenizer;

/// A GGUF holding only SmolLM2's tokenizer keys, with `pre` as its pre-tokenizer.
fn vocabulary_with_pre(dir: &std::path::Path, pre: &str) -> GgufFile {
    let source = GgufFile::open(&common::smollm2_gguf()).expect("open SmolLM2");
    let mut metadata =
        source.metadata_entries(|k| k.starts_with("tokenizer.") && k != "tokenizer.ggml.pre");
    metadata.push(("general.architecture".into(), Value::String("llama".into())));
    metadata.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
    let path = dir.join(format!("{pre}.gguf"));
    let mut file = std::fs::File::create(&path).expect("create");
    let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(&mut file, &refs, &[]).expect("write");
    GgufFile::open(&path).expect("open")
}

#[test]
fn every_known_pre_tokenizer_splits_as_llama_cpp_does() {
    let path = common::repo().join("crates/engine/tests/fixtures/pretokenizers.json");
    let fixture: Json =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    let texts: Vec<&str> = fixture["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|t| t.as_str().expect("text"))
        .collect();
    let dir = tempfile::tempdir().expect("tmp");
    let mut failures = Vec::new();
    let pres = fixture["pres"].as_object().expect("pres");
    assert!(pres.contains_key("gpt-4o") && pres.contains_key("default"));
    for (pre, all_ids) in pres {
        let tokenizer =
            GgufTokenizer::from_gguf(&vocabulary_with_pre(dir.path(), pre)).expect("tokenizer");
        for (text, want) in texts.iter().zip(all_ids.as_array().expect("ids")) {
            let want: Vec<u32> = want
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect();
            let got = tokenizer.encode(text, false).expect("encode");
            if got != want {
                failures.push(format!("{pre} {text:?}\n got {got:?}\nwant {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unknown_pre_tokenizer_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let gguf = vocabulary_with_pre(dir.path(), "kimi-k2");
    let Err(err) = GgufTokenizer::from_gguf(&gguf) else {
        panic!("an unknown pre-tokenizer was accepted");
    };
    assert!(err.to_string().contains("kimi-k2"), "{err}");
    assert!(wick_engine::tokenizer::check_tokenizer(&gguf).is_err());
}
