//! wick-api: Ollama's REST API over the scheduler and the model store.
//!
//! One module per route group; requests go through our own JSON extractor
//! ([`extract::ApiJson`]) and a `validate()` into `Valid*` types; every error is an
//! [`ApiError`] that becomes HTTP in one place. [`app`] builds the router so tests can
//! drive it with `oneshot` as well as over a socket.

pub mod error;
mod extract;
pub mod metrics;
pub mod options;
pub mod wire;

mod access_log;
mod answer;
mod auth;
mod blobs;
mod chat;
mod create;
mod drain;
mod embed;
mod embed_openai;
mod generate;
mod limits;
mod manage;
mod models;
mod openai;
mod prompt;
mod registry;
mod request;
mod run;
mod security;
mod show;
mod tool_choice;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{get, head, post};
use axum::Router;
use wick_scheduler::Scheduler;
use wick_store::Store;

pub use auth::ApiKey;
pub use drain::ShutdownDeadline;
pub use error::ApiError;
pub use limits::DEFAULT_MAX_BODY_BYTES;
pub use metrics::ServerMetrics;

/// The Ollama version wick reports (clients gate features on it).
pub const OLLAMA_VERSION: &str = "0.13.5";

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
    /// `WICK_API_KEY`: when set, every route but `/` and `/api/version` needs it.
    pub api_key: Option<ApiKey>,
    /// `WICK_MAX_BODY_BYTES`: largest request body (blob uploads excepted); `None` is
    /// [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: Option<usize>,
    /// `WICK_REQUEST_TIMEOUT`: wall-clock cap per request (blob uploads excepted).
    pub request_timeout: Option<Duration>,
    /// `WICK_REGISTRY_PUSH`: accept pushes on the registry routes (`/v2/.../uploads`).
    pub registry_push: bool,
}

impl ApiConfig {
    /// The body size limit in force.
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES)
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub scheduler: Arc<Scheduler>,
    pub store: Store,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<ServerMetrics>,
    templates: prompt::TemplateCache,
    /// Responses of `/v1/responses`, for `previous_response_id`.
    responses: openai::ResponseStore,
    /// Passed when a shutdown's drain time is over: generations still running end.
    pub shutdown: ShutdownDeadline,
    /// Registry upload sessions (pushes into this server).
    pub(crate) uploads: registry::upload::Uploads,
}

impl AppState {
    pub fn new(scheduler: Arc<Scheduler>, store: Store, config: ApiConfig) -> Self {
        let metrics = Arc::new(ServerMetrics::new());
        let on_load = metrics.clone();
        scheduler.set_load_observer(Arc::new(move |model: &str, took: Duration| {
            on_load.observe_load(model, took)
        }));
        AppState {
            scheduler,
            store,
            config: Arc::new(config),
            metrics,
            templates: prompt::TemplateCache::default(),
            responses: openai::ResponseStore::default(),
            shutdown: ShutdownDeadline::default(),
            uploads: registry::upload::Uploads::default(),
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
        .route("/api/pull", post(registry::pull::pull))
        .route("/api/push", post(registry::push::push))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embed_openai::embeddings))
        .route("/v1/responses", post(openai::create_response))
        .route("/v1/responses/{id}", get(openai::get_response))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*model}", get(openai::get_model))
        .route("/metrics", get(metrics::metrics))
        .route("/v2/", get(registry::serve::root))
        .route(
            "/v2/{namespace}/{model}/manifests/{reference}",
            get(registry::serve::manifest).put(registry::upload::put_manifest),
        )
        .route(
            "/v2/{namespace}/{model}/blobs/{digest}",
            get(registry::serve::blob),
        )
        .route(
            "/v2/{namespace}/{model}/tags/list",
            get(registry::serve::tags),
        )
        .route(
            "/v2/{namespace}/{model}/blobs/uploads/",
            post(registry::upload::start),
        )
        .route(
            "/v2/{namespace}/{model}/blobs/uploads/{id}",
            axum::routing::patch(registry::upload::patch).put(registry::upload::finish),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Innermost first: limits, then the key, the host guard, the log line (which
        // sees every answer, refusals included), CORS (answers preflights itself).
        .layer(DefaultBodyLimit::max(state.config.body_limit()))
        .layer(from_fn_with_state(state.clone(), limits::cap_request))
        .layer(from_fn_with_state(state.config.clone(), auth::require_key))
        .layer(from_fn_with_state(
            state.config.clone(),
            security::guard_hosts,
        ))
        .layer(from_fn_with_state(state.clone(), access_log::observe))
        .layer(security::cors(&state.config))
        .with_state(state)
}

/// Unknown routes: gin's text, in the route's JSON error shape.
async fn not_found(req: Request) -> Response {
    let shape = error::ErrorShape::of_path(req.uri().path());
    shape.response(&ApiError::NotFound("404 page not found".into()))
}

/// A route called with a method it does not take: gin's text, as JSON.
async fn method_not_allowed(req: Request) -> Response {
    let shape = error::ErrorShape::of_path(req.uri().path());
    shape.response(&ApiError::MethodNotAllowed)
}

#[cfg(test)]
mod tests;
