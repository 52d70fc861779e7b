//! End to end on the real SmolLM2 through `wick serve`: greedy output equals llama.cpp's,
//! streamed equals non-streamed, same seed gives the same text, chat works.

mod common;

use common::{greedy, joined_text, smollm2_gguf, Server, SMOLLM2};
use serde_json::{json, Value};
use wick_engine::gguf::GgufFile;
use wick_engine::GgufTokenizer;

fn llamacpp_cases() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/fixtures/llamacpp_greedy.json"
    );
    let fix: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    fix["models"]
        .as_object()
        .expect("models")
        .values()
        .find(|m| m["name"] == SMOLLM2)
        .and_then(|m| m["cases"].as_array().cloned())
        .expect("smollm2 cases")
}

#[test]
fn greedy_generate_equals_llamacpp_text() {
    let s = Server::with_smollm2();
    let tokenizer =
        GgufTokenizer::from_gguf(&GgufFile::open(&smollm2_gguf()).expect("gguf")).expect("tok");
    let mut matched = 0;
    for case in llamacpp_cases() {
        let n: usize = 16;
        // llama.cpp recorded with ignore_eos; where it wanted to stop earlier, its real
        // output ends there, and so must ours (done_reason "stop").
        let eog = case["first_eog_step"]
            .as_u64()
            .map(|k| k as usize)
            .filter(|&k| k < n);
        let ids: Vec<u32> = case["generated_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .take(eog.unwrap_or(n))
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        let expected = tokenizer.decode(&ids);
        let body = json!({
            "model": SMOLLM2, "prompt": case["prompt"], "raw": true, "stream": false,
            "options": greedy(n as i64),
        });
        let (status, r) = s.post("/api/generate", &body).expect("generate");
        assert_eq!(status, 200, "{r}");
        assert!(r.get("context").is_none(), "raw responses carry no context");
        let want_reason = if eog.is_some() { "stop" } else { "length" };
        if r["response"].as_str() == Some(expected.as_str()) && r["done_reason"] == want_reason {
            matched += 1;
            if eog.is_none() {
                assert_eq!(r["eval_count"], n);
            }
        } else {
            eprintln!(
                "differs from llama.cpp: {:?}\n wick:  {:?} ({})\n llama: {expected:?}",
                case["prompt"], r["response"], r["done_reason"]
            );
        }
    }
    assert!(
        matched >= 3,
        "only {matched} prompts equal llama.cpp's output (16 tokens, or up to its end of turn)"
    );
}

#[test]
fn streamed_equals_non_streamed_and_final_chunk_has_metrics() {
    let s = Server::with_smollm2();
    for (path, extra) in [
        (
            "/api/generate",
            json!({"prompt": "Write a haiku about rust."}),
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "Name three colors."}]}),
        ),
    ] {
        let mut body = json!({"model": SMOLLM2, "options": greedy(24)});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let lines = s.stream(path, &body);
        let last = lines.last().expect("at least one line");
        assert_eq!(last["done"], true);
        for l in &lines[..lines.len() - 1] {
            assert_eq!(l["done"], false);
            assert!(
                l.get("eval_count").is_none(),
                "metrics only on the last chunk"
            );
        }
        for key in [
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration",
        ] {
            assert!(
                last[key].is_u64(),
                "{path}: {key} missing or not an integer: {last}"
            );
        }
        assert!(last["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        let streamed = joined_text(&lines);

        body["stream"] = json!(false);
        let (status, whole) = s.post(path, &body).expect("request");
        assert_eq!(status, 200);
        let text = whole["response"]
            .as_str()
            .or_else(|| whole.pointer("/message/content").and_then(Value::as_str))
            .expect("text");
        assert_eq!(streamed, text, "{path}: streamed != non-streamed");
        assert!(!text.is_empty());
        if path == "/api/generate" {
            assert!(whole["context"].as_array().is_some_and(|c| c.len() > 5));
        } else {
            assert_eq!(whole["message"]["role"], "assistant");
        }
    }
}

#[test]
fn same_seed_same_text_and_stop_strings() {
    let s = Server::with_smollm2();
    let body = |seed: i64| {
        json!({"model": SMOLLM2, "prompt": "Tell me a story about a cat.", "stream": false,
               "options": {"temperature": 0.9, "seed": seed, "num_predict": 20}})
    };
    let a = s.post("/api/generate", &body(42)).expect("a").1;
    let b = s.post("/api/generate", &body(42)).expect("b").1;
    assert_eq!(a["response"], b["response"]);
    let texts: Vec<Value> = (1..4)
        .map(|seed| s.post("/api/generate", &body(seed)).expect("c").1["response"].clone())
        .collect();
    assert!(
        texts.iter().any(|t| *t != a["response"]),
        "different seeds should not all give the same sampled text"
    );

    // A stop string ends generation and is not included.
    let full = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Count: 1, 2, 3,", "raw": true,
                    "stream": false, "options": greedy(20)}),
        )
        .expect("full")
        .1;
    let text = full["response"].as_str().expect("text").to_string();
    let stop_at = text.find('5').expect("the count reaches 5");
    let stopped = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "Count: 1, 2, 3,", "raw": true,
                    "stream": false, "options": {"temperature": 0, "num_predict": 20, "stop": ["5"]}}),
        )
        .expect("stopped")
        .1;
    assert_eq!(stopped["response"].as_str(), Some(&text[..stop_at]));
    assert_eq!(stopped["done_reason"], "stop");
}

#[test]
fn chat_template_and_system_prompt_are_applied() {
    let s = Server::with_smollm2();
    let (status, r) = s
        .post(
            "/api/chat",
            &json!({"model": SMOLLM2, "stream": false, "options": greedy(8),
                    "messages": [{"role": "system", "content": "You are a pirate."},
                                 {"role": "user", "content": "Hello"}]}),
        )
        .expect("chat");
    assert_eq!(status, 200, "{r}");
    // system + user rendered with ChatML: well over 10 prompt tokens.
    assert!(
        r["prompt_eval_count"].as_u64().is_some_and(|n| n > 10),
        "{r}"
    );
    assert!(!r["message"]["content"]
        .as_str()
        .unwrap_or("")
        .contains("<|im_end|>"));
}

#[test]
fn go_templates_are_rendered_as_ollama_renders_them() {
    let s = Server::with_smollm2();
    // A model as an Ollama store holds it: a Go TEMPLATE layer (ChatML) over the GGUF.
    let chatml = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n\
                  {{ end }}<|im_start|>assistant\n";
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": "smol-go", "from": SMOLLM2, "stream": false, "template": chatml}),
        )
        .expect("create");
    assert_eq!(status, 200, "{r}");
    let messages = json!([{"role": "system", "content": "You are a pirate."},
                          {"role": "user", "content": "Hello"}]);
    let chat = |model: &str, extra: serde_json::Value| {
        let mut body = json!({"model": model, "stream": false, "options": greedy(8),
                              "messages": messages});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        s.post("/api/chat", &body).expect("chat")
    };
    // The Go layer renders what the GGUF's Jinja ChatML renders, so the answers agree.
    let (_, go) = chat("smol-go", json!({"_debug_render_only": true}));
    let (_, jinja) = chat(SMOLLM2, json!({"_debug_render_only": true}));
    assert_eq!(
        go["_debug_info"]["rendered_template"],
        jinja["_debug_info"]["rendered_template"]
    );
    let (status, derived) = chat("smol-go", json!({}));
    assert_eq!(status, 200, "{derived}");
    let (_, original) = chat(SMOLLM2, json!({}));
    assert_eq!(derived["message"], original["message"]);
    assert_eq!(derived["prompt_eval_count"], original["prompt_eval_count"]);

    // A legacy template in the request: applied to the prompt, cut after .Response.
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "x", "system": "sys", "_debug_render_only": true,
                    "template": "{{ if .System }}<{{ .System }}>{{ end }}[{{ .Prompt }}]{{ .Response }}</s>"}),
        )
        .expect("generate");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["_debug_info"]["rendered_template"], "<sys>[x]");
    // A template that does not parse is a 400 naming the field.
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "x", "template": "{{ if .Prompt }}"}),
        )
        .expect("generate");
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("\"template\"")),
        "{r}"
    );
    // A request's template is Go, as in Ollama: Jinja is code only an installed model
    // brings, so `{{ messages }}` is an undefined Go function, not a Jinja render.
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "x",
                    "template": "{% for m in messages %}{{ m.content }}{% endfor %}"}),
        )
        .expect("generate");
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("\"template\"")),
        "{r}"
    );
}
