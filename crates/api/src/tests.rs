//! Router tests with `oneshot`: validation, status codes, error bodies and NDJSON
//! framing. Tests that need a real GGUF use the SmolLM2 file from `models-cache/` when
//! it is there and are skipped otherwise.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use wick_engine::Device;
use wick_scheduler::{KeepAlive, Scheduler, SchedulerConfig};
use wick_store::{Digest, Store};

use crate::{app, ApiConfig, AppState};

struct Ctx {
    app: Router,
    store: Store,
    _dir: tempfile::TempDir,
}

fn ctx() -> Ctx {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let scheduler = Scheduler::new(SchedulerConfig {
        max_loaded_models: 1,
        max_queue: 8,
        default_keep_alive: KeepAlive::For(Duration::from_secs(300)),
        kv_budget_bytes: 64 << 20,
        num_parallel: None,
        default_num_ctx: Some(2048),
        device: Device::Cpu,
    });
    let state = AppState::new(scheduler, store.clone(), ApiConfig::default());
    Ctx {
        app: app(state),
        store,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn error(&self) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "{}",
            self.content_type
        );
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.body.clone()).unwrap();
        assert!(text.ends_with('\n'), "NDJSON must end with a newline");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

async fn send(app: &Router, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        content_type,
        body,
    }
}

async fn post(app: &Router, uri: &str, body: Value) -> Reply {
    send(app, Method::POST, uri, body.to_string()).await
}

#[tokio::test]
async fn health_version_and_routing() {
    let c = ctx();
    let r = send(&c.app, Method::GET, "/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"Ollama is running");
    let r = send(&c.app, Method::HEAD, "/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    let r = send(&c.app, Method::GET, "/api/version", Body::empty()).await;
    assert_eq!(r.json()["version"], "0.13.5");
    let r = send(&c.app, Method::HEAD, "/api/version", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&c.app, Method::GET, "/nope", Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&c.app, Method::GET, "/api/generate", Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = send(&c.app, Method::GET, "/api/tags", Body::empty()).await;
    assert_eq!(r.json(), json!({"models": []}));
    let r = send(&c.app, Method::GET, "/api/ps", Body::empty()).await;
    assert_eq!(r.json(), json!({"models": []}));
    let r = post(&c.app, "/api/push", json!({"model": "llama3"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn generate_and_chat_validation() {
    let c = ctx();
    for uri in ["/api/generate", "/api/chat"] {
        let r = send(&c.app, Method::POST, uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.error(), "missing request body");
        let r = send(&c.app, Method::POST, uri, "{\"model\": ").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(!r.error().is_empty());
        let r = post(&c.app, uri, json!({"prompt": "hi"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.error(), "model is required");
        let r = post(&c.app, uri, json!({"model": "nope", "tools": []})).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.error(), "model 'nope' not found");
        let r = post(&c.app, uri, json!({"model": "../../etc/passwd"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.error());
        let r = post(&c.app, uri, json!({"model": "m", "format": "yaml"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.error(),
            "invalid format: \"yaml\"; expected \"json\" or a valid JSON Schema object"
        );
        let r = post(
            &c.app,
            uri,
            json!({"model": "m", "options": {"top_k": "x"}}),
        )
        .await;
        assert_eq!(r.error(), "option \"top_k\" must be of type integer");
        let r = post(&c.app, uri, json!({"model": "m", "keep_alive": true})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.error().contains("keep_alive"));
        let r = post(
            &c.app,
            uri,
            json!({"model": "m", "keep_alive": "5 minutes"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = post(&c.app, uri, json!({"model": "m", "stream": "yes"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.error().contains("\"stream\""), "{}", r.error());
        let r = post(&c.app, uri, json!({"model": "m", "top_logprobs": 21})).await;
        assert_eq!(r.error(), "top_logprobs must be between 0 and 20");
        let r = post(&c.app, uri, json!({"model": "m", "top_logprobs": 2})).await;
        assert_eq!(
            r.error(),
            "\"top_logprobs\" requires \"logprobs\" to be true"
        );
        let r = post(&c.app, uri, json!({"model": "m", "think": "hard"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.error().starts_with("invalid think value"),
            "{}",
            r.error()
        );
        // Valid fields on a model that does not exist: 404 first, as Ollama.
        for body in [
            json!({"model": "m", "think": true}),
            json!({"model": "m", "logprobs": true, "top_logprobs": 3}),
            json!({"model": "m", "format": {"type": "object"}}),
        ] {
            let r = post(&c.app, uri, body).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.error());
        }
    }
    let r = post(
        &c.app,
        "/api/generate",
        json!({"model": "m", "raw": true, "system": "x", "prompt": "p"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.error(),
        "raw mode does not support template, system, or context"
    );
    let r = post(
        &c.app,
        "/api/generate",
        json!({"model": "m", "images": ["aGk="]}),
    )
    .await;
    assert_eq!(r.error(), "\"m\" does not support vision");
    let r = post(
        &c.app,
        "/api/generate",
        json!({"model": "m", "context": [1, -2]}),
    )
    .await;
    assert!(r.error().contains("context"));
}

#[tokio::test]
async fn management_errors() {
    let c = ctx();
    let r = post(&c.app, "/api/show", json!({"model": "nope"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "model 'nope' not found");
    let r = post(&c.app, "/api/show", json!({})).await;
    assert_eq!(r.error(), "model is required");
    let r = post(
        &c.app,
        "/api/copy",
        json!({"source": "nope", "destination": "b"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "model \"nope\" not found");
    let r = post(
        &c.app,
        "/api/copy",
        json!({"source": "a", "destination": "a/b/c/d/e"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "destination \"a/b/c/d/e\" is invalid");
    let r = send(
        &c.app,
        Method::DELETE,
        "/api/delete",
        json!({"model": "nope"}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "model 'nope' not found");
    let r = send(&c.app, Method::DELETE, "/api/delete", Body::empty()).await;
    assert_eq!(r.error(), "missing request body");
}

#[tokio::test]
async fn blobs() {
    let c = ctx();
    let data = b"some blob bytes".to_vec();
    let d = Digest::of_bytes(&data);
    let uri = format!("/api/blobs/{d}");
    let r = send(&c.app, Method::HEAD, "/api/blobs/sha256:xyz", Body::empty()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(&c.app, Method::POST, "/api/blobs/md5:abc", Body::empty()).await;
    assert_eq!(r.error(), "invalid digest format");
    let r = send(&c.app, Method::HEAD, &uri, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = send(&c.app, Method::POST, &uri, b"other bytes".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let got = Digest::of_bytes(b"other bytes");
    assert_eq!(
        r.error(),
        format!("digest mismatch, expected \"{d}\", got \"{got}\"")
    );
    assert_eq!(std::fs::read_dir(c.store.blobs_dir()).unwrap().count(), 0);

    let r = send(&c.app, Method::POST, &uri, data.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = send(&c.app, Method::POST, &uri, data.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&c.app, Method::HEAD, &uri.replace(':', "-"), Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(std::fs::read(c.store.blob_path(&d)).unwrap(), data);
}

async fn upload(c: &Ctx, bytes: &[u8]) -> Digest {
    let d = Digest::of_bytes(bytes);
    let r = send(
        &c.app,
        Method::POST,
        &format!("/api/blobs/{d}"),
        bytes.to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    d
}

#[tokio::test]
async fn create_rejects_bad_input_and_writes_nothing() {
    let c = ctx();
    let r = post(&c.app, "/api/create", json!({"model": "x"})).await;
    assert_eq!(r.error(), "neither 'from' or 'files' was specified");
    let r = post(
        &c.app,
        "/api/create",
        json!({"model": "x", "from": "a", "quantize": "q3_K_L"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r
        .error()
        .starts_with("\"quantize\": unsupported quantization type q3_K_L"));
    let r = post(&c.app, "/api/create", json!({"model": "x", "from": "nope"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let missing = Digest::of_bytes(b"missing");
    let r = post(
        &c.app,
        "/api/create",
        json!({"model": "x", "files": {"m.gguf": missing.to_string()}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("not found"), "{}", r.error());
    let r = post(
        &c.app,
        "/api/create",
        json!({"model": "x", "files": {"../m.gguf": missing.to_string()}}),
    )
    .await;
    assert!(r.error().starts_with("file path must be relative"));

    let text = upload(&c, b"not a model").await;
    let r = post(
        &c.app,
        "/api/create",
        json!({"model": "x", "files": {"m.gguf": text.to_string()}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("not a GGUF file"), "{}", r.error());

    // A GGUF header cut short.
    let corrupt = upload(&c, b"GGUF\x03\x00\x00\x00\x05").await;
    let r = post(
        &c.app,
        "/api/create",
        json!({"model": "x", "files": {"m.gguf": corrupt.to_string()}, "stream": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().starts_with("invalid GGUF file"), "{}", r.error());
    let r = send(&c.app, Method::GET, "/api/tags", Body::empty()).await;
    assert_eq!(r.json(), json!({"models": []}));
}

/// The real SmolLM2 GGUF, when the models were fetched.
fn smollm() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models-cache/smollm2-135m-instruct-q4_1.gguf");
    p.is_file().then_some(p)
}

async fn create_smollm(c: &Ctx) -> Option<()> {
    let path = smollm()?;
    let bytes = std::fs::read(path).ok()?;
    let d = upload(c, &bytes).await;
    let r = post(
        &c.app,
        "/api/create",
        json!({
            "model": "smol",
            "files": {"smollm2.gguf": d.to_string()},
            "system": "You are terse.",
            "parameters": {"temperature": 0, "stop": ["<|im_end|>"], "num_ctx": 512},
        }),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.content_type, "application/x-ndjson");
    let lines = r.lines();
    assert_eq!(lines[0]["status"], "parsing GGUF");
    assert_eq!(lines[1]["status"], format!("using existing layer {d}"));
    assert!(lines[2]["status"]
        .as_str()
        .unwrap()
        .starts_with("creating new layer sha256:"));
    assert_eq!(lines.last().unwrap()["status"], "success");
    Some(())
}

#[tokio::test]
async fn create_list_show_copy_delete_with_real_gguf() {
    let c = ctx();
    if create_smollm(&c).await.is_none() {
        eprintln!("skipping: models-cache/smollm2-135m-instruct-q4_1.gguf not found");
        return;
    }
    let r = send(&c.app, Method::GET, "/api/tags", Body::empty()).await;
    let m = &r.json()["models"][0];
    assert_eq!(m["name"], "smol:latest");
    assert_eq!(m["details"]["family"], "llama");
    assert_eq!(m["details"]["format"], "gguf");
    assert_eq!(m["details"]["quantization_level"], "Q4_1");
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);

    let r = post(&c.app, "/api/show", json!({"model": "smol"})).await;
    let s = r.json();
    assert_eq!(s["model_info"]["general.architecture"], "llama");
    assert_eq!(s["model_info"]["llama.context_length"], 8192);
    assert!(s["model_info"]["tokenizer.ggml.tokens"].is_null());
    assert_eq!(s["capabilities"], json!(["completion"]));
    assert_eq!(s["system"], "You are terse.");
    assert!(s["template"].as_str().unwrap().contains("im_start"));
    assert!(s["parameters"]
        .as_str()
        .unwrap()
        .contains(&format!("{:<30} {}", "stop", "\"<|im_end|>\"")));
    let mf = s["modelfile"].as_str().unwrap();
    assert!(mf.starts_with("# Modelfile generated by \"ollama show\""));
    assert!(mf.contains("\nFROM /"));
    assert!(mf.contains("PARAMETER temperature 0\n"));

    let r = post(
        &c.app,
        "/api/copy",
        json!({"source": "smol", "destination": "smol2:x"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    let r = post(
        &c.app,
        "/api/create",
        json!({"model": "derived", "from": "smol2:x", "system": "Be kind.", "stream": false}),
    )
    .await;
    assert_eq!(r.json(), json!({"status": "success"}));
    let r = post(&c.app, "/api/show", json!({"name": "derived"})).await;
    assert_eq!(r.json()["system"], "Be kind.");
    assert_eq!(r.json()["details"]["parent_model"], "smol2:x");

    for name in ["smol", "smol2:x", "derived"] {
        let r = send(
            &c.app,
            Method::DELETE,
            "/api/delete",
            json!({"model": name}).to_string(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
    }
    let r = send(&c.app, Method::GET, "/api/tags", Body::empty()).await;
    assert_eq!(r.json(), json!({"models": []}));
    assert_eq!(std::fs::read_dir(c.store.blobs_dir()).unwrap().count(), 0);
}

#[tokio::test]
async fn generate_streams_ndjson_equal_to_non_streamed() {
    let c = ctx();
    if create_smollm(&c).await.is_none() {
        eprintln!("skipping: models-cache/smollm2-135m-instruct-q4_1.gguf not found");
        return;
    }
    let req = json!({"model": "smol", "prompt": "Count: 1, 2, 3,", "options": {"num_predict": 8}});
    let mut non_stream = req.clone();
    non_stream["stream"] = json!(false);
    let r = post(&c.app, "/api/generate", non_stream).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let whole = r.json();
    assert_eq!(whole["done"], true);
    assert_eq!(whole["done_reason"], "length");
    assert_eq!(whole["eval_count"], 8);
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(whole[k].as_u64().is_some(), "{k}");
    }
    assert!(!whole["context"].as_array().unwrap().is_empty());

    let r = post(&c.app, "/api/generate", req).await;
    assert_eq!(r.content_type, "application/x-ndjson");
    let lines = r.lines();
    let (last, chunks) = lines.split_last().unwrap();
    assert!(chunks.iter().all(|l| l["done"] == false));
    assert_eq!(last["done"], true);
    let text: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, whole["response"].as_str().unwrap());
    assert_eq!(last["context"], whole["context"]);

    let r = post(&c.app, "/api/chat", json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 4}, "stream": false})).await;
    let chat = r.json();
    assert_eq!(chat["message"]["role"], "assistant");
    assert!(chat.get("context").is_none());

    let r = post(&c.app, "/api/ps", json!({})).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = send(&c.app, Method::GET, "/api/ps", Body::empty()).await;
    let ps = r.json();
    assert_eq!(ps["models"][0]["name"], "smol:latest");
    assert_eq!(ps["models"][0]["size_vram"], 0);

    let r = post(
        &c.app,
        "/api/generate",
        json!({"model": "smol", "keep_alive": 0}),
    )
    .await;
    assert_eq!(r.json()["done_reason"], "unload");
    let r = send(&c.app, Method::GET, "/api/ps", Body::empty()).await;
    assert_eq!(r.json(), json!({"models": []}));
    let r = post(
        &c.app,
        "/api/chat",
        json!({"model": "smol", "messages": []}),
    )
    .await;
    let load = r.json();
    assert_eq!(load["done_reason"], "load");
    assert_eq!(load["message"], json!({"role": "assistant", "content": ""}));
}

#[tokio::test]
async fn openai_routes() {
    let c = ctx();
    let r = send(&c.app, Method::GET, "/v1/models", Body::empty()).await;
    assert_eq!(r.json(), json!({"object": "list", "data": []}));
    let r = post(
        &c.app,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    assert_eq!(r.json()["error"]["message"], "model 'nope' not found");
    let r = send(&c.app, Method::POST, "/v1/completions", Body::empty()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(
        &c.app,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [], "response_format": {"type": "yaml"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid \"response_format\": unknown type \"yaml\""));
    let r = post(
        &c.app,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
    )
    .await;
    assert_eq!(
        r.json()["error"]["message"],
        "invalid \"response_format\": \"json_schema.schema\" is required"
    );
    let r = post(
        &c.app,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [], "reasoning_effort": "huge"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    if create_smollm(&c).await.is_none() {
        return;
    }
    let r = send(&c.app, Method::GET, "/v1/models/smol:latest", Body::empty()).await;
    assert_eq!(r.json()["id"], "smol:latest");
    assert_eq!(r.json()["owned_by"], "library");
    let body = json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0});
    let r = post(&c.app, "/v1/chat/completions", body.clone()).await;
    let whole = r.json();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["usage"]["completion_tokens"], 4);
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let r = post(&c.app, "/v1/chat/completions", streamed).await;
    assert_eq!(r.content_type, "text/event-stream");
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let content: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        content,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let r = post(
        &c.app,
        "/v1/completions",
        json!({"model": "smol", "prompt": "1, 2, 3,", "max_tokens": 3}),
    )
    .await;
    assert_eq!(r.json()["object"], "text_completion");
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn host_guard_and_cors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let scheduler = Scheduler::new(SchedulerConfig {
        max_loaded_models: 1,
        max_queue: 8,
        default_keep_alive: KeepAlive::For(Duration::from_secs(300)),
        kv_budget_bytes: 64 << 20,
        num_parallel: None,
        default_num_ctx: None,
        device: Device::Cpu,
    });
    let config = ApiConfig {
        loopback_only: true,
        origins: vec!["https://*.example.com".into()],
        ..ApiConfig::default()
    };
    let app = app(AppState::new(scheduler, store, config));
    let with = |host: &str, origin: Option<&str>, method: Method| {
        let mut b = Request::builder()
            .method(method)
            .uri("/api/version")
            .header(header::HOST, host);
        if let Some(o) = origin {
            b = b
                .header(header::ORIGIN, o)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET");
        }
        b.body(Body::empty()).unwrap()
    };
    let r = app
        .clone()
        .oneshot(with("evil.example:11434", None, Method::GET))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .clone()
        .oneshot(with("localhost:11434", None, Method::GET))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .clone()
        .oneshot(with(
            "127.0.0.1:11434",
            Some("https://ui.example.com"),
            Method::OPTIONS,
        ))
        .await
        .unwrap();
    assert_eq!(
        r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://ui.example.com"
    );
    let r = app
        .clone()
        .oneshot(with(
            "127.0.0.1:11434",
            Some("https://evil.example"),
            Method::GET,
        ))
        .await
        .unwrap();
    assert!(r
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
}
