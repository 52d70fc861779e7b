//! wick-api: Ollama's REST API over the scheduler and the model store.
//!
//! One module per route group; requests go through our own JSON extractor
//! ([`extract::ApiJson`]) and a `validate()` into `Valid*` types; every error is an
//! [`ApiError`] that becomes HTTP in one place. [`app`] builds the router so tests can
//! drive it with `oneshot` as well as over a socket.

pub mod error;
mod extract;
pub mod options;
pub mod wire;

mod answer;
mod blobs;
mod chat;
mod create;
mod embed;
mod embed_openai;
mod generate;
mod manage;
mod models;
mod openai;
mod prompt;
mod request;
mod run;
mod security;
mod show;
mod tool_choice;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, head, post};
use axum::Router;
use wick_scheduler::Scheduler;
use wick_store::Store;

pub use error::ApiError;

/// The Ollama version wick reports (clients gate features on it).
pub const OLLAMA_VERSION: &str = "0.13.5";

/// Largest JSON request body accepted (long chat histories; blobs are streamed and not
/// limited by this).
const MAX_JSON_BODY: usize = 256 * 1024 * 1024;

/// Settings of the API layer.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// `OLLAMA_NOPRUNE`: keep the blobs of a manifest replaced by `create`.
    pub no_prune: bool,
    /// `OLLAMA_ORIGINS`: browser origins allowed besides the local ones (`*` wildcards).
    pub origins: Vec<String>,
    /// The server listens on a loopback address only: refuse requests whose `Host` is
    /// not a local name (DNS-rebinding guard).
    pub loopback_only: bool,
    /// This machine's host name (accepted as a `Host` by the guard).
    pub hostname: Option<String>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub scheduler: Arc<Scheduler>,
    pub store: Store,
    pub config: Arc<ApiConfig>,
    templates: prompt::TemplateCache,
    /// Responses of `/v1/responses`, for `previous_response_id`.
    responses: openai::ResponseStore,
}

impl AppState {
    pub fn new(scheduler: Arc<Scheduler>, store: Store, config: ApiConfig) -> Self {
        AppState {
            scheduler,
            store,
            config: Arc::new(config),
            templates: prompt::TemplateCache::default(),
            responses: openai::ResponseStore::default(),
        }
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(manage::root))
        .route("/api/version", get(manage::version))
        .route("/api/generate", post(generate::generate))
        .route("/api/chat", post(chat::chat))
        .route("/api/embed", post(embed::embed))
        .route("/api/embeddings", post(embed::embeddings))
        .route("/api/tags", get(manage::tags))
        .route("/api/ps", get(manage::ps))
        .route("/api/show", post(show::show))
        .route("/api/copy", post(manage::copy))
        .route("/api/delete", axum::routing::delete(manage::delete))
        .route(
            "/api/blobs/{digest}",
            head(blobs::head_blob).post(blobs::upload_blob),
        )
        .route("/api/create", post(create::create))
        .route("/api/pull", post(manage::pull))
        .route("/api/push", post(manage::push))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embed_openai::embeddings))
        .route("/v1/responses", post(openai::create_response))
        .route("/v1/responses/{id}", get(openai::get_response))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*model}", get(openai::get_model))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.config.clone(),
            security::guard_hosts,
        ))
        .layer(security::cors(&state.config))
        .with_state(state)
}

/// gin's default for unknown routes.
async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found")
}

#[cfg(test)]
mod tests;
