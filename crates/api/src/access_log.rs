//! One log line per request, written when its response body ends (so a stream's line
//! carries its whole duration and token counts): method, route template, path, status,
//! model, prompt and generated tokens, time to first token, total time, and the reason
//! of a rejection. Also counts requests for `/metrics`.
//!
//! Handlers note what they learn (the model, token counts, an error) on the request's
//! [`RequestRecord`], which [`observe`] makes reachable through a task-local for the
//! time the handler runs; a generation keeps its own handle for the streamed part.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::metrics::ServerMetrics;
use crate::AppState;

tokio::task_local! {
    static CURRENT: Arc<RequestRecord>;
}

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// What a request's handler learned, for its log line.
#[derive(Debug, Default)]
pub(crate) struct RequestRecord {
    fields: Mutex<Fields>,
}

#[derive(Debug, Default, Clone)]
struct Fields {
    model: Option<String>,
    prompt_tokens: Option<usize>,
    generated_tokens: Option<usize>,
    first_token: Option<Duration>,
    load: Option<Duration>,
    error: Option<String>,
}

impl RequestRecord {
    /// The record of the request being handled on this task, if any.
    pub fn current() -> Option<Arc<RequestRecord>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    fn with(&self, f: impl FnOnce(&mut Fields)) {
        f(&mut self.fields.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn model(&self, name: &str) {
        self.with(|f| f.model = Some(name.to_string()));
    }

    /// Add one generation's (or choice's) token counts.
    pub fn tokens(&self, prompt: usize, generated: usize) {
        self.with(|f| {
            f.prompt_tokens = Some(f.prompt_tokens.unwrap_or(0) + prompt);
            f.generated_tokens = Some(f.generated_tokens.unwrap_or(0) + generated);
        });
    }

    pub fn load(&self, took: Duration) {
        self.with(|f| f.load = Some(took));
    }

    pub fn first_token(&self, after: Duration) {
        self.with(|f| {
            f.first_token.get_or_insert(after);
        });
    }

    fn snapshot(&self) -> Fields {
        self.fields
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The middleware: run the request with a record, count it, and log it when its body
/// ends.
pub(crate) async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_string();
    let path = req.uri().path().to_string();
    let record = Arc::new(RequestRecord::default());
    let resp = CURRENT.scope(record.clone(), next.run(req)).await;
    let status = resp.status();
    state.metrics.count_request(&method, &route, status);
    let resp = if status.is_client_error() || status.is_server_error() {
        let (resp, reason) = error_reason(resp).await;
        record.with(|f| f.error = reason);
        resp
    } else {
        resp
    };
    let line = LogLine {
        metrics: state.metrics.clone(),
        method,
        route,
        path,
        status,
        started,
        record,
    };
    resp.map(|body| {
        Body::new(Logged {
            inner: body,
            _line: line,
        })
    })
}

/// Largest error body read back for its message.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The message of an error response (`{"error": "..."}` or OpenAI's
/// `{"error": {"message": "..."}}`), and the response rebuilt around the same bytes.
/// Streams and large bodies are left alone.
async fn error_reason(resp: Response) -> (Response, Option<String>) {
    let small = http_body::Body::size_hint(resp.body())
        .exact()
        .is_some_and(|n| n <= MAX_ERROR_BODY);
    if !small {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY as usize).await {
        Ok(b) => b,
        Err(e) => {
            return (
                Response::from_parts(parts, Body::empty()),
                Some(e.to_string()),
            )
        }
    };
    let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.as_str()
                .or_else(|| e.get("message")?.as_str())
                .map(str::to_string)
        })
        .or_else(|| {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            (!text.is_empty()).then_some(text)
        });
    (Response::from_parts(parts, Body::from(bytes)), reason)
}

/// Written when dropped: after the body's last frame, or when the client hung up.
struct LogLine {
    metrics: Arc<ServerMetrics>,
    method: Method,
    route: String,
    path: String,
    status: StatusCode,
    started: Instant,
    record: Arc<RequestRecord>,
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        self.metrics
            .observe_request(&self.method, &self.route, took);
        let f = self.record.snapshot();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            method = %self.method,
            route = %self.route,
            path = %self.path,
            status = self.status.as_u16(),
            model = f.model.as_deref(),
            prompt_tokens = f.prompt_tokens,
            generated_tokens = f.generated_tokens,
            load_ms = f.load.map(ms),
            first_token_ms = f.first_token.map(ms),
            duration_ms = ms(took),
            error = f.error.as_deref(),
            "request"
        );
    }
}

/// A response body that carries its request's log line until it is dropped.
struct Logged {
    inner: Body,
    _line: LogLine,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
