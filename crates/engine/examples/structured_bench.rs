//! Decode speed with and without a JSON schema, N sequences batched as the batcher
//! does (one forward pass per step over all of them).
//!
//! Usage: cargo run --release -p wick-engine --example structured_bench -- MODEL.gguf [N,..] [TOKENS]
//! Prints decode tokens/s per N, plain and with a schema, and their ratio, from the
//! median time of the steps where all N sequences decode (prefill and the tail where
//! some have ended are left out, so the batch size is the same in both).

use std::time::{Duration, Instant};

use wick_engine::{
    Device, GenerationRequest, Model, OutputFormat, Plan, SamplingOptions, Sequence,
};

fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "people": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "age": { "type": "integer", "minimum": 0, "maximum": 120 },
                        "city": { "type": "string" },
                        "tags": { "type": "array", "items": { "type": "string" } }
                    },
                    "required": ["name", "age", "city", "tags"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["people"],
        "additionalProperties": false
    })
}

/// Step times of `n` sequences run together for `tokens` each, for the steps where all
/// of them decode.
fn run(model: &Model, n: usize, tokens: usize, format: Option<OutputFormat>) -> Vec<Duration> {
    let prompt = model
        .tokenizer
        .encode(
            "<|im_start|>user\nList many people as JSON with name, age, city and tags.<|im_end|>\n<|im_start|>assistant\n",
            true,
        )
        .expect("encode");
    let mut seqs: Vec<Sequence> = (0..n)
        .map(|i| {
            let req = GenerationRequest {
                prompt: prompt.clone(),
                sampling: SamplingOptions {
                    temperature: 0.8,
                    seed: Some(i as u64 + 1),
                    ..Default::default()
                },
                stop: vec![],
                num_predict: Some(tokens),
                num_ctx: 2048,
                num_keep: 0,
                shift: false,
                truncate: false,
                num_thread: None,
                format: format.clone(),
                format_after: None,
                logprobs: None,
            };
            Sequence::new(model, req).expect("sequence")
        })
        .collect();
    let mut steps = Vec::new();
    while seqs.iter().any(|s| !s.is_finished()) {
        let mut planned = Vec::new();
        let mut prefilling = false;
        for (i, s) in seqs.iter_mut().enumerate() {
            if s.is_finished() {
                continue;
            }
            prefilling |= s.is_prefilling();
            if let Plan::Feed(_) = s.plan(512) {
                planned.push(i);
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
            model
                .forward_batch(&mut inputs, model.max_threads())
                .expect("forward")
        };
        for (&i, l) in planned.iter().zip(logits) {
            let _ = seqs[i].accept(model, l.as_deref(), Duration::ZERO);
        }
        if !prefilling && planned.len() == n {
            steps.push(start.elapsed());
        }
    }
    steps
}

/// Tokens per second of `n` rows per step, plain and with `format`, from the median
/// step time of `runs` runs of each, interleaved so that other load on the machine
/// falls on both alike.
fn rates(model: &Model, n: usize, tokens: usize, format: &OutputFormat, runs: usize) -> (f64, f64) {
    let (mut plain, mut schema) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.extend(run(model, n, tokens, None));
        schema.extend(run(model, n, tokens, Some(format.clone())));
    }
    let rate = |mut steps: Vec<Duration>| {
        steps.sort();
        match steps.get(steps.len() / 2) {
            Some(median) => n as f64 / median.as_secs_f64(),
            None => f64::NAN,
        }
    };
    (rate(plain), rate(schema))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: structured_bench MODEL.gguf [N,..] [TOKENS]");
    let ns: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8]);
    let tokens: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(128);
    let model = Model::load(path.as_ref(), &Device::Cpu).expect("load");
    let format = OutputFormat::JsonSchema(schema());
    let t = Instant::now();
    model.check_format(&format).expect("schema");
    println!("vocabulary + schema compile: {:?}", t.elapsed());
    println!(
        "{:>3} {:>12} {:>12} {:>8}",
        "N", "plain tok/s", "schema tok/s", "ratio"
    );
    for n in ns {
        run(&model, n, 8, None); // warm up
        let (plain, schema) = rates(&model, n, tokens, &format, 5);
        println!(
            "{n:>3} {plain:>12.1} {schema:>12.1} {:>8.3}",
            schema / plain
        );
    }
}
