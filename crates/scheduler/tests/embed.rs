//! Embedding jobs through the real batcher thread: concurrent requests on one model get
//! the vectors each gets alone, and a request whose input the model refuses fails alone
//! (the others of its pass still get their vectors).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wick_engine::convert::bert_to_gguf;
use wick_engine::Device;
use wick_scheduler::{EmbedRequest, KeepAlive, ModelSpec, SchedError, Scheduler, SchedulerConfig};

fn minilm_gguf(out: &std::path::Path) {
    let dir = std::env::var_os("WICK_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models-cache"))
        .join("all-minilm-l6-v2");
    assert!(dir.exists(), "run scripts/fetch-models.sh");
    let files: BTreeMap<String, PathBuf> = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
    ]
    .into_iter()
    .map(|n| (n.to_string(), dir.join(n)))
    .collect();
    bert_to_gguf(&files, out).expect("convert");
}

fn scheduler() -> Arc<Scheduler> {
    Scheduler::new(SchedulerConfig {
        max_loaded_models: 1,
        max_queue: 16,
        default_keep_alive: KeepAlive::For(Duration::from_secs(300)),
        kv_budget_bytes: 256 << 20,
        num_parallel: None,
        default_num_ctx: None,
        device: Device::Cpu,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_embed_jobs_share_the_model_and_fail_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("minilm.gguf");
    minilm_gguf(&path);
    let s = scheduler();
    let spec = ModelSpec {
        key: "minilm".into(),
        name: "all-minilm:l6-v2".into(),
        path,
        digest: "sha256:test".into(),
    };
    let lease = s.acquire(&spec, None).await.expect("load");
    assert_eq!(lease.default_num_ctx(), 512);
    let tokens = |text: &str| {
        let (ids, _) = lease
            .model()
            .tokenizer
            .encode_for_embedding(text, 512, true)
            .expect("encode")
            .expect("fits");
        ids
    };
    let texts = ["A man is eating food.", "The new movie is awesome!", "hi"];
    let job = |inputs: Vec<Vec<u32>>| EmbedRequest {
        inputs,
        num_thread: None,
    };
    let alone: Vec<Vec<f32>> = {
        let mut v = Vec::new();
        for t in texts {
            let out = lease.embed(job(vec![tokens(t)])).await.expect("alone");
            assert_eq!(out.prompt_tokens, tokens(t).len());
            v.push(out.embeddings.into_iter().next().expect("one vector"));
        }
        v
    };
    let (a, bad, b) = tokio::join!(
        lease.embed(job(vec![tokens(texts[0]), tokens(texts[1])])),
        lease.embed(job(vec![vec![101, 999_999, 102]])),
        lease.embed(job(vec![tokens(texts[2])])),
    );
    let a = a.expect("first request");
    assert_eq!(a.embeddings, alone[..2].to_vec());
    assert_eq!(b.expect("third request").embeddings, alone[2..].to_vec());
    match bad {
        Err(SchedError::Engine(e)) => assert!(e.to_string().contains("999999"), "{e}"),
        other => panic!("a token outside the vocabulary must fail: {other:?}"),
    }
    // The model is listed while held, and nothing stays counted in the queue: a
    // scheduler with room for 16 takes 16 jobs at once.
    assert_eq!(s.running().len(), 1);
    let ids = tokens("again");
    let many = futures::future::join_all((0..16).map(|_| {
        lease.embed(EmbedRequest {
            inputs: vec![ids.clone()],
            num_thread: None,
        })
    }))
    .await;
    assert!(many.iter().all(Result::is_ok), "{many:?}");
}
