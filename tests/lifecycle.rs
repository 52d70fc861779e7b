//! Model lifecycle through the API: load and unload replies, keep_alive, /api/ps.

mod common;

use common::{Server, SMOLLM2};
use serde_json::json;

#[test]
fn empty_prompt_loads_and_keep_alive_zero_unloads() {
    let s = Server::with_smollm2();
    let (status, r) = s
        .post("/api/generate", &json!({"model": SMOLLM2, "prompt": ""}))
        .expect("load");
    assert_eq!(status, 200);
    assert_eq!(r["done"], true);
    assert_eq!(r["done_reason"], "load");
    assert_eq!(r["response"], "");

    let (_, ps) = s.get("/api/ps");
    let models = ps["models"].as_array().expect("models");
    assert_eq!(models.len(), 1, "{ps}");
    assert_eq!(models[0]["name"], SMOLLM2);
    assert!(models[0]["size"].as_u64().is_some_and(|n| n > 90_000_000));
    assert!(models[0]["context_length"]
        .as_u64()
        .is_some_and(|n| n > 2048));
    assert!(models[0]["expires_at"].as_str().is_some());

    let (status, r) = s
        .post(
            "/api/chat",
            &json!({"model": SMOLLM2, "messages": [], "keep_alive": 0}),
        )
        .expect("unload");
    assert_eq!(status, 200);
    assert_eq!(r["done_reason"], "unload");
    assert_eq!(r["message"]["role"], "assistant");
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(0), "{ps}");
}

#[test]
fn keep_alive_duration_expires_and_negative_is_forever() {
    let s = Server::with_smollm2();
    let (status, _) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "", "keep_alive": "1s"}),
        )
        .expect("load");
    assert_eq!(status, 200);
    assert_eq!(
        s.get("/api/ps").1["models"].as_array().map(Vec::len),
        Some(1)
    );
    // Unloaded after the keep-alive passes (polled, not a timed assertion on speed).
    let mut gone = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if s.get("/api/ps").1["models"].as_array().map(Vec::len) == Some(0) {
            gone = true;
            break;
        }
    }
    assert!(gone, "model still loaded 10 s after keep_alive 1s");

    let (status, _) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "", "keep_alive": -1}),
        )
        .expect("load forever");
    assert_eq!(status, 200);
    let (_, ps) = s.get("/api/ps");
    let at = ps["models"][0]["expires_at"]
        .as_str()
        .expect("expires_at")
        .to_string();
    assert!(
        at.starts_with("2") && at.as_str() > "2200",
        "forever should be far future: {at}"
    );

    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "", "keep_alive": {"bad": 1}}),
        )
        .expect("bad keep_alive");
    assert_eq!(status, 400, "{r}");
}

#[test]
fn ollama_keep_alive_env_is_the_default() {
    let s = Server::start_with_env(&[("OLLAMA_KEEP_ALIVE", "0")]);
    s.import_gguf(SMOLLM2, &common::smollm2_gguf());
    let (status, _) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Hi", "stream": false,
                    "options": {"num_predict": 2}}),
        )
        .expect("generate");
    assert_eq!(status, 200);
    assert_eq!(
        s.get("/api/ps").1["models"].as_array().map(Vec::len),
        Some(0)
    );
}

#[test]
fn deleting_a_copy_keeps_the_loaded_original_and_deleting_the_last_name_unloads() {
    let s = Server::with_smollm2();
    let (status, _) = s
        .post("/api/generate", &json!({"model": SMOLLM2, "prompt": ""}))
        .expect("load");
    assert_eq!(status, 200);
    let (status, _) = s
        .post(
            "/api/copy",
            &json!({"source": SMOLLM2, "destination": "spare"}),
        )
        .expect("copy");
    assert_eq!(status, 200);
    let (status, _) = s.delete(&json!({"model": "spare"}));
    assert_eq!(status, 200);
    let (_, ps) = s.get("/api/ps");
    assert_eq!(
        ps["models"][0]["name"], SMOLLM2,
        "the original stays loaded: {ps}"
    );

    let (status, _) = s.delete(&json!({"model": SMOLLM2}));
    assert_eq!(status, 200);
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(0), "{ps}");
}

#[test]
fn a_model_file_truncated_under_the_loaded_model_changes_nothing() {
    let s = Server::with_smollm2();
    let ask = || {
        let (status, r) = s
            .post(
                "/api/generate",
                &json!({"model": SMOLLM2, "prompt": "The capital of France is", "stream": false,
                        "options": {"temperature": 0, "num_predict": 12}}),
            )
            .expect("generate");
        assert_eq!(status, 200, "{r}");
        r["response"].as_str().expect("response").to_string()
    };
    let before = ask();
    // The GGUF is the largest blob; opening it for writing waits for wick to copy the
    // mapped bytes privately.
    let blob = std::fs::read_dir(s.store.path().join("blobs"))
        .expect("blobs")
        .filter_map(Result::ok)
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a blob")
        .path();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&blob)
        .expect("truncate the model file");
    assert_eq!(std::fs::metadata(&blob).expect("meta").len(), 0);
    assert_eq!(ask(), before, "the loaded model answers as before");
    s.assert_alive();
}
