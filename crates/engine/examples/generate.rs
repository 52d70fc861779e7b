//! Greedy generation from a GGUF file, for quick checks:
//! `cargo run --release -p wick-engine --example generate -- model.gguf "prompt" [n]`

use std::time::Instant;

use wick_engine::{Device, GenerationRequest, Model, SamplingOptions, Sequence};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: generate MODEL.gguf PROMPT [N]")?;
    let prompt = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "The capital of France is".into());
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let t0 = Instant::now();
    let model = Model::load(path.as_ref(), &Device::Cpu)?;
    eprintln!("loaded in {:?}", t0.elapsed());
    let tokens = model.tokenizer.encode(&prompt, true)?;
    eprintln!("prompt tokens: {tokens:?}");
    let mut seq = Sequence::new(
        &model,
        GenerationRequest {
            prompt: tokens,
            sampling: SamplingOptions {
                temperature: 0.0,
                ..Default::default()
            },
            stop: vec![],
            num_predict: Some(n),
            num_ctx: 4096,
            num_keep: 4,
            shift: true,
            truncate: true,
            num_thread: None,
            format: None,
            format_after: None,
            logprobs: None,
        },
    )?;
    let mut text = String::new();
    while !seq.is_finished() {
        text.push_str(&seq.step(&model)?.text);
    }
    let generated =
        &seq.context()[seq.context().len() - seq.stats.eval_count.min(seq.context().len())..];
    println!("{text}");
    eprintln!("generated ids: {generated:?}");
    let s = &seq.stats;
    eprintln!(
        "prefill {} tok in {:?} ({:.1} tok/s), decode {} tok in {:?} ({:.1} tok/s)",
        s.prompt_eval_count,
        s.prompt_eval_duration,
        s.prompt_eval_count as f64 / s.prompt_eval_duration.as_secs_f64(),
        s.eval_count,
        s.eval_duration,
        s.eval_count as f64 / s.eval_duration.as_secs_f64().max(1e-9)
    );
    Ok(())
}
