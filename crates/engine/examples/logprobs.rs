//! Print the top-2 log-probabilities of the first greedy step for each fixture prompt of
//! a model, next to llama.cpp's, to see numeric drift.
use wick_engine::{Device, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let file = &args[1];
    let fix: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        "assets/fixtures/llamacpp_greedy.json",
    )?)?;
    let model = Model::load(format!("models-cache/{file}").as_ref(), &Device::Cpu)?;
    for m in fix["models"].as_object().ok_or("models")?.values() {
        if m["file"] != file.as_str() {
            continue;
        }
        for case in m["cases"].as_array().ok_or("cases")? {
            let prompt: Vec<u32> = case["prompt_ids"]
                .as_array()
                .ok_or("ids")?
                .iter()
                .map(|v| v.as_u64().unwrap_or(0) as u32)
                .collect();
            let gen: Vec<u32> = case["generated_ids"]
                .as_array()
                .ok_or("ids")?
                .iter()
                .map(|v| v.as_u64().unwrap_or(0) as u32)
                .collect();
            let mut cache = model.new_cache(512)?;
            let mut logits = model.forward(&prompt, &mut cache)?;
            for step in 0..6 {
                let max = logits.iter().cloned().fold(f32::MIN, f32::max);
                let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
                let mut idx: Vec<usize> = (0..logits.len()).collect();
                idx.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
                let ours: Vec<(usize, f32)> =
                    idx[..2].iter().map(|&i| (i, logits[i] - lse)).collect();
                println!(
                    "step {step} ours {:?} llama.cpp {}",
                    ours, case["top2_logprobs"][step]
                );
                logits = model.forward(&[gen[step]], &mut cache)?;
            }
            println!();
        }
    }
    Ok(())
}
