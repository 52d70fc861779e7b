//! The batching invariant of wick's CPU kernels on every decoder family's tiny seeded
//! model, the mixture of experts included: sequences of different lengths join and
//! leave a running batch (prompts in chunks beside decode rows), and every logit row is
//! bit for bit the row the same sequence computes alone. (The server-level test on the
//! real SmolLM2 is `tests/batching.rs`.)

mod common;

use common::model_cache;
use common::scripted::{batching_error, scripts};
use wick_engine::{tiny_models, Device, Model};

const FAMILIES: &[&str] = &[
    "llama", "llama3", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "granite", "olmo2",
    "phi3", "gpt-oss",
];

#[test]
fn every_family_batches_bit_for_bit() {
    let vocab_source = model_cache().join("smollm2-135m-instruct-q4_1.gguf");
    assert!(
        vocab_source.exists(),
        "{} missing: run scripts/fetch-models.sh",
        vocab_source.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    for family in FAMILIES {
        let path = dir.path().join(format!("{family}.gguf"));
        tiny_models::write(family, &vocab_source, &path).expect("write the tiny model");
        let model = Model::load_with_threads(&path, &Device::Cpu, 2)
            .unwrap_or_else(|e| panic!("{family}: {e}"));
        let worst = batching_error(family, &model, &scripts(model.tokenizer.vocab_size()));
        assert_eq!(
            worst, 0.0,
            "{family}: batched logits differ from solo by {worst}"
        );
    }
}
