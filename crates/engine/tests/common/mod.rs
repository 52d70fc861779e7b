//! What the engine's tests against real files share: where the repository and the
//! model cache are.

pub mod scripted;

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `WICK_MODEL_CACHE`, else `models-cache/` in the repository.
#[allow(dead_code)]
pub fn model_cache() -> PathBuf {
    std::env::var_os("WICK_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models-cache"))
}

/// SmolLM2's GGUF in the model cache (fetched by `scripts/fetch-models.sh`).
#[allow(dead_code)]
pub fn smollm2_gguf() -> PathBuf {
    let path = model_cache().join("smollm2-135m-instruct-q4_1.gguf");
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}
