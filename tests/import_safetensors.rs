//! Importing the real all-MiniLM-L6-v2 safetensors directory as Ollama's CLI does
//! (every file uploaded to /api/blobs, then /api/create with `files`): the server
//! converts it to a GGUF `bert` model.

mod common;

use common::{model_cache, upload_blob, Server};
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
