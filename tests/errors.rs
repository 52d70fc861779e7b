//! Bad input gets Ollama's status codes and a clear `{"error": ...}`; the server keeps
//! serving and the store is left as it was.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file::Value as GgufValue;
use common::{upload_blob, Server, SMOLLM2};
use serde_json::{json, Value};

fn error_text(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {v}"))
}

/// Every file under the store, for before/after comparisons.
fn store_listing(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p.display().to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

#[test]
fn malformed_requests_get_400() {
    let s = Server::with_smollm2();
    let (status, r) = s.post_raw("/api/generate", "{not json");
    assert_eq!(status, 400, "{r}");
    error_text(&r);
    let (status, r) = s.post_raw("/api/chat", "");
    assert_eq!(status, 400);
    assert_eq!(error_text(&r), "missing request body");
    let (status, r) = s.post("/api/chat", &json!({"messages": []})).expect("req");
    assert_eq!(status, 400);
    assert!(error_text(&r).contains("model is required"), "{r}");
    let (status, r) = s
        .post("/api/generate", &json!({"model": SMOLLM2, "prompt": 5}))
        .expect("req");
    assert_eq!(status, 400, "{r}");
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "x", "options": {"top_k": "many"}}),
        )
        .expect("req");
    assert_eq!(status, 400);
    assert!(error_text(&r).contains("top_k"), "{r}");
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "x", "raw": true, "system": "s"}),
        )
        .expect("req");
    assert_eq!(status, 400);
    assert_eq!(
        error_text(&r),
        "raw mode does not support template, system, or context"
    );
    // Unknown option keys are accepted (the official clients still send removed ones).
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Hi", "stream": false,
                    "options": {"mirostat": 0, "tfs_z": 1.0, "num_predict": 2}}),
        )
        .expect("req");
    assert_eq!(status, 200, "{r}");
    s.assert_alive();
}

#[test]
fn unknown_and_hostile_model_names() {
    let s = Server::with_smollm2();
    let before = store_listing(s.store.path());
    let (status, r) = s
        .post("/api/generate", &json!({"model": "nope:1b", "prompt": "x"}))
        .expect("req");
    assert_eq!(status, 404);
    assert_eq!(error_text(&r), "model 'nope:1b' not found");
    for name in ["../../etc/passwd", "a/../../b", "..", "x:../../y", "a b"] {
        for path in ["/api/generate", "/api/show", "/api/chat"] {
            let (status, r) = s
                .post(path, &json!({"model": name, "prompt": "x", "messages": []}))
                .expect("req");
            assert!(
                status == 400 || status == 404,
                "{path} {name}: status {status} {r}"
            );
            error_text(&r);
        }
        let (status, _) = s.delete(&json!({"model": name}));
        assert!(status == 400 || status == 404);
        let (status, _) = s
            .post(
                "/api/copy",
                &json!({"source": SMOLLM2, "destination": name}),
            )
            .expect("copy");
        assert_eq!(status, 400, "copy to {name}");
    }
    assert_eq!(store_listing(s.store.path()), before, "store changed");
    s.assert_alive();
}

#[test]
fn bad_blobs_and_broken_gguf_leave_the_store_unchanged() {
    let s = Server::with_smollm2();
    let before = store_listing(s.store.path());

    // Digest format.
    let r = s
        .client
        .head(s.url("/api/blobs/sha256:xyz"))
        .send()
        .expect("head");
    assert_eq!(r.status().as_u16(), 400);
    let r = s
        .client
        .head(s.url(&format!("/api/blobs/sha256:{}", "0".repeat(64))))
        .send()
        .expect("head");
    assert_eq!(r.status().as_u16(), 404);

    // Bytes that do not match their digest.
    let r = s
        .client
        .post(s.url(&format!("/api/blobs/sha256:{}", "1".repeat(64))))
        .body("not what the digest says")
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().expect("json");
    assert!(error_text(&body).starts_with("digest mismatch"), "{body}");
    assert_eq!(
        store_listing(s.store.path()),
        before,
        "mismatched blob left files"
    );

    // A truncated GGUF uploads fine as a blob but cannot become a model.
    let dir = tempfile::tempdir().expect("tmp");
    let full = std::fs::read(common::smollm2_gguf()).expect("read");
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &full[..full.len() / 3]).expect("write");
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF but not really a model file").expect("write");
    for file in [&truncated, &garbage] {
        let digest = upload_blob(&s, file);
        let (status, r) = s
            .post(
                "/api/create",
                &json!({"model": "broken", "files": {"m.gguf": digest}, "stream": false}),
            )
            .expect("create");
        assert_eq!(status, 400, "{r}");
        error_text(&r);
    }
    // A file whose tokenizer wick cannot build is refused at create, naming it.
    let odd_pre = dir.path().join("odd-pre.gguf");
    let metadata = [
        ("general.architecture", GgufValue::String("llama".into())),
        ("tokenizer.ggml.model", GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre", GgufValue::String("kimi-k2".into())),
    ];
    let refs: Vec<(&str, &GgufValue)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    candle_core::quantized::gguf_file::write(
        &mut std::fs::File::create(&odd_pre).expect("create"),
        &refs,
        &[],
    )
    .expect("write");
    let digest = upload_blob(&s, &odd_pre);
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": "odd", "files": {"m.gguf": digest}, "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 400, "{r}");
    assert!(error_text(&r).contains("kimi-k2"), "{r}");

    let (_, tags) = s.get("/api/tags");
    let names: Vec<&str> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, vec![SMOLLM2]);
    let (status, r) = s
        .post("/api/create", &json!({"model": "x", "stream": false}))
        .expect("create");
    assert_eq!(status, 400);
    assert_eq!(error_text(&r), "neither 'from' or 'files' was specified");

    // The real model still works.
    let (status, _) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Hi", "stream": false,
                    "options": {"num_predict": 2}}),
        )
        .expect("generate");
    assert_eq!(status, 200);
}

#[test]
fn copy_show_delete_round_trip() {
    let s = Server::with_smollm2();
    let (status, _) = s
        .post(
            "/api/copy",
            &json!({"source": SMOLLM2, "destination": "mine:latest"}),
        )
        .expect("copy");
    assert_eq!(status, 200);
    let (status, show) = s
        .post("/api/show", &json!({"model": "mine"}))
        .expect("show");
    assert_eq!(status, 200);
    assert_eq!(show["details"]["family"], "llama");
    assert_eq!(show["details"]["quantization_level"], "Q4_1");
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert_eq!(show["model_info"]["llama.context_length"], 8192);
    assert!(show["model_info"]["tokenizer.ggml.tokens"].is_null());
    assert!(show["template"]
        .as_str()
        .is_some_and(|t| t.contains("im_start")));
    assert!(show["modelfile"]
        .as_str()
        .is_some_and(|m| m.contains("FROM ")));
    assert!(show["capabilities"]
        .as_array()
        .is_some_and(|c| c.contains(&json!("completion"))));
    // Every tensor, in file order, as Ollama lists them: ggml's type, GGUF shape.
    let tensors = show["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), 272);
    assert_eq!(
        tensors[0],
        json!({"name": "token_embd.weight", "type": "Q8_0", "shape": [576, 49152]})
    );
    assert!(tensors
        .iter()
        .any(|t| t["name"] == "blk.0.attn_q.weight" && t["type"] == "Q4_1"));

    // `wick show -v` prints the whole metadata (arrays shortened) and the tensors.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["show", "-v", "mine"])
        .env("OLLAMA_HOST", &s.base)
        .env_remove("WICK_API_KEY")
        .output()
        .expect("run wick show -v");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("  Metadata") && text.contains("  Tensors"),
        "{text}"
    );
    assert!(
        text.contains("tokenizer.ggml.tokens") && text.contains("more]"),
        "{text}"
    );
    assert!(text.contains("blk.29.ffn_down.weight"), "{text}");

    let (status, _) = s.delete(&json!({"model": "mine"}));
    assert_eq!(status, 200);
    let (status, r) = s.delete(&json!({"model": "mine"}));
    assert_eq!(status, 404, "{r}");
    let (status, r) = s
        .post(
            "/api/copy",
            &json!({"source": "missing", "destination": "x"}),
        )
        .expect("copy");
    assert_eq!(status, 404, "{r}");
    // The original and its blob survive deleting the copy.
    let (status, _) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Hi", "stream": false,
                    "options": {"num_predict": 2}}),
        )
        .expect("generate");
    assert_eq!(status, 200);
}

#[test]
fn connections_over_the_cap_get_503_and_the_rest_keep_working() {
    use std::io::{Read, Write};
    let s = Server::start_with_env(&[("WICK_MAX_CONNECTIONS", "2")]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // Two idle connections take both slots (the client pool's own may hold one).
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut extra = std::net::TcpStream::connect(&addr).expect("connect");
    extra
        .write_all(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    extra.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("WICK_MAX_CONNECTIONS"), "{answer}");
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut again = std::net::TcpStream::connect(&addr).expect("connect");
    again
        .write_all(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    again.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
