//! Importing safetensors directories as Ollama's CLI does (every file uploaded to
//! /api/blobs, then /api/create with `files`): the real all-MiniLM-L6-v2 becomes a GGUF
//! `bert` model; a qwen3 decoder and a gemma3 one with Gemma 3's SentencePiece
//! vocabulary (the tiny ones, written out in Hugging Face's form) become GGUF models
//! that answer as their GGUF sources do.

mod common;

use std::path::Path;

use common::{gemma3_gguf, greedy, model_cache, smollm2_gguf, upload_blob, Server};
use serde_json::{json, Map, Value};

#[test]
fn minilm_directory_imports_as_an_embedding_model() {
    let s = Server::start();
    let dir = model_cache().join("all-minilm-l6-v2");
    assert!(dir.exists(), "run scripts/fetch-models.sh");
    let mut files = Map::new();
    for rel in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "1_Pooling/config.json",
    ] {
        files.insert(rel.into(), json!(upload_blob(&s, &dir.join(rel))));
    }
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": "all-minilm:l6-v2", "files": Value::Object(files.clone()),
                    "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 200, "{r}");

    let (status, show) = s
        .post("/api/show", &json!({"model": "all-minilm:l6-v2"}))
        .expect("show");
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["details"]["family"], "bert");
    assert_eq!(show["details"]["format"], "gguf");
    assert_eq!(show["model_info"]["bert.embedding_length"], 384);
    assert_eq!(show["model_info"]["bert.context_length"], 512);
    assert!(show["capabilities"]
        .as_array()
        .is_some_and(|c| c.contains(&json!("embedding"))));

    // It cannot generate text: a clear 400, not a crash.
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": "all-minilm:l6-v2", "prompt": "hi"}),
        )
        .expect("generate");
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"], "\"all-minilm:l6-v2\" does not support generate");

    // Weights that are not safetensors are refused and nothing is listed.
    files.insert(
        "model.safetensors".into(),
        json!(upload_blob(&s, &dir.join("config.json"))),
    );
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": "broken-embed", "files": Value::Object(files), "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 400, "{r}");
    let (_, tags) = s.get("/api/tags");
    assert_eq!(tags["models"].as_array().map(Vec::len), Some(1), "{tags}");
    s.assert_alive();
}

#[test]
fn a_qwen3_directory_imports_and_answers_as_its_gguf_does() {
    let s = Server::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut files = import_and_compare(&s, tmp.path(), "qwen3", &smollm2_gguf(), |template| {
        template.contains("im_start")
    });

    // A directory whose architecture wick cannot import is a 400 naming it.
    let config = tmp.path().join("config.json");
    std::fs::write(&config, r#"{"model_type": "mamba2"}"#).expect("write");
    files.insert("config.json".into(), json!(upload_blob(&s, &config)));
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": "mamba", "files": Value::Object(files), "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("mamba2")),
        "{r}"
    );
    s.assert_alive();
}

#[test]
fn a_gemma3_directory_with_a_sentencepiece_tokenizer_imports_and_answers_as_its_gguf_does() {
    let s = Server::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let files = import_and_compare(&s, tmp.path(), "gemma3", &gemma3_gguf(), |_| true);
    assert!(files.contains_key("tokenizer.model"), "{files:?}");
    s.assert_alive();
}

/// Write the tiny `family` model (with the vocabulary of `vocab`) in Hugging Face's
/// form, import it through /api/create `files`, and check it answers as its GGUF
/// source (turned into F16 the same way) does; the uploaded files are returned.
fn import_and_compare(
    s: &Server,
    tmp: &Path,
    family: &str,
    vocab: &Path,
    template_ok: impl Fn(&str) -> bool,
) -> Map<String, Value> {
    let source = tmp.join(format!("{family}.gguf"));
    wick_engine::tiny_models::write(family, vocab, &source).expect("tiny model");
    let f16 = tmp.join(format!("{family}-f16.gguf"));
    wick_engine::quantize::dequantize_to_f16(&source, &f16).expect("f16");
    let hf = tmp.join("hf");
    std::fs::create_dir_all(&hf).expect("mkdir");
    wick_engine::tiny_models::write_hf_dir(&source, &hf, json!({})).expect("hf form");
    let (from_hf, from_gguf) = (format!("tiny-{family}:hf"), format!("tiny-{family}:gguf"));

    let mut files = Map::new();
    for entry in std::fs::read_dir(&hf).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        files.insert(name, json!(upload_blob(s, &path)));
    }
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": from_hf, "files": Value::Object(files.clone()), "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 200, "{r}");
    s.import_gguf(&from_gguf, &f16);

    let (status, show) = s
        .post("/api/show", &json!({"model": from_hf}))
        .expect("show");
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["details"]["family"], family);
    assert_eq!(show["details"]["quantization_level"], "F16");
    assert!(
        template_ok(show["template"].as_str().unwrap_or_default()),
        "{show}"
    );

    let answer = |model: &str| {
        let (status, r) = s
            .post(
                "/api/generate",
                &json!({"model": model, "prompt": "The capital of France is", "raw": true,
                        "stream": false, "options": greedy(12)}),
            )
            .expect("generate");
        assert_eq!(status, 200, "{r}");
        (
            r["response"].as_str().unwrap_or_default().to_string(),
            r["eval_count"].clone(),
        )
    };
    let imported = answer(&from_hf);
    assert!(!imported.0.is_empty());
    assert_eq!(imported, answer(&from_gguf));
    files
}
