//! Decode step time against batch size, straight on the engine (no server):
//! `cargo run --release -p wick-engine --example batch_decode -- model.gguf [steps]
//! [context]`. Each of B sequences is prefilled with a prompt of about `context` tokens
//! (default: a 5-token sentence), then B rows are decoded per step.

use std::time::Instant;

use wick_engine::{BatchInput, Device, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: batch_decode MODEL.gguf [steps] [context] [batch sizes, e.g. 1,8,16]")?;
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let model = Model::load(path.as_ref(), &Device::Cpu)?;
    let threads = model.max_threads();
    let context: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let sentence = "The history of computing is";
    let mut prompt = model.tokenizer.encode(sentence, true)?;
    while prompt.len() < context {
        prompt.extend(model.tokenizer.encode(" and so on, and so on", false)?);
    }
    let batches: Vec<usize> = args
        .get(4)
        .map(|s| s.split(',').filter_map(|b| b.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16]);
    for b in batches {
        let mut caches = (0..b)
            .map(|_| model.new_cache(4096))
            .collect::<Result<Vec<_>, _>>()?;
        let t0 = Instant::now();
        {
            let mut inputs: Vec<BatchInput> = caches
                .iter_mut()
                .map(|c| BatchInput {
                    tokens: &prompt,
                    cache: c,
                    logits: false,
                })
                .collect();
            model.forward_batch(&mut inputs, threads)?;
        }
        let prefill = t0.elapsed();
        let next = [prompt[prompt.len() - 1]];
        let t1 = Instant::now();
        for _ in 0..steps {
            let mut inputs: Vec<BatchInput> = caches
                .iter_mut()
                .map(|c| BatchInput {
                    tokens: &next,
                    cache: c,
                    logits: true,
                })
                .collect();
            model.forward_batch(&mut inputs, threads)?;
        }
        let dt = t1.elapsed().as_secs_f64();
        println!(
            "batch {b:2}: prefill {:.0} tok/s, step {:.1} ms, aggregate decode {:.1} tok/s",
            (b * prompt.len()) as f64 / prefill.as_secs_f64(),
            dt * 1000.0 / steps as f64,
            (b * steps) as f64 / dt
        );
    }
    Ok(())
}
