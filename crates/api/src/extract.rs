//! Our JSON extractor: like axum's `Json`, but every rejection is an [`ApiError`] with
//! Ollama's wording (an empty body is `missing request body`), the offending field is
//! named in type errors, and no `Content-Type` header is required (Ollama's clients and
//! curl's `-d` do not always send `application/json`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!(
                    "request body too large: {} (WICK_MAX_BODY_BYTES)",
                    e.body_text()
                ))
            } else {
                ApiError::BadJson(e.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parse a request body. Like Go's `json.Decoder`, only the first JSON value counts.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MissingBody);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::BadJson(inner.to_string())
        } else {
            ApiError::BadJson(format!("invalid value for \"{path}\": {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct T {
        #[allow(dead_code)]
        stream: Option<bool>,
    }

    #[test]
    fn errors() {
        assert!(matches!(parse_json::<T>(b""), Err(ApiError::MissingBody)));
        assert!(matches!(
            parse_json::<T>(b" \n"),
            Err(ApiError::MissingBody)
        ));
        let e = parse_json::<T>(b"{\"stream\": 3}").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid value for \"stream\""),
            "{e}"
        );
        let e = parse_json::<T>(b"{\"stream\": ").unwrap_err();
        assert!(matches!(e, ApiError::BadJson(_)), "{e}");
        assert!(parse_json::<T>(b"{} trailing").is_ok());
    }
}
