//! The real all-MiniLM-L6-v2 safetensors directory converts into a GGUF that our own
//! reader parses back with the facts Ollama shows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wick_engine::convert::bert_to_gguf;
use wick_engine::GgufFacts;

#[test]
fn minilm_converts_to_a_bert_gguf() {
    let dir = std::env::var_os("WICK_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models-cache"))
        .join("all-minilm-l6-v2");
    assert!(dir.exists(), "run scripts/fetch-models.sh");
    let mut files = BTreeMap::new();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
    ] {
        files.insert(name.to_string(), dir.join(name));
    }
    let out = tempfile::NamedTempFile::new().expect("tmp");
    bert_to_gguf(&files, out.path()).expect("convert");
    let facts = GgufFacts::read(out.path(), false).expect("read back");
    assert_eq!(facts.architecture, "bert");
    assert!(facts.is_embedding);
    assert_eq!(facts.context_length, Some(512));
    assert_eq!(facts.embedding_length, Some(384));
    assert_eq!(facts.model_info["bert.block_count"], 6);
    assert_eq!(facts.model_info["bert.pooling_type"], 1);
    // ~22.7M parameters, matrices in f16.
    assert!((20_000_000..25_000_000).contains(&facts.parameter_count));
    let size = std::fs::metadata(out.path()).expect("meta").len();
    assert!(
        size < 60_000_000,
        "f16 conversion should be ~45 MB, got {size}"
    );

    // A directory without weights is refused with a clear error.
    files.remove("model.safetensors");
    files.insert("model.safetensors".into(), dir.join("config.json"));
    assert!(bert_to_gguf(&files, out.path()).is_err());
}
