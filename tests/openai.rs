//! The OpenAI-compatible routes on the real models: `n` choices from one prefill,
//! usage with cached prompt tokens, completions with lists of prompts, `tool_choice`
//! enforced, the Responses API, and 400s naming unsupported fields; then the
//! official `openai` Python package (`tests/python/openai_check.py`).

mod common;

use std::io::Read;
use std::process::Command;

use common::{model_cache, Server, SMOLLM2};
use serde_json::{json, Value};

const QWEN: &str = "qwen2.5-coder:0.5b";

fn chat(server: &Server, body: Value) -> Value {
    let (status, v) = server.post("/v1/chat/completions", &body).expect("chat");
    assert_eq!(status, 200, "{v}");
    v
}

fn contents(v: &Value) -> Vec<String> {
    v["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| {
            c["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Server-sent events of a streamed request: each `data:` payload (without `[DONE]`).
fn sse(server: &Server, path: &str, body: &Value) -> Vec<Value> {
    let mut r = server
        .client
        .post(server.url(path))
        .json(body)
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let mut text = String::new();
    r.read_to_string(&mut text).expect("body");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("JSON event"))
        .collect()
}

fn ask(extra: Value) -> Value {
    let mut body = json!({
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": "Name three colors."}],
        "max_tokens": 12,
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

#[test]
fn n_choices_share_a_prefill_and_match_solo_runs() {
    let server = Server::with_smollm2();

    // Greedy: n equal choices, indexed, usage counts the prompt once.
    let v = chat(&server, ask(json!({"n": 3, "temperature": 0})));
    let texts = contents(&v);
    assert_eq!(texts.len(), 3);
    assert!(!texts[0].is_empty());
    assert!(texts.iter().all(|t| *t == texts[0]), "{texts:?}");
    for (i, c) in v["choices"].as_array().unwrap().iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    let solo = chat(&server, ask(json!({"temperature": 0})));
    assert_eq!(contents(&solo)[0], texts[0]);
    assert_eq!(v["usage"]["prompt_tokens"], solo["usage"]["prompt_tokens"]);
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        completion,
        3 * solo["usage"]["completion_tokens"].as_u64().unwrap()
    );

    // Seeded sampling: reproducible, and choice i is the solo run with seed + i.
    let seeded = ask(json!({"n": 3, "temperature": 1.0, "seed": 42}));
    let a = contents(&chat(&server, seeded.clone()));
    let b = contents(&chat(&server, seeded));
    assert_eq!(a, b);
    for (i, text) in a.iter().enumerate() {
        let solo = chat(&server, ask(json!({"temperature": 1.0, "seed": 42 + i})));
        assert_eq!(&contents(&solo)[0], text, "choice {i}");
    }

    // Streamed: every chunk names its choice; the texts equal the non-streamed ones.
    let events = sse(
        &server,
        "/v1/chat/completions",
        &ask(
            json!({"n": 3, "temperature": 1.0, "seed": 42, "stream": true,
                    "stream_options": {"include_usage": true}}),
        ),
    );
    let mut streamed = vec![String::new(); 3];
    let mut finished = 0;
    for e in &events {
        if let Some(c) = e["choices"].as_array().and_then(|c| c.first()) {
            let i = c["index"].as_u64().unwrap() as usize;
            streamed[i].push_str(c["delta"]["content"].as_str().unwrap_or_default());
            finished += usize::from(!c["finish_reason"].is_null());
        }
    }
    assert_eq!(streamed, a);
    assert_eq!(finished, 3);
    assert!(
        events.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Log probabilities come with every choice.
    let v = chat(
        &server,
        ask(json!({"n": 2, "temperature": 0, "logprobs": true, "top_logprobs": 2})),
    );
    for c in v["choices"].as_array().unwrap() {
        let lp = c["logprobs"]["content"].as_array().expect("logprobs");
        assert!(!lp.is_empty());
        assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
    }
    server.assert_alive();
}

#[test]
fn a_cached_prompt_still_counts_whole() {
    let server = Server::with_smollm2();
    let body = json!({
        "model": SMOLLM2,
        "prompt": "Write one sentence about the sea and the sky and the wind.",
        "stream": false,
        "options": {"temperature": 0, "num_predict": 4},
    });
    let (_, first) = server.post("/api/generate", &body).expect("generate");
    let (_, again) = server.post("/api/generate", &body).expect("generate");
    let n = first["prompt_eval_count"].as_u64().unwrap();
    assert!(n > 10, "{first}");
    assert_eq!(again["prompt_eval_count"].as_u64().unwrap(), n, "{again}");
    assert!(again["prompt_eval_duration"].as_u64().unwrap() > 0);

    let chat_body = json!({
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": "Say hello to the whole wide world, please."}],
        "stream": false,
        "options": {"temperature": 0, "num_predict": 4},
    });
    let (_, c1) = server.post("/api/chat", &chat_body).expect("chat");
    let (_, c2) = server.post("/api/chat", &chat_body).expect("chat");
    assert_eq!(c1["prompt_eval_count"], c2["prompt_eval_count"]);

    let oa = ask(json!({"temperature": 0, "max_tokens": 3}));
    let u1 = chat(&server, oa.clone())["usage"].clone();
    let u2 = chat(&server, oa)["usage"].clone();
    assert_eq!(u1["prompt_tokens"], u2["prompt_tokens"]);
    let cached = u2["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let whole = u2["prompt_tokens"].as_u64().unwrap();
    assert!(cached > 0 && cached < whole, "{u2}");
}

#[test]
fn completions_take_lists_of_prompts_echo_and_n() {
    let server = Server::with_smollm2();
    let (status, v) = server
        .post(
            "/v1/completions",
            &json!({"model": SMOLLM2, "prompt": ["The sky is", "Water is"], "n": 2,
                    "max_tokens": 5, "temperature": 0, "echo": true}),
        )
        .expect("completions");
    assert_eq!(status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let prompt = if i < 2 { "The sky is" } else { "Water is" };
        assert!(c["text"].as_str().unwrap().starts_with(prompt), "{c}");
    }
    assert_eq!(choices[0]["text"], choices[1]["text"]);
    assert_ne!(choices[0]["text"], choices[2]["text"]);

    // The legacy logprobs shape, and a 400 for what is not implemented.
    let (_, v) = server
        .post(
            "/v1/completions",
            &json!({"model": SMOLLM2, "prompt": "Hi", "max_tokens": 3, "logprobs": 2}),
        )
        .expect("completions");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
    let (status, v) = server
        .post(
            "/v1/completions",
            &json!({"model": SMOLLM2, "prompt": "Hi", "echo": true, "logprobs": 1}),
        )
        .expect("completions");
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("echo")),
        "{v}"
    );
}

#[test]
fn unsupported_fields_are_400s_naming_them() {
    let server = Server::with_smollm2();
    for (field, value) in [
        ("logit_bias", json!({"1": 5})),
        ("functions", json!([])),
        ("frobnicate", json!(true)),
    ] {
        let (status, v) = server
            .post("/v1/chat/completions", &ask(json!({ field: value })))
            .expect("chat");
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], field);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains(field));
    }
    // Accepted and harmless.
    chat(
        &server,
        ask(json!({"user": "u1", "metadata": {"k": "v"}, "n": 1})),
    );
    let (status, v) = server
        .post("/v1/chat/completions", &ask(json!({"n": 99})))
        .expect("chat");
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("n")));
    let (status, v) = server
        .post(
            "/v1/responses",
            &json!({"model": SMOLLM2, "input": "hi", "background": true}),
        )
        .expect("responses");
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("background"))
    );
    let (status, _) = server
        .post(
            "/v1/responses",
            &json!({"model": SMOLLM2, "input": "hi", "previous_response_id": "resp-nope"}),
        )
        .expect("responses");
    assert_eq!(status, 404);
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "Time in a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    ])
}

#[test]
fn tool_choice_is_enforced_and_responses_continue_conversations() {
    let server = Server::with_smollm2();
    server.import_gguf(
        QWEN,
        &model_cache().join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    );
    let ask_tools = |choice: Value, extra: Value| {
        let mut body = json!({
            "model": QWEN,
            "messages": [{"role": "user", "content": "Tell me a joke about cats."}],
            "tools": weather_tools(),
            "tool_choice": choice,
            "temperature": 0,
            "max_tokens": 80,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    // A question that needs no tool still gets a call when one is required.
    let v = chat(&server, ask_tools(json!("required"), json!({})));
    let calls = v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("calls");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap())
        .expect("arguments are JSON");
    assert!(args["city"].is_string(), "{args}");
    let named = json!({"type": "function", "function": {"name": "get_time"}});
    for stream in [false, true] {
        let body = ask_tools(named.clone(), json!({"stream": stream}));
        let name = if stream {
            sse(&server, "/v1/chat/completions", &body)
                .iter()
                .find_map(|e| {
                    e["choices"][0]["delta"]["tool_calls"][0]["function"]["name"]
                        .as_str()
                        .map(str::to_string)
                })
                .expect("a streamed call")
        } else {
            let v = chat(&server, body);
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(name, "get_time");
    }
    // `none`: no tool call, whatever the question.
    let mut body = ask_tools(json!("none"), json!({}));
    body["messages"][0]["content"] = json!("What is the weather in Paris? Use the tool.");
    let v = chat(&server, body);
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    let (status, v) = server
        .post(
            "/v1/chat/completions",
            &ask_tools(
                json!({"type": "function", "function": {"name": "nope"}}),
                json!({}),
            ),
        )
        .expect("chat");
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("tool_choice")),
        "{v}"
    );

    // Responses: a forced call, its output sent back through previous_response_id.
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let (status, first) = server
        .post(
            "/v1/responses",
            &json!({"model": QWEN, "instructions": "You are terse.", "input": "Weather in Paris?",
                    "tools": tools, "tool_choice": "required", "temperature": 0}),
        )
        .expect("responses");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    let call = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "function_call")
        .expect("a function call")
        .clone();
    assert_eq!(call["name"], "get_weather");
    let (status, second) = server
        .post(
            "/v1/responses",
            &json!({"model": QWEN, "previous_response_id": first["id"], "tools": tools,
                    "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 24 C"}],
                    "tool_choice": "none", "temperature": 0, "max_output_tokens": 40}),
        )
        .expect("responses");
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], first["id"]);
    let text = &second["output"][0]["content"][0]["text"];
    assert!(text.as_str().is_some_and(|t| !t.is_empty()), "{second}");
    // The previous conversation is part of the prompt: longer than the output alone.
    let (_, alone) = server
        .post(
            "/v1/responses",
            &json!({"model": QWEN, "tools": tools, "tool_choice": "none", "max_output_tokens": 1,
                    "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 24 C"}]}),
        )
        .expect("responses");
    let tokens = |v: &Value| v["usage"]["input_tokens"].as_u64().unwrap();
    assert!(tokens(&second) > tokens(&alone), "{second} {alone}");
    let (status, got) = server.get(&format!("/v1/responses/{}", second["id"].as_str().unwrap()));
    assert_eq!((status, &got["id"]), (200, &second["id"]));

    // Streamed: typed events in order, the final response equal to the deltas.
    let events = sse(
        &server,
        "/v1/responses",
        &json!({"model": SMOLLM2, "input": "Say hi.", "stream": true, "temperature": 0, "max_output_tokens": 10}),
    );
    assert_eq!(events[0]["type"], "response.created");
    let last = events.last().unwrap();
    assert!(
        matches!(
            last["type"].as_str(),
            Some("response.completed" | "response.incomplete")
        ),
        "{last}"
    );
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        deltas.as_str()
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }
}

#[test]
fn official_openai_python_client() {
    let Some(python) = std::env::var_os("WICK_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: WICK_TEST_PYTHON is not set; run scripts/test.sh, which installs the \
             openai package and sets it"
        );
        return;
    };
    let server = Server::with_smollm2();
    server.import_gguf(
        QWEN,
        &model_cache().join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_check.py");
    let out = Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.base))
        .env("OPENAI_API_KEY", "wick")
        .env("WICK_TEST_MODEL", SMOLLM2)
        .env("WICK_TEST_TOOL_MODEL", QWEN)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai client checks failed");
    assert!(stdout.contains("passed, 0 failed"));
}
