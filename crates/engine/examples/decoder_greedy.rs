//! Greedy continuation of token ids straight through the decoder, without a tokenizer:
//! `decoder_greedy <model.gguf> <n> <id> <id> ...` prints the generated ids. For
//! checking a family's forward pass against recorded llama.cpp ids.

use std::sync::Arc;

use wick_engine::gguf::GgufFile;
use wick_engine::kv_cache::{CpuKvCache, KvUsage};
use wick_engine::model::decoder::{CpuBatchInput, DecoderModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: decoder_greedy <model.gguf> <n> <id>...".into());
    }
    let mut gguf = GgufFile::open(std::path::Path::new(&args[1]))?;
    let n: usize = args[2].parse()?;
    let prompt: Vec<u32> = args[3..]
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let arch = gguf.architecture()?;
    let model = DecoderModel::from_gguf(&mut gguf, &arch, wick_kernels::physical_cores())?;
    let s = &model.spec;
    let mut cache = CpuKvCache::new(
        s.n_layer,
        s.n_kv_head,
        s.head_dim,
        prompt.len() + n + 1,
        Arc::new(KvUsage::default()),
    );
    let mut tokens = prompt;
    let mut out = Vec::new();
    for _ in 0..n {
        let mut batch = [CpuBatchInput {
            tokens: &tokens,
            cache: &mut cache,
            logits: true,
        }];
        let logits = model
            .forward_batch(&mut batch, model.max_threads())?
            .pop()
            .flatten()
            .ok_or("no logits")?;
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let (a, b) = (idx[0], idx[1]);
        eprintln!("{a} ({:.3}) {b} ({:.3})", logits[a], logits[b]);
        out.push(a as u32);
        tokens = vec![a as u32];
    }
    println!("{out:?}");
    Ok(())
}
