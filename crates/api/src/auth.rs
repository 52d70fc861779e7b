//! The optional API key (`WICK_API_KEY`): when set, every route but `GET/HEAD /` and
//! `/api/version` requires `Authorization: Bearer <key>`; others get 401 in the
//! route's error shape (Ollama's `{"error": "..."}`, OpenAI's under `/v1/`).
//!
//! Keys are compared in constant time over their SHA-256 digests, so neither the
//! content nor the length of the key leaks through response timing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorShape};
use crate::ApiConfig;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// `None` for an empty or blank key (no key: the API is open).
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_string()))
    }

    /// Whether `given` is this key, in time independent of both.
    pub fn matches(&self, given: &str) -> bool {
        let want = Sha256::digest(self.0.as_bytes());
        let got = Sha256::digest(given.as_bytes());
        want.ct_eq(&got).into()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Routes anyone may call: health checks and the version.
fn is_open(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && (path == "/" || path == "/api/version")
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The middleware.
pub(crate) async fn require_key(
    State(config): State<Arc<ApiConfig>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = &config.api_key else {
        return next.run(req).await;
    };
    if is_open(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let reason = match bearer_token(req.headers()) {
        Some(token) if key.matches(token) => return next.run(req).await,
        Some(_) => "invalid API key",
        None => "missing API key: send it as \"Authorization: Bearer <key>\"",
    };
    let shape = ErrorShape::of_path(req.uri().path());
    let mut resp = shape.response(&ApiError::Unauthorized(reason.to_string()));
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_by_content() {
        let key = ApiKey::new(" s3cret ").unwrap();
        assert!(key.matches("s3cret"));
        assert!(!key.matches("s3cre"));
        assert!(!key.matches("s3cret "));
        assert!(!key.matches("S3CRET"));
        assert!(!key.matches(""));
        assert!(ApiKey::new("").is_none());
        assert!(ApiKey::new("  ").is_none());
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn open_routes() {
        assert!(is_open(&Method::GET, "/"));
        assert!(is_open(&Method::HEAD, "/"));
        assert!(is_open(&Method::GET, "/api/version"));
        assert!(!is_open(&Method::POST, "/api/version"));
        assert!(!is_open(&Method::GET, "/api/tags"));
        assert!(!is_open(&Method::GET, "/metrics"));
    }
}
