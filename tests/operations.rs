//! What operators rely on, against a real `wick serve`: the API key, body and time
//! limits, the header timeout, JSON 404s, `/metrics` (also parsed by the official
//! `prometheus_client` Python package when `WICK_TEST_PYTHON` is set) and `/api/ps`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{greedy, Server, SMOLLM2};
use serde_json::{json, Value};

const KEY: &str = "s3cret-key";

fn status_and_json(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn the_api_key_guards_every_route_but_health_and_version() {
    let s = Server::start_with_env(&[("WICK_API_KEY", KEY)]);
    let get = |path: &str, key: Option<&str>| {
        let mut req = s.client.get(s.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        status_and_json(req.send().expect("request"))
    };

    // Open: health and version, without a key.
    assert_eq!(get("/", None).0, 200);
    assert_eq!(get("/api/version", None).0, 200);
    let head = s.client.head(s.url("/")).send().expect("HEAD /");
    assert_eq!(head.status().as_u16(), 200);

    // Everything else needs it.
    for path in ["/api/tags", "/api/ps", "/metrics", "/v1/models"] {
        let (status, _) = get(path, None);
        assert_eq!(status, 401, "{path} without a key");
        let (status, _) = get(path, Some("wrong"));
        assert_eq!(status, 401, "{path} with a wrong key");
        let (status, body) = get(path, Some(KEY));
        assert_eq!(status, 200, "{path} with the key: {body}");
    }
    // Ollama's error shape on Ollama's routes, OpenAI's under /v1.
    let (_, body) = get("/api/tags", None);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("API key")),
        "{body}"
    );
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"model": "x", "messages": []}))
        .send()
        .expect("request");
    assert_eq!(
        r.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let (status, body) = status_and_json(r);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let (status, _) = s
        .post("/api/generate", &json!({"model": "x"}))
        .expect("request");
    assert_eq!(status, 401);

    // The `wick` CLI sends the key from the same variable.
    let wick = |key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wick"));
        cmd.arg("list").env("OLLAMA_HOST", &s.base);
        match key {
            Some(k) => cmd.env("WICK_API_KEY", k),
            None => cmd.env_remove("WICK_API_KEY"),
        };
        cmd.output().expect("run wick list")
    };
    let out = wick(Some(KEY));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("NAME"));
    let out = wick(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("API key"));
}

#[test]
fn oversized_json_is_413_while_a_larger_blob_upload_streams_to_disk() {
    let limit = 64 * 1024;
    let s = Server::start_with_env(&[("WICK_MAX_BODY_BYTES", &limit.to_string())]);
    let big_prompt = "word ".repeat(limit / 4);

    // Declared length over the limit: refused before the body is read.
    let (status, body) = s
        .post(
            "/api/generate",
            &json!({"model": "x", "prompt": big_prompt}),
        )
        .expect("request");
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("too large")),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/v1/chat/completions",
            &json!({"model": "x", "messages": [{"role": "user", "content": big_prompt}]}),
        )
        .expect("request");
    assert_eq!(status, 413, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Chunked, with no length: cut while read.
    let payload = serde_json::to_vec(&json!({"model": "x", "prompt": big_prompt})).unwrap();
    let r = s
        .client
        .post(s.url("/api/chat"))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(payload)))
        .send()
        .expect("request");
    let (status, body) = status_and_json(r);
    assert_eq!(status, 413, "{body}");

    // A small body still goes through to the handler (404: no such model).
    let (status, _) = s
        .post("/api/generate", &json!({"model": "x", "prompt": "hi"}))
        .expect("request");
    assert_eq!(status, 404);

    // A blob sixteen times the limit is stored.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let data: Vec<u8> = (0..16 * limit).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let digest = common::upload_blob(&s, &path);
    let r = s
        .client
        .head(s.url(&format!("/api/blobs/{digest}")))
        .send()
        .expect("HEAD blob");
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn unknown_routes_and_methods_answer_json() {
    let s = Server::start();
    let (status, body) = s.get("/api/nothing-here");
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error": "404 page not found"}));
    let (status, body) = s.get("/v1/nothing-here");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "404 page not found");
    let (status, body) = s.get("/api/generate");
    assert_eq!(status, 405);
    assert_eq!(body, json!({"error": "405 method not allowed"}));
}

#[test]
fn a_client_that_sends_headers_slowly_is_cut_off() {
    let s = Server::start_with_env(&[("WICK_HEADER_TIMEOUT", "1s")]);
    let addr = s.base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.write_all(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n")
        .expect("write");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408) instead of waiting.
    let _ = conn.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");
    assert!(
        buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // The same timeout closes idle keep-alive connections, so the test client's pooled
    // one (idle since start-up) may be gone: the server still answers a new connection.
    let fresh = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let r = fresh.get(s.url("/api/version")).send().expect("version");
    assert_eq!(r.status().as_u16(), 200, "server stopped answering");
}

#[test]
fn the_request_time_cap_ends_streams_with_an_error_and_others_with_504() {
    let s = Server::with_smollm2_env(&[("WICK_REQUEST_TIMEOUT", "2s")]);
    // Warm up: the load is inside the cap only once the model is resident.
    let (status, body) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Hi", "stream": false, "options": greedy(1)}),
        )
        .expect("warm up");
    assert_eq!(status, 200, "{body}");
    let long = json!({"temperature": 0.8, "seed": 3, "num_predict": 100000, "num_ctx": 8192});

    let started = Instant::now();
    let lines = s.stream(
        "/api/generate",
        &json!({"model": SMOLLM2, "prompt": "Write a very long story.", "options": long}),
    );
    let last = lines.last().expect("lines");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("WICK_REQUEST_TIMEOUT")),
        "{last}"
    );
    assert!(lines.len() > 1, "some tokens came before the cap");
    assert!(started.elapsed() < Duration::from_secs(20));

    let (status, body) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Write a very long story.", "stream": false, "options": long}),
        )
        .expect("request");
    assert_eq!(status, 504, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("timed out")));

    // Both sequences were cancelled: a short request is served at once.
    let (status, body) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Hi", "stream": false, "options": greedy(2)}),
        )
        .expect("request");
    assert_eq!(status, 200, "{body}");
}

/// One sample's value: `name{labels} value` with the labels given in order.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[test]
fn metrics_move_as_requests_are_served_and_ps_reports_local_expiry() {
    // A fixed zone east of UTC, so the offset is known: POSIX "XYZ-3" is UTC+3.
    let s = Server::with_smollm2_env(&[("TZ", "XYZ-3")]);
    let scrape = || {
        let r = s.client.get(s.url("/metrics")).send().expect("metrics");
        assert_eq!(r.status().as_u16(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        r.text().unwrap()
    };
    // Prometheus asks for OpenMetrics, and gets it.
    let r = s
        .client
        .get(s.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .expect("metrics");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(r.text().unwrap().ends_with("# EOF\n"));
    let before = scrape();
    let generate_ok =
        r#"wick_http_requests_total{method="POST",route="/api/generate",status="200"}"#;
    let model = format!("{{model=\"{SMOLLM2}\"}}");
    assert_eq!(sample(&before, generate_ok), None);
    assert_eq!(sample(&before, "wick_loaded_models"), Some(0.0));

    let (status, body) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Count: 1, 2,", "stream": false, "options": greedy(5)}),
        )
        .expect("generate");
    assert_eq!(status, 200, "{body}");
    let lines = s.stream(
        "/api/generate",
        &json!({"model": SMOLLM2, "prompt": "Count: 1, 2,", "options": greedy(5)}),
    );
    let generated: u64 = [&body, lines.last().unwrap()]
        .iter()
        .map(|b| b["eval_count"].as_u64().unwrap())
        .sum();
    let prompt: u64 = [&body, lines.last().unwrap()]
        .iter()
        .map(|b| b["prompt_eval_count"].as_u64().unwrap())
        .sum();

    let after = scrape();
    assert_eq!(sample(&after, generate_ok), Some(2.0), "{after}");
    assert_eq!(
        sample(&after, &format!("wick_generated_tokens_total{model}")),
        Some(generated as f64)
    );
    assert_eq!(
        sample(&after, &format!("wick_prompt_tokens_total{model}")),
        Some(prompt as f64)
    );
    for counted in [
        "wick_time_to_first_token_seconds_count",
        "wick_decode_tokens_per_second_count",
    ] {
        assert_eq!(
            sample(&after, &format!("{counted}{model}")),
            Some(2.0),
            "{counted}"
        );
    }
    assert!(
        sample(
            &after,
            &format!("wick_inter_token_latency_seconds_count{model}")
        ) > Some(0.0)
    );
    assert_eq!(
        sample(
            &after,
            &format!("wick_model_load_duration_seconds_count{model}")
        ),
        Some(1.0)
    );
    assert_eq!(sample(&after, "wick_loaded_models"), Some(1.0));
    assert_eq!(
        sample(&after, &format!("wick_running_sequences{model}")),
        Some(0.0)
    );
    assert_eq!(sample(&after, "wick_queue_depth"), Some(0.0));
    assert!(sample(&after, &format!("wick_kv_cache_used_bytes{model}")) > Some(0.0));
    assert!(sample(&after, "wick_kv_cache_budget_bytes") > Some(0.0));
    // Raw paths never become labels: a blob route is counted by its template.
    let _ = s
        .client
        .head(s.url("/api/blobs/sha256:0000"))
        .send()
        .expect("HEAD");
    let again = scrape();
    assert!(again.contains(r#"route="/api/blobs/{digest}""#), "{again}");
    assert!(!again.contains("sha256:0000"));

    // /api/ps: local time with its offset and nanoseconds, as Go prints time.Time.
    let (status, ps) = s.get("/api/ps");
    assert_eq!(status, 200);
    let expires = ps["models"][0]["expires_at"].as_str().unwrap().to_string();
    assert!(expires.ends_with("+03:00"), "{expires}");
    let parsed = chrono::DateTime::parse_from_rfc3339(&expires).expect("RFC 3339");
    let left = parsed.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::Duration::minutes(4) && left <= chrono::Duration::minutes(5),
        "{expires}"
    );
    assert_eq!(ps["models"][0]["size_vram"], 0);

    // The official Python parser reads the exposition and sees counters move.
    let Some(python) = std::env::var_os("WICK_TEST_PYTHON") else {
        eprintln!("SKIPPED the prometheus_client check: WICK_TEST_PYTHON is not set");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/metrics_check.py");
    let out = Command::new(python)
        .arg(script)
        .env("OLLAMA_HOST", &s.base)
        .env("WICK_TEST_MODEL", SMOLLM2)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "metrics checks failed");
    assert!(stdout.contains("passed, 0 failed"));
}
