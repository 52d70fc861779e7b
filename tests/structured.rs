//! Structured outputs, tool calls, thinking and log probabilities on the real models,
//! through the official `ollama` and `openai` Python packages
//! (`tests/python/structured_check.py`). `scripts/test.sh` installs the packages into
//! `.venv-test` and sets `WICK_TEST_PYTHON`.

mod common;

use std::process::Command;

use common::{model_cache, Server, SMOLLM2};
use serde_json::json;

const QWEN: &str = "qwen2.5-coder:0.5b";
const THINKER: &str = "qwen-thinking:test";

#[test]
fn structured_outputs_tools_thinking_and_logprobs_through_official_clients() {
    let Some(python) = std::env::var_os("WICK_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: WICK_TEST_PYTHON is not set; run scripts/test.sh, which installs the \
             ollama and openai packages and sets it"
        );
        return;
    };
    let server = Server::with_smollm2();
    server.import_gguf(
        QWEN,
        &model_cache().join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    );
    let template = include_str!("templates/qwen-thinking.gotmpl");
    let (status, body) = server
        .post(
            "/api/create",
            &json!({"model": THINKER, "from": QWEN, "template": template, "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 200, "create failed: {body}");
    let (_, show) = server
        .post("/api/show", &json!({"model": THINKER}))
        .expect("show");
    assert!(
        show["capabilities"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("thinking"))),
        "{show}"
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/structured_check.py"
    );
    let out = Command::new(python)
        .arg(script)
        .env("OLLAMA_HOST", &server.base)
        .env("WICK_TEST_MODELS", format!("{QWEN},{SMOLLM2}"))
        .env("WICK_TEST_THINK_MODEL", THINKER)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "structured output checks failed");
    assert!(stdout.contains("passed, 0 failed"));
}
