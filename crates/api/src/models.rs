//! Finding a model in the store and turning it into what the scheduler runs.

use wick_scheduler::ModelSpec;
use wick_store::{ModelName, ResolvedModel};
use wick_templating::Message;

use crate::error::{ApiError, Result};
use crate::options::OptionsPatch;
use crate::AppState;

/// Run blocking store/file work off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker task failed: {e}")))?
}

/// Load `name`'s manifest and small layers; 404 `model 'x' not found`.
pub(crate) async fn resolve(state: &AppState, name: &ModelName) -> Result<ResolvedModel> {
    let store = state.store.clone();
    let name = name.clone();
    blocking(move || Ok(store.resolve(&name)?)).await
}

/// What the scheduler needs to load a resolved model.
pub(crate) fn spec(m: &ResolvedModel) -> Result<ModelSpec> {
    let path = m.model_path.clone().ok_or_else(|| {
        ApiError::bad(format!(
            "model '{}' has no GGUF weights layer",
            m.name.display_shortest()
        ))
    })?;
    Ok(ModelSpec {
        key: m.digest_hex.clone(),
        name: m.name.display_shortest(),
        path,
        digest: m.digest_hex.clone(),
    })
}

/// Embedding-only architectures: they cannot generate text.
const EMBEDDING_FAMILIES: &[&str] = &["bert", "nomic-bert", "jina-bert-v2"];

/// 400 `"x" does not support generate` (or `chat`) for an embedding model.
pub(crate) fn require_completion(m: &ResolvedModel, what: &str) -> Result<()> {
    if EMBEDDING_FAMILIES.contains(&m.config.model_family.as_str()) {
        return Err(ApiError::bad(format!(
            "\"{}\" does not support {what}",
            m.name.display_shortest()
        )));
    }
    Ok(())
}

/// The model's Modelfile `PARAMETER`s as options.
pub(crate) fn params(m: &ResolvedModel) -> Result<OptionsPatch> {
    match &m.params {
        None => Ok(OptionsPatch::default()),
        Some(map) => OptionsPatch::from_map(map).map_err(|e| {
            ApiError::internal(format!(
                "model '{}' has invalid parameters: {e}",
                m.name.display_shortest()
            ))
        }),
    }
}

/// The model's `MESSAGE`s (few-shot history).
pub(crate) fn messages(m: &ResolvedModel) -> Vec<Message> {
    m.messages
        .iter()
        .filter_map(|v| match serde_json::from_value::<Message>(v.clone()) {
            Ok(msg) => Some(msg),
            Err(e) => {
                tracing::warn!(model = %m.name, error = %e, "skipping invalid MESSAGE");
                None
            }
        })
        .collect()
}
