//! Through the real batcher (parallel sampling, mask threads): a schema-constrained
//! request batched with unconstrained ones yields what each yields alone, its answer
//! parses, and logprobs arrive with the text.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wick_engine::{
    Device, DoneReason, GenerationRequest, OutputFormat, SamplingOptions, TokenLogprob,
};
use wick_scheduler::{Event, KeepAlive, ModelSpec, Scheduler, SchedulerConfig};

fn spec() -> ModelSpec {
    let cache = std::env::var_os("WICK_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models-cache"));
    let path = cache.join("smollm2-135m-instruct-q4_1.gguf");
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models.sh",
        path.display()
    );
    ModelSpec {
        key: "smollm2".into(),
        name: "smollm2:135m".into(),
        path,
        digest: "sha256:test".into(),
    }
}

fn scheduler() -> Arc<Scheduler> {
    Scheduler::new(SchedulerConfig {
        max_loaded_models: 1,
        max_queue: 16,
        default_keep_alive: KeepAlive::For(Duration::from_secs(300)),
        kv_budget_bytes: 256 << 20,
        num_parallel: Some(4),
        default_num_ctx: Some(1024),
        device: Device::Cpu,
    })
}

#[derive(Debug, PartialEq)]
struct Answer {
    text: String,
    logprobs: Vec<TokenLogprob>,
    reason: Option<DoneReason>,
}

async fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Answer {
    let mut a = Answer {
        text: String::new(),
        logprobs: Vec::new(),
        reason: None,
    };
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text { text, logprobs } => {
                a.text.push_str(&text);
                a.logprobs.extend(logprobs);
            }
            Event::Done { reason, .. } => a.reason = Some(reason),
            Event::Error(e) => panic!("generation failed: {e}"),
        }
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constrained_request_batched_with_others_equals_alone() {
    let s = scheduler();
    let lease = s.acquire(&spec(), None).await.expect("load");
    let model = lease.model();
    let prompt = |user: &str| {
        let text = format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n");
        model.tokenizer.encode(&text, true).expect("encode")
    };
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": { "type": "string", "maxLength": 24 },
            "population": { "type": "integer", "minimum": 0 },
            "rivers": { "type": "array", "items": { "type": "string", "maxLength": 16 }, "maxItems": 3 }
        },
        "required": ["city", "population", "rivers"],
        "additionalProperties": false
    });
    let format = OutputFormat::JsonSchema(schema);
    model.check_format(&format).expect("schema");
    let base = |p: Vec<u32>, temperature: f32, seed: u64| GenerationRequest {
        prompt: p,
        sampling: SamplingOptions {
            temperature,
            seed: Some(seed),
            ..Default::default()
        },
        stop: vec![],
        num_predict: Some(48),
        num_ctx: 1024,
        num_keep: 0,
        shift: false,
        truncate: false,
        num_thread: None,
        format: None,
        format_after: None,
        logprobs: None,
    };
    let mut constrained = base(prompt("Describe Paris as JSON."), 0.8, 3);
    constrained.num_predict = None;
    constrained.format = Some(format);
    constrained.logprobs = Some(2);
    let mut seeded = base(prompt("Tell me a story about a fox."), 0.8, 4);
    seeded.logprobs = Some(1);
    let greedy = base(prompt("Why is the sky blue?"), 0.0, 0);
    let reqs = [constrained, seeded, greedy];

    let mut alone = Vec::new();
    for r in &reqs {
        alone.push(collect(lease.submit(r.clone()).expect("submit")).await);
    }
    let rxs: Vec<_> = reqs
        .iter()
        .map(|r| lease.submit(r.clone()).expect("submit"))
        .collect();
    let mut together = Vec::new();
    for rx in rxs {
        together.push(collect(rx).await);
    }
    assert_eq!(alone, together);

    let answer = &alone[0];
    assert_eq!(answer.reason, Some(DoneReason::Stop));
    let v: serde_json::Value = serde_json::from_str(&answer.text).expect("JSON answer");
    assert!(v["population"].is_u64() && v["rivers"].is_array(), "{v}");
    let bytes: Vec<u8> = answer
        .logprobs
        .iter()
        .flat_map(|l| l.bytes.clone())
        .collect();
    assert_eq!(String::from_utf8_lossy(&bytes), answer.text);
    assert!(answer.logprobs.iter().all(|l| l.top_logprobs.len() == 2));
    assert!(alone[2].logprobs.is_empty());
}
