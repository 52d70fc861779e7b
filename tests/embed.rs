//! Embeddings through the real server: all-MiniLM-L6-v2 imported from its safetensors
//! directory by `/api/create`, then `/api/embed`, the legacy `/api/embeddings` and
//! `/v1/embeddings` (and, with `WICK_TEST_PYTHON`, the official `ollama` and `openai`
//! packages, `tests/python/embed_check.py`).

mod common;

use std::process::Command;

use common::{model_cache, upload_blob, Server, SMOLLM2};
use serde_json::{json, Map, Value};

const MINILM: &str = "all-minilm:l6-v2";

fn with_minilm() -> Server {
    let s = Server::start();
    import_minilm(&s);
    s
}

fn import_minilm(s: &Server) {
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
        files.insert(rel.into(), json!(upload_blob(s, &dir.join(rel))));
    }
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": MINILM, "files": Value::Object(files), "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 200, "{r}");
}

fn vectors(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("a list of vectors")
        .iter()
        .map(|e| {
            e.as_array()
                .expect("a vector")
                .iter()
                .map(|x| x.as_f64().expect("a number"))
                .collect()
        })
        .collect()
}

fn embed(s: &Server, body: Value) -> (u16, Value) {
    let mut body = body;
    body["model"] = json!(MINILM);
    s.post("/api/embed", &body).expect("embed")
}

fn embed_ok(s: &Server, input: Value) -> Vec<Vec<f64>> {
    let (status, r) = embed(s, json!({ "input": input }));
    assert_eq!(status, 200, "{r}");
    vectors(&r["embeddings"])
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

const SENTENCES: &[&str] = &[
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!",
    "A cheetah is running behind its prey.",
    "Quantum chromodynamics describes the strong interaction.",
];

#[test]
fn api_embed_matches_the_reference_and_batches_exactly() {
    let s = with_minilm();
    let (status, r) = embed(&s, json!({ "input": SENTENCES }));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["model"], MINILM);
    assert!(r["total_duration"].as_u64().is_some_and(|d| d > 0), "{r}");
    assert!(r["load_duration"].as_u64().is_some(), "{r}");
    let count = r["prompt_eval_count"].as_u64().expect("prompt_eval_count");
    assert!((30..80).contains(&count), "prompt_eval_count {count}");
    let batch = vectors(&r["embeddings"]);
    assert_eq!(batch.len(), SENTENCES.len());
    for v in &batch {
        assert_eq!(v.len(), 384);
        assert!((norm(v) - 1.0).abs() < 1e-5);
    }
    // sentence-transformers' cosine for the first pair is 0.755.
    let related = dot(&batch[0], &batch[1]);
    assert!((related - 0.755).abs() < 0.01, "cosine {related}");
    for (a, b) in [(0, 2), (0, 4), (2, 4), (1, 4)] {
        let c = dot(&batch[a], &batch[b]);
        assert!(c.abs() < 0.2, "unrelated pair {a},{b}: cosine {c}");
    }
    // The same inputs one by one (a string each) give the same vectors.
    for (text, b) in SENTENCES.iter().zip(&batch) {
        let one = embed_ok(&s, json!(text));
        assert_eq!(one.len(), 1);
        assert!(max_diff(&one[0], b) < 1e-5, "{text}");
    }

    // Concurrent requests share the model and get the same answers.
    std::thread::scope(|scope| {
        let handles: Vec<_> = SENTENCES
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let s = &s;
                let want = &batch[i];
                scope.spawn(move || {
                    let got = embed_ok(s, json!([text, "padding input"]));
                    assert!(max_diff(&got[0], want) < 1e-5, "{text}");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("request thread");
        }
    });

    // The model shows in /api/ps, with its context.
    let (_, ps) = s.get("/api/ps");
    let m = &ps["models"][0];
    assert_eq!(m["name"], MINILM, "{ps}");
    assert_eq!(m["context_length"], 512, "{ps}");
}

#[test]
fn api_embed_fields_and_errors_follow_ollama() {
    let s = with_minilm();
    let full = embed_ok(&s, json!("A man is eating food."));

    // dimensions: the first n values, normalized again.
    let (status, r) = embed(
        &s,
        json!({"input": "A man is eating food.", "dimensions": 8}),
    );
    assert_eq!(status, 200, "{r}");
    let cut = vectors(&r["embeddings"]);
    assert_eq!(cut[0].len(), 8);
    assert!((norm(&cut[0]) - 1.0).abs() < 1e-5);
    let n = norm(&full[0][..8]);
    let want: Vec<f64> = full[0][..8].iter().map(|x| x / n).collect();
    assert!(max_diff(&cut[0], &want) < 1e-5);

    // Too long: cut to the context by default, a 400 with truncate false.
    let long = "word ".repeat(1000);
    let (status, r) = embed(&s, json!({ "input": long }));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["prompt_eval_count"], 512);
    let (status, r) = embed(&s, json!({"input": ["short", long], "truncate": false}));
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"], "the input length exceeds the context length");
    // num_ctx lowers the limit.
    let (status, r) = embed(
        &s,
        json!({"input": "one two three four five six", "truncate": false,
               "options": {"num_ctx": 4}}),
    );
    assert_eq!(status, 400, "{r}");
    let (status, r) = embed(&s, json!({"input": long, "options": {"num_ctx": 16}}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["prompt_eval_count"], 16);

    // Empty input: the model loads, no vectors and no durations.
    for input in [json!(""), Value::Null] {
        let (status, r) = embed(&s, json!({ "input": input }));
        assert_eq!(status, 200, "{r}");
        assert_eq!(r, json!({"model": MINILM, "embeddings": []}));
    }
    // A list with an empty string embeds it ([CLS] [SEP]).
    let (status, r) = embed(&s, json!({"input": ["", "x"]}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(vectors(&r["embeddings"]).len(), 2);

    // Bad fields are 400s naming them.
    let (status, r) = embed(&s, json!({"input": [1, 2]}));
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("invalid input type"))
    );
    let (status, r) = embed(&s, json!({"input": "x", "truncate": "no"}));
    assert_eq!(status, 400);
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("truncate")),
        "{r}"
    );
    let (status, r) = embed(&s, json!({"input": "x", "options": {"num_ctx": "big"}}));
    assert_eq!(status, 400);
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("num_ctx")),
        "{r}"
    );
    let (status, r) = embed(&s, json!({"input": "x", "keep_alive": "soon"}));
    assert_eq!(status, 400, "{r}");
    let (status, r) = s
        .post("/api/embed", &json!({"model": "nope:1", "input": "x"}))
        .expect("embed");
    assert_eq!(status, 404, "{r}");
    assert_eq!(r["error"], "model 'nope:1' not found");
    let (status, r) = s.post("/api/embed", &json!({"input": "x"})).expect("embed");
    assert_eq!(
        (status, r["error"].clone()),
        (404, json!("model '' not found"))
    );

    // keep_alive 0 unloads after the request.
    let (status, _) = embed(&s, json!({"input": "x", "keep_alive": 0}));
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, ps) = s.get("/api/ps");
        if ps["models"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still loaded: {ps}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The legacy route: one prompt, the model's own vector (bert models normalize their
    // output, so it is /api/embed's vector), as f64.
    let (status, r) = s
        .post(
            "/api/embeddings",
            &json!({"model": MINILM, "prompt": "A man is eating food."}),
        )
        .expect("embeddings");
    assert_eq!(status, 200, "{r}");
    let legacy = vectors(&json!([r["embedding"]]));
    assert!(max_diff(&legacy[0], &full[0]) < 1e-5);
    let (status, r) = s
        .post("/api/embeddings", &json!({"model": MINILM, "prompt": ""}))
        .expect("embeddings");
    assert_eq!((status, r), (200, json!({"embedding": []})));
    let (status, r) = s
        .post("/api/embeddings", &json!({"prompt": "x"}))
        .expect("embeddings");
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("model is required"))
    );

    // An embedding model cannot chat.
    let (status, r) = s
        .post(
            "/api/chat",
            &json!({"model": MINILM, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .expect("chat");
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"], format!("\"{MINILM}\" does not support chat"));
}

fn vocab_id(token: &str) -> u64 {
    let vocab = std::fs::read_to_string(model_cache().join("all-minilm-l6-v2/vocab.txt"))
        .expect("vocab.txt");
    vocab
        .lines()
        .position(|l| l == token)
        .unwrap_or_else(|| panic!("{token} not in vocab.txt")) as u64
}

#[test]
fn v1_embeddings_float_base64_tokens_and_errors() {
    let s = with_minilm();
    let texts = ["A man is eating food.", "hello world"];
    let native = embed_ok(&s, json!(texts));
    let post = |body: Value| s.post("/v1/embeddings", &body).expect("v1");

    let (status, r) = post(json!({"model": MINILM, "input": texts}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], MINILM);
    let data = r["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    let tokens = r["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(tokens > 0);
    assert_eq!(r["usage"]["total_tokens"], tokens);
    let floats: Vec<Vec<f64>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(
                (d["object"].clone(), d["index"].clone()),
                (json!("embedding"), json!(i))
            );
            vectors(&json!([d["embedding"]])).remove(0)
        })
        .collect();
    for (a, b) in floats.iter().zip(&native) {
        assert!(max_diff(a, b) < 1e-6);
    }

    // base64: little-endian f32 bytes of the same vectors.
    let (status, r) = post(json!({"model": MINILM, "input": texts, "encoding_format": "base64"}));
    assert_eq!(status, 200, "{r}");
    for (d, want) in r["data"].as_array().expect("data").iter().zip(&floats) {
        let bytes = decode_base64(d["embedding"].as_str().expect("a base64 string"));
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // The float answer's numbers are the same f32 values, printed shortest.
        let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
        assert_eq!(got, want);
    }

    // Token ids: "hello world" as [CLS] hello world [SEP] is the same input.
    let ids = json!([
        vocab_id("[CLS]"),
        vocab_id("hello"),
        vocab_id("world"),
        vocab_id("[SEP]")
    ]);
    for input in [ids.clone(), json!([ids])] {
        let (status, r) = post(json!({"model": MINILM, "input": input}));
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["usage"]["prompt_tokens"], 4);
        let v = vectors(&json!([r["data"][0]["embedding"]])).remove(0);
        assert!(max_diff(&v, &native[1]) < 1e-5);
    }

    // dimensions, and "" (embedded, unlike /api/embed).
    let (status, r) = post(json!({"model": MINILM, "input": "", "dimensions": 16}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["data"][0]["embedding"].as_array().map(Vec::len), Some(16));

    // Errors in OpenAI's shape.
    for (body, message) in [
        (json!({"model": MINILM, "input": []}), "invalid input"),
        (json!({"model": MINILM}), "invalid input"),
        (
            json!({"model": MINILM, "input": "x", "encoding_format": "int8"}),
            "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64'].",
        ),
        (json!({"model": MINILM, "input": [99999999]}), ""),
    ] {
        let (status, r) = post(body.clone());
        assert_eq!(status, 400, "{body}: {r}");
        assert_eq!(r["error"]["type"], "invalid_request_error", "{r}");
        if !message.is_empty() {
            assert_eq!(r["error"]["message"], message);
        }
    }
    let (status, r) = post(json!({"model": "nope:1", "input": "x"}));
    assert_eq!(status, 404, "{r}");
    assert_eq!(r["error"]["message"], "model 'nope:1' not found");
}

/// Standard base64 (with padding), for checking the server's encoding independently.
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pads = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .fold(0u32, |acc, &c| (acc << 6) | value(c))
            << (6 * pads);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pads]);
    }
    out
}

#[test]
fn a_full_queue_answers_503_and_the_server_stays_usable() {
    let s = Server::start_with_env(&[("OLLAMA_MAX_QUEUE", "1")]);
    import_minilm(&s);
    let inputs: Vec<String> = (0..64)
        .map(|i| format!("sentence number {i} about a rather long topic ").repeat(8))
        .collect();
    let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (s, inputs) = (&s, &inputs);
                scope.spawn(move || embed(s, json!({ "input": inputs })))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    });
    assert!(statuses.iter().any(|(st, _)| *st == 200), "{statuses:?}");
    let busy: Vec<&Value> = statuses
        .iter()
        .filter(|(st, _)| *st == 503)
        .map(|(_, r)| r)
        .collect();
    assert!(!busy.is_empty(), "no request was refused");
    assert!(statuses.iter().all(|(st, _)| *st == 200 || *st == 503));
    assert_eq!(
        busy[0]["error"],
        "server busy, please try again.  maximum pending requests exceeded"
    );
    // Nothing stays counted: the queue takes requests again.
    assert_eq!(embed_ok(&s, json!("after")).len(), 1);
}

#[test]
fn a_decoder_model_embeds_as_ollama_does() {
    let s = Server::with_smollm2();
    // Unit vectors of the decoder's width (SmolLM2: 576), one per input, the same
    // vector for an input whether it comes alone or beside others; long inputs are cut
    // to num_ctx like an encoder's.
    let (status, r) = s
        .post(
            "/api/embed",
            &json!({"model": SMOLLM2, "input": ["A man is eating food.", "hi"]}),
        )
        .expect("embed");
    assert_eq!(status, 200, "{r}");
    let both = vectors(&r["embeddings"]);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].len(), 576);
    assert!((norm(&both[0]) - 1.0).abs() < 1e-5);
    let (status, r) = s
        .post(
            "/api/embed",
            &json!({"model": SMOLLM2, "input": "A man is eating food."}),
        )
        .expect("embed");
    assert_eq!(status, 200, "{r}");
    assert!(max_diff(&vectors(&r["embeddings"])[0], &both[0]) < 1e-6);
    let long = "word ".repeat(1500);
    let (status, r) = s
        .post(
            "/api/embed",
            &json!({"model": SMOLLM2, "input": long, "options": {"num_ctx": 700}}),
        )
        .expect("embed");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["prompt_eval_count"], 700);
    // The legacy route returns the raw hidden state, as Ollama's runner gives it.
    let (status, r) = s
        .post(
            "/api/embeddings",
            &json!({"model": SMOLLM2, "prompt": "A man is eating food."}),
        )
        .expect("embeddings");
    assert_eq!(status, 200, "{r}");
    let raw: Vec<f64> = r["embedding"]
        .as_array()
        .expect("embedding")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    let n = norm(&raw);
    assert!(
        (n - 1.0).abs() > 1e-3,
        "the legacy vector is not normalized: {n}"
    );
    let unit: Vec<f64> = raw.iter().map(|x| x / n).collect();
    assert!(max_diff(&unit, &both[0]) < 1e-5);
    let (status, r) = s
        .post("/v1/embeddings", &json!({"model": SMOLLM2, "input": "hi"}))
        .expect("v1");
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["data"][0]["embedding"].as_array().map(Vec::len),
        Some(576)
    );
}

#[test]
fn official_python_clients_embed() {
    let Some(python) = std::env::var_os("WICK_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: WICK_TEST_PYTHON is not set; run scripts/test.sh, which installs the \
             ollama and openai packages and sets it"
        );
        return;
    };
    let s = with_minilm();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/embed_check.py");
    let out = Command::new(python)
        .arg(script)
        .env("OLLAMA_HOST", &s.base)
        .env("WICK_TEST_MODEL", MINILM)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "embedding client checks failed");
    assert!(stdout.contains("passed, 0 failed"));
}
