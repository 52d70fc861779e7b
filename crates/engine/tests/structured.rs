//! Structured outputs and log probabilities on the real SmolLM2: sampled answers parse
//! and validate against their schemas; constrained and unconstrained sequences batched
//! together generate what each generates alone; logprobs follow the text.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use wick_engine::{
    DoneReason, GenerationRequest, Model, OutputFormat, Plan, SamplingOptions, Sequence,
    TokenLogprob,
};

const SMOLLM2: &str = "smollm2-135m-instruct-q4_1.gguf";

fn model() -> Model {
    let cache = std::env::var_os("WICK_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models-cache"));
    let path = cache.join(SMOLLM2);
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models.sh",
        path.display()
    );
    Model::load(&path, &wick_engine::Device::Cpu).expect("load model")
}

fn chat(model: &Model, user: &str) -> Vec<u32> {
    let prompt = format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n");
    model.tokenizer.encode(&prompt, true).expect("encode")
}

fn request(prompt: Vec<u32>, temperature: f32, seed: u64) -> GenerationRequest {
    GenerationRequest {
        prompt,
        sampling: SamplingOptions {
            temperature,
            seed: Some(seed),
            ..Default::default()
        },
        stop: vec![],
        num_predict: None,
        num_ctx: 1024,
        num_keep: 0,
        shift: false,
        truncate: false,
        num_thread: None,
        format: None,
        format_after: None,
        logprobs: None,
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    text: String,
    reason: Option<DoneReason>,
    logprobs: Vec<TokenLogprob>,
    error: Option<String>,
}

/// Run `reqs` together, one forward pass per step over all of them (as the batcher).
fn run_batched(model: &Model, reqs: Vec<GenerationRequest>) -> Vec<Outcome> {
    let mut seqs: Vec<Sequence> = reqs
        .into_iter()
        .map(|r| Sequence::new(model, r).expect("sequence"))
        .collect();
    let mut outs: Vec<Outcome> = seqs
        .iter()
        .map(|_| Outcome {
            text: String::new(),
            reason: None,
            logprobs: Vec::new(),
            error: None,
        })
        .collect();
    let record = |o: &mut Outcome, s: wick_engine::StepOutput| {
        o.text.push_str(&s.text);
        o.logprobs.extend(s.logprobs);
        o.reason = o.reason.or(s.finished);
        o.error = s.error.map(|e| e.to_string());
    };
    while seqs.iter().any(|s| !s.is_finished()) {
        let mut planned = Vec::new();
        for (i, s) in seqs.iter_mut().enumerate() {
            if s.is_finished() {
                continue;
            }
            match s.plan(512) {
                Plan::Feed(_) => planned.push(i),
                Plan::Finished(out) => record(&mut outs[i], out),
            }
        }
        let start = Instant::now();
        let logits = {
            let mut inputs: Vec<_> = seqs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| planned.contains(i))
                .filter_map(|(_, s)| s.batch_input())
                .collect();
            if inputs.is_empty() {
                Vec::new()
            } else {
                model
                    .forward_batch(&mut inputs, model.max_threads())
                    .expect("forward")
            }
        };
        for (&i, l) in planned.iter().zip(logits) {
            let out = seqs[i].accept(model, l.as_deref(), start.elapsed());
            record(&mut outs[i], out);
        }
    }
    outs
}

fn run_one(model: &Model, req: GenerationRequest) -> Outcome {
    run_batched(model, vec![req]).remove(0)
}

fn assert_valid(schema: &Value, out: &Outcome) {
    assert_eq!(out.error, None);
    assert_eq!(out.reason, Some(DoneReason::Stop), "{}", out.text);
    let value: Value =
        serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.text));
    let validator = jsonschema::validator_for(schema).expect("reference validator");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{}: {errors:?}", out.text);
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Pick a color for a sports car.",
            json!({
                "type": "object",
                "properties": {
                    "color": { "enum": ["red", "green", "blue", "yellow"] },
                    "kind": { "const": "car" }
                },
                "required": ["color", "kind"],
                "additionalProperties": false
            }),
        ),
        (
            "Describe a person with a name, an age and an address.",
            json!({
                "type": "object",
                "properties": {
                    "name": { "type": "string", "maxLength": 20 },
                    "age": { "type": "integer", "minimum": 0, "maximum": 120 },
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": { "type": "string", "maxLength": 20 },
                            "zip": { "type": "string", "pattern": "^[0-9]{5}$" }
                        },
                        "required": ["city", "zip"],
                        "additionalProperties": false
                    }
                },
                "required": ["name", "age", "address"],
                "additionalProperties": false
            }),
        ),
        (
            "List some prime numbers and some tags.",
            json!({
                "type": "object",
                "properties": {
                    "primes": {
                        "type": "array",
                        "items": { "type": "integer", "minimum": 2, "maximum": 100 },
                        "minItems": 2,
                        "maxItems": 4
                    },
                    "tags": {
                        "type": "array",
                        "items": { "type": "string", "pattern": "^[a-z]{2,8}$" },
                        "minItems": 1,
                        "maxItems": 3
                    }
                },
                "required": ["primes", "tags"],
                "additionalProperties": false
            }),
        ),
        (
            "Give a shape: a circle or a square.",
            json!({
                "$defs": {
                    "circle": {
                        "type": "object",
                        "properties": {
                            "kind": { "const": "circle" },
                            "radius": { "type": "number", "exclusiveMinimum": 0, "maximum": 10 }
                        },
                        "required": ["kind", "radius"],
                        "additionalProperties": false
                    },
                    "square": {
                        "type": "object",
                        "properties": {
                            "kind": { "const": "square" },
                            "side": { "type": "integer", "minimum": 1, "maximum": 10 }
                        },
                        "required": ["kind", "side"],
                        "additionalProperties": false
                    }
                },
                "type": "object",
                "properties": {
                    "shape": { "anyOf": [{ "$ref": "#/$defs/circle" }, { "$ref": "#/$defs/square" }] },
                    "label": { "anyOf": [{ "type": "string", "maxLength": 12 }, { "type": "null" }] }
                },
                "required": ["shape", "label"],
                "additionalProperties": false
            }),
        ),
    ]
}

#[test]
fn sampled_answers_parse_and_validate() {
    let model = model();
    for (prompt, schema) in schemas() {
        let format = OutputFormat::JsonSchema(schema.clone());
        model.check_format(&format).expect("schema compiles");
        for seed in [1, 2, 3] {
            let mut req = request(chat(&model, prompt), 0.8, seed);
            req.format = Some(format.clone());
            let out = run_one(&model, req);
            assert_valid(&schema, &out);
        }
    }
}

#[test]
fn ollama_json_is_an_object() {
    let model = model();
    for seed in [4, 5] {
        let mut req = request(chat(&model, "Tell me about the moon in JSON."), 0.8, seed);
        req.format = Some(OutputFormat::Json);
        req.num_predict = Some(400);
        let out = run_one(&model, req);
        if out.reason == Some(DoneReason::Stop) {
            assert_valid(&json!({ "type": "object" }), &out);
        } else {
            assert!(out.text.starts_with('{'), "{}", out.text);
        }
    }
}

#[test]
fn a_cut_answer_ends_with_length() {
    let model = model();
    let (prompt, schema) = schemas().swap_remove(1);
    let mut req = request(chat(&model, prompt), 0.8, 7);
    req.format = Some(OutputFormat::JsonSchema(schema));
    req.num_predict = Some(4);
    let out = run_one(&model, req);
    assert_eq!(out.reason, Some(DoneReason::Length));
    assert!(out.text.starts_with('{'), "{}", out.text);
}

#[test]
fn a_bad_schema_is_refused_before_generating() {
    let model = model();
    let bad = OutputFormat::JsonSchema(
        json!({ "type": "object", "properties": { "a": { "$ref": "#/$defs/nope" } } }),
    );
    let err = model.check_format(&bad).expect_err("bad $ref");
    assert!(
        matches!(err, wick_engine::EngineError::InvalidFormat(_)),
        "{err}"
    );
    let mut req = request(chat(&model, "hi"), 0.8, 1);
    req.format = Some(bad);
    assert!(Sequence::new(&model, req).is_err());
}

#[test]
fn batched_with_a_constrained_neighbour_equals_alone() {
    let model = model();
    let (prompt, schema) = schemas().swap_remove(2);
    let mut constrained = request(chat(&model, prompt), 0.8, 11);
    constrained.format = Some(OutputFormat::JsonSchema(schema.clone()));
    constrained.logprobs = Some(3);
    let mut greedy = request(chat(&model, "Write a haiku about rivers."), 0.0, 0);
    greedy.num_predict = Some(40);
    let mut seeded = request(chat(&model, "Name three fruits."), 0.8, 12);
    seeded.num_predict = Some(40);
    seeded.logprobs = Some(2);
    let reqs = vec![constrained, greedy, seeded];
    let alone: Vec<Outcome> = reqs.iter().map(|r| run_one(&model, r.clone())).collect();
    let together = run_batched(&model, reqs);
    assert_valid(&schema, &alone[0]);
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a, t);
    }
}

#[test]
fn greedy_logprobs_follow_the_text() {
    let model = model();
    let mut req = request(chat(&model, "What is the capital of France?"), 0.0, 0);
    req.num_predict = Some(24);
    req.logprobs = Some(5);
    let out = run_one(&model, req);
    assert!(!out.logprobs.is_empty());
    let bytes: Vec<u8> = out.logprobs.iter().flat_map(|l| l.bytes.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&bytes), out.text);
    for l in &out.logprobs {
        assert_eq!(l.top_logprobs.len(), 5);
        assert_eq!(
            l.top_logprobs[0].bytes, l.bytes,
            "greedy picks the top token"
        );
        assert_eq!(l.top_logprobs[0].logprob, l.logprob);
        assert!(l.logprob <= 0.0);
        let mass: f32 = l.top_logprobs.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
        assert!(l
            .top_logprobs
            .windows(2)
            .all(|w| w[0].logprob >= w[1].logprob));
    }
    // A stop string swallows the tokens that run into it.
    let mut req = request(chat(&model, "What is the capital of France?"), 0.0, 0);
    req.num_predict = Some(24);
    req.logprobs = Some(0);
    let stop_at: String = out.text.chars().skip(8).take(4).collect();
    req.stop = vec![stop_at.clone()];
    let cut = run_one(&model, req);
    assert!(!cut.text.contains(&stop_at));
    let bytes: Vec<u8> = cut.logprobs.iter().flat_map(|l| l.bytes.clone()).collect();
    assert!(cut.text.as_bytes().starts_with(&bytes));
    assert!(cut.logprobs.iter().all(|l| l.top_logprobs.is_empty()));
}

#[test]
fn format_after_constrains_only_what_follows() {
    let model = model();
    let prompt = chat(&model, "Think briefly, then answer with a color.");
    let mut free = request(prompt.clone(), 0.0, 0);
    free.num_predict = Some(30);
    let free = run_one(&model, free);
    // The first word the model writes plays the closing tag.
    let tag: String = free
        .text
        .split_whitespace()
        .next()
        .expect("a word")
        .to_string();
    let at = free.text.find(&tag).expect("tag") + tag.len();
    let schema = schemas().swap_remove(0).1;
    let mut req = request(prompt, 0.0, 0);
    req.format = Some(OutputFormat::JsonSchema(schema.clone()));
    req.format_after = Some(tag.clone());
    let out = run_one(&model, req);
    assert_eq!(out.reason, Some(DoneReason::Stop));
    assert!(
        out.text.len() >= at && out.text[..at] == free.text[..at],
        "{}",
        out.text
    );
    // The answer starts after the token that completed the tag.
    let start = out.text[at..].find('{').map(|i| at + i).expect("an answer");
    let answer = Outcome {
        text: out.text[start..].to_string(),
        ..out.clone()
    };
    assert_valid(&schema, &answer);
}
