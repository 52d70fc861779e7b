//! `/api/create` with `quantize`: a float model (SmolLM2 dequantized to F16) becomes a
//! Q8_0 or Q4_K_M model that answers; bad types and already-quantized models are 400s.
//! (Token agreement with llama.cpp's own quantization: crates/engine/tests/quantize.rs.)

mod common;

use common::{greedy, smollm2_gguf, upload_blob, Server, SMOLLM2};
use serde_json::json;

#[test]
fn create_quantizes_a_float_model() {
    let s = Server::with_smollm2();
    let dir = tempfile::tempdir().expect("tmp");
    let f16 = dir.path().join("smollm2-f16.gguf");
    wick_engine::quantize::dequantize_to_f16(&smollm2_gguf(), &f16).expect("dequantize");
    let digest = upload_blob(&s, &f16);

    let lines = s.stream(
        "/api/create",
        &json!({"model": "smol-q8", "files": {"model.gguf": digest}, "quantize": "q8_0"}),
    );
    // Ollama's progress: the quantizing status repeated with the source layer's size as
    // `total` and a growing `completed`, then `verifying conversion`, the layers, the
    // manifest, success.
    let progress: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["status"] == "quantizing F16 model to Q8_0" && l.get("completed").is_some())
        .collect();
    assert!(progress.len() > 100, "{lines:?}");
    let total = std::fs::metadata(&f16).expect("size").len();
    let completed: Vec<u64> = progress
        .iter()
        .filter_map(|l| l["completed"].as_u64())
        .collect();
    assert!(progress
        .iter()
        .all(|l| l["total"] == total && l["digest"] == "0000000000000000000"));
    assert!(completed.windows(2).all(|w| w[0] <= w[1]), "{completed:?}");
    assert!(
        completed.last().is_some_and(|&c| c + 1024 >= total),
        "{completed:?}"
    );
    let statuses: Vec<&str> = lines
        .iter()
        .filter(|l| l.get("completed").is_none())
        .filter_map(|l| l["status"].as_str())
        .collect();
    let at = |s: &str| statuses.iter().position(|x| *x == s);
    assert!(
        at("parsing GGUF") < at("quantizing F16 model to Q8_0"),
        "{statuses:?}"
    );
    assert!(
        at("quantizing F16 model to Q8_0") < at("verifying conversion"),
        "{statuses:?}"
    );
    assert!(
        at("verifying conversion") < at("writing manifest"),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&"success"));
    let (status, show) = s
        .post("/api/show", &json!({"model": "smol-q8"}))
        .expect("show");
    assert_eq!(status, 200, "{show}");
    assert_eq!(
        show["details"]["quantization_level"], "Q8_0",
        "{}",
        show["details"]
    );
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": "smol-q8", "prompt": "Hello", "stream": false, "options": greedy(8)}),
        )
        .expect("generate");
    assert_eq!(status, 200, "{r}");
    assert!(r["eval_count"].as_u64() > Some(0));

    // From an existing float model, as `ollama create -q` of a FROM line does.
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": "smol-q4km", "from": "smol-q8", "quantize": "q4_K_M", "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 400, "only float models quantize: {r}");
    assert!(r["error"].as_str().unwrap().contains("F16 and F32"), "{r}");
    let (status, r) = s
        .post(
            "/api/create",
            &json!({"model": "smol-q4km", "files": {"model.gguf": digest}, "quantize": "Q4_K_M", "stream": false}),
        )
        .expect("create");
    assert_eq!(status, 200, "{r}");
    let (_, show) = s
        .post("/api/show", &json!({"model": "smol-q4km"}))
        .expect("show");
    assert_eq!(show["details"]["quantization_level"], "Q4_K_M");

    for bad in ["q3_K_L", "fp8"] {
        let (status, r) = s
            .post(
                "/api/create",
                &json!({"model": "x", "from": SMOLLM2, "quantize": bad, "stream": false}),
            )
            .expect("create");
        assert_eq!(status, 400, "{r}");
        assert!(
            r["error"].as_str().unwrap().starts_with("\"quantize\""),
            "{r}"
        );
    }
}
