//! Importing a Hugging Face decoder directory gives the GGUF llama.cpp's converter
//! would write. Each source (SmolLM2 itself, the tiny llama 3 / qwen2 / qwen3 models
//! with SmolLM2's vocabulary, and the tiny gemma3 with Gemma 3's SentencePiece
//! vocabulary) is written out as a Hugging Face directory
//! (`tiny_models::write_hf_dir`: F32 safetensors with Hugging Face's names, rotary
//! layout and gemma's unshifted norms, `tokenizer.json` or `tokenizer.model`,
//! `tokenizer_config.json`, `config.json`), imported with
//! `convert::safetensors_to_gguf`, and compared with the source turned into F16 the
//! same way: every tensor byte for byte, the tokenizer keys, the same token ids on a
//! text set, and bit-identical logits.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use serde_json::json;
use wick_engine::gguf::GgufFile;
use wick_engine::quantize::dequantize_to_f16;
use wick_engine::{convert, tiny_models, Device, GgufTokenizer, Model};

const TOKENIZER_KEYS: &[&str] = &[
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_sep_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.scores",
    "tokenizer.chat_template",
];

const TEXTS: &[&str] = &[
    "The capital of France is Paris.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # 12345",
    "<|im_start|>user\nHéllo, 世界! 🎉   spaces<|im_end|>",
];

fn smollm2() -> PathBuf {
    common::smollm2_gguf()
}

fn hf_files(dir: &Path) -> std::collections::BTreeMap<String, PathBuf> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), e.path())
        })
        .collect()
}

fn metadata_value(gguf: &GgufFile, key: &str) -> Option<String> {
    gguf.content.metadata.get(key).map(|v| match v {
        Value::Array(a) => format!("{} items: {:?}", a.len(), a),
        other => format!("{other:?}"),
    })
}

/// Tensor names, sorted, but `rope_freqs` (compared apart).
fn matrix_names(gguf: &GgufFile) -> Vec<String> {
    let mut names: Vec<String> = gguf
        .content
        .tensor_infos
        .keys()
        .filter(|n| *n != "rope_freqs.weight")
        .cloned()
        .collect();
    names.sort();
    names
}

fn last_logits(path: &Path, ids: &[u32]) -> Vec<f32> {
    let model = Model::load(path, &Device::Cpu).expect("load");
    let mut cache = model.new_cache(ids.len() + 1).expect("cache");
    model.forward(ids, &mut cache).expect("forward")
}

/// Import the Hugging Face form of `source` and compare it with `source` in F16.
fn round_trip(source: &Path, extra_config: serde_json::Value, dir: &Path) {
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).expect("mkdir");
    tiny_models::write_hf_dir(source, &hf, extra_config).expect("write the Hugging Face form");
    let imported = dir.join("imported.gguf");
    convert::safetensors_to_gguf(&hf_files(&hf), &imported).expect("import");
    let f16 = dir.join("f16.gguf");
    dequantize_to_f16(source, &f16).expect("f16");

    let mut want = GgufFile::open(&f16).expect("open f16");
    let mut got = GgufFile::open(&imported).expect("open imported");
    let (want_names, got_names) = (matrix_names(&want), matrix_names(&got));
    assert_eq!(got_names, want_names, "{}: tensor names", source.display());
    for name in &want_names {
        let a = want.raw_tensor(name).expect("want tensor");
        let b = got.raw_tensor(name).expect("got tensor");
        assert_eq!(a.dtype, b.dtype, "{name}: type");
        assert!(a.data[..] == b.data[..], "{name}: bytes differ");
    }
    if want.content.tensor_infos.contains_key("rope_freqs.weight") {
        let a = want.raw_tensor("rope_freqs.weight").expect("rope_freqs");
        let b = got.raw_tensor("rope_freqs.weight").expect("rope_freqs");
        assert!(
            a.data[..] == b.data[..],
            "rope_freqs from rope_scaling differ"
        );
    }
    for key in TOKENIZER_KEYS {
        assert_eq!(
            metadata_value(&got, key),
            metadata_value(&want, key),
            "{}: {key}",
            source.display()
        );
    }
    let (ta, tb) = (
        GgufTokenizer::from_gguf(&want).expect("tokenizer"),
        GgufTokenizer::from_gguf(&got).expect("tokenizer"),
    );
    for text in TEXTS {
        assert_eq!(
            tb.encode(text, true).expect("encode"),
            ta.encode(text, true).expect("encode"),
            "{text:?}"
        );
    }
    let ids = ta.encode(TEXTS[1], true).expect("encode");
    let (la, lb) = (last_logits(&f16, &ids), last_logits(&imported, &ids));
    assert!(
        la.iter().zip(&lb).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{}: logits differ",
        source.display()
    );
}

#[test]
fn smollm2_imports_from_its_hugging_face_form() {
    let dir = tempfile::tempdir().expect("tmp");
    round_trip(&smollm2(), json!({}), dir.path());
}

#[test]
fn tiny_llama3_qwen2_qwen3_import_from_their_hugging_face_form() {
    let dir = tempfile::tempdir().expect("tmp");
    for (family, extra) in [
        (
            "llama3",
            json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
        ),
        ("qwen2", json!({})),
        ("qwen3", json!({})),
    ] {
        let sub = dir.path().join(family);
        std::fs::create_dir_all(&sub).expect("mkdir");
        let source = sub.join("source.gguf");
        tiny_models::write(family, &smollm2(), &source).expect("tiny model");
        round_trip(&source, extra, &sub);
    }
}

#[test]
fn tiny_gemma3_with_gemma_s_sentencepiece_vocabulary_imports_from_its_hugging_face_form() {
    let gemma = common::model_cache().join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        gemma.exists(),
        "{} missing: run scripts/fetch-models.sh --with-gemma",
        gemma.display()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let source = dir.path().join("source.gguf");
    tiny_models::write("gemma3", &gemma, &source).expect("tiny model");
    round_trip(&source, json!({}), dir.path());
    // Gemma 3's converter writes no space prefix (SentencePiece would add one).
    let imported = GgufFile::open(&dir.path().join("imported.gguf")).expect("open imported");
    assert_eq!(
        metadata_value(&imported, "tokenizer.ggml.add_space_prefix").as_deref(),
        Some("Bool(false)")
    );
}

#[test]
fn an_unknown_architecture_or_pre_tokenizer_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"model_type": "mamba"}"#).expect("write");
    let weights = dir.path().join("model.safetensors");
    std::fs::write(&weights, b"").expect("write");
    let files = hf_files(dir.path());
    let err = convert::safetensors_to_gguf(&files, &dir.path().join("out.gguf"))
        .expect_err("mamba is refused");
    assert!(err.to_string().contains("mamba"), "{err}");
}
