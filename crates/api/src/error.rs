//! The one error type of the API. Every failure of a request becomes HTTP in exactly one
//! place, [`ApiError::status`], with Ollama's body `{"error": "..."}` and
//! `Content-Type: application/json`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use wick_scheduler::SchedError;
use wick_store::{ErrorKind, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body was empty (Ollama: `missing request body`).
    #[error("missing request body")]
    MissingBody,
    /// The body is not JSON, or a field has the wrong type.
    #[error("{0}")]
    BadJson(String),
    /// A field was checked and rejected; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// A request field or value wick does not implement yet.
    #[error("\"{0}\" is not supported yet")]
    Unsupported(&'static str),
    /// A model, blob or resource that does not exist, with Ollama's message.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sched(#[from] SchedError),
    /// A generation that failed after it was queued (the scheduler's event).
    #[error(transparent)]
    Generation(Arc<SchedError>),
    /// `WICK_API_KEY` is set and the request did not bring it: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The body is larger than `WICK_MAX_BODY_BYTES`: 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A method the route does not take: 405 (gin's text).
    #[error("405 method not allowed")]
    MethodNotAllowed,
    /// `WICK_REQUEST_TIMEOUT` passed before the answer was ready: 504.
    #[error("request timed out after {0:?} (WICK_REQUEST_TIMEOUT)")]
    Timeout(std::time::Duration),
    /// A whole route wick does not implement (pull/push without a registry): 501.
    #[error("{0}")]
    NotImplemented(String),
    /// Anything else that went wrong on our side.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error: the one place errors become HTTP.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingBody
            | ApiError::BadJson(_)
            | ApiError::BadRequest(_)
            | ApiError::Unsupported(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Store(e) => match e.kind() {
                ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Sched(e) => sched_status(e),
            ApiError::Generation(e) => sched_status(e),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    pub(crate) fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError::Internal(msg.to_string())
    }
}

fn sched_status(e: &SchedError) -> StatusCode {
    match e.kind() {
        wick_scheduler::ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        wick_scheduler::ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        wick_scheduler::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ErrorShape::Ollama.response(&self)
    }
}

/// Which error body a route speaks: Ollama's `{"error": "..."}`, or OpenAI's
/// `{"error": {"message", "type", "param", "code"}}` under `/v1/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    Ollama,
    OpenAi,
}

impl ErrorShape {
    pub fn of_path(path: &str) -> Self {
        if path == "/v1" || path.starts_with("/v1/") {
            ErrorShape::OpenAi
        } else {
            ErrorShape::Ollama
        }
    }

    /// The response for `e` in this shape (for errors raised outside the handlers:
    /// the key check, body limits, timeouts, unknown routes). Server errors are logged
    /// at once; every error's reason is in the request's log line.
    pub fn response(self, e: &ApiError) -> Response {
        let status = e.status();
        let msg = e.to_string();
        let msg = without_backtrace(&msg);
        if status.is_server_error() && !matches!(e, ApiError::Timeout(_)) {
            tracing::error!(error = %msg, "request failed");
        }
        match self {
            ErrorShape::Ollama => (status, error_body(msg)).into_response(),
            ErrorShape::OpenAi => {
                let (kind, code) = match status {
                    StatusCode::UNAUTHORIZED => ("invalid_request_error", Some("invalid_api_key")),
                    s if s.is_client_error() => ("invalid_request_error", None),
                    _ => ("api_error", None),
                };
                let body = serde_json::json!({ "error": {
                    "message": msg, "type": kind, "param": null, "code": code,
                }});
                (status, axum::Json(body)).into_response()
            }
        }
    }
}

/// Drop a backtrace that some errors (candle's, with `RUST_BACKTRACE` set) append to
/// their message: clients get the message only.
pub(crate) fn without_backtrace(msg: &str) -> &str {
    let cut = ["\n   0: ", "\nStack backtrace:", "\nstack backtrace:"]
        .iter()
        .filter_map(|m| msg.find(m))
        .min()
        .unwrap_or(msg.len());
    msg[..cut].trim_end()
}

/// `{"error": msg}` as a JSON response body (also used as the last NDJSON line of a
/// stream that fails after it started).
pub(crate) fn error_body(msg: &str) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "error": without_backtrace(msg) }))
}

pub(crate) type Result<T, E = ApiError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ApiError::MissingBody.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ApiError::Unsupported("format").to_string(),
            "\"format\" is not supported yet"
        );
        assert_eq!(
            ApiError::Sched(SchedError::QueueFull).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let engine = |e| ApiError::Generation(Arc::new(SchedError::Engine(e)));
        assert_eq!(
            engine(wick_engine::EngineError::InvalidRequest(
                "token id 9".into()
            ))
            .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            engine(wick_engine::EngineError::Internal("matmul".into())).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::Sched(SchedError::ShuttingDown).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::Store(StoreError::NotFound("x".into())).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::Store(StoreError::InvalidName("x".into())).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn backtraces_are_dropped() {
        let m = "invalid model file: x: gguf: short\n   0: candle_core::error::Error::bt\n   1: y";
        assert_eq!(without_backtrace(m), "invalid model file: x: gguf: short");
        assert_eq!(without_backtrace("plain"), "plain");
    }
}
