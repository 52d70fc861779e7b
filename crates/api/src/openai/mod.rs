//! OpenAI-compatible routes, translated onto the native ones as Ollama's middleware
//! does: `/v1/chat/completions` ([`chat`]), `/v1/completions` ([`completions`]),
//! `/v1/responses` ([`responses`]; server-sent events when streaming, plain or
//! typed), `/v1/models` and `/v1/models/{model}` (`/v1/embeddings` is in `embed_openai`). Errors use OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}` with the native status codes;
//! a field wick does not implement is a 400 naming it ([`error`]).
//!
//! Extensions: `options` (any Ollama option, e.g. `num_ctx`) and `keep_alive` are
//! accepted; `max_completion_tokens` is read when `max_tokens` is absent.

mod chat;
mod completions;
mod error;
mod responses;
mod wire;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use wick_store::ModelName;

pub(crate) use chat::chat_completions;
pub(crate) use completions::completions;
use error::OaResult;
pub(crate) use error::OpenAiError;
pub(crate) use responses::{create_response, get_response, ResponseStore};

use crate::models::blocking;
use crate::AppState;

fn model_object(m: &wick_store::ListedModel) -> Value {
    json!({
        "id": m.name.display_shortest(),
        "object": "model",
        "created": m.modified_at.timestamp(),
        "owned_by": m.name.namespace(),
    })
}

pub(crate) async fn list_models(State(state): State<AppState>) -> OaResult<Json<Value>> {
    let store = state.store.clone();
    let data =
        blocking(move || Ok(store.list()?.iter().map(model_object).collect::<Vec<_>>())).await?;
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub(crate) async fn get_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> OaResult<Json<Value>> {
    let store = state.store.clone();
    let m = blocking(move || {
        let name = ModelName::parse(&model)?;
        Ok(store.manifest(&name)?)
    })
    .await?;
    Ok(Json(model_object(&m)))
}
