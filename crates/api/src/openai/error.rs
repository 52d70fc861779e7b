//! OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, over the
//! API's one error type; and the check that a request names no field wick does not
//! implement (a 400 naming it, never a silent drop).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::{without_backtrace, ApiError};

/// An [`ApiError`] in OpenAI's body shape, with the request field it is about.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    pub error: ApiError,
    pub param: Option<String>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        OpenAiError { error, param: None }
    }
}

impl OpenAiError {
    /// A 400 about request field `param`.
    pub fn invalid(param: &str, msg: impl Into<String>) -> Self {
        OpenAiError {
            error: ApiError::bad(msg),
            param: Some(param.to_string()),
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        let kind = match self.error.status() {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        json!({ "error": {
            "message": without_backtrace(&self.error.to_string()),
            "type": kind,
            "param": self.param,
            "code": null,
        }})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        if status.is_server_error() {
            tracing::error!(error = %self.error, "request failed");
        } else {
            tracing::debug!(error = %self.error, %status, "request rejected");
        }
        (status, Json(self.body())).into_response()
    }
}

pub(crate) type OaResult<T> = std::result::Result<T, OpenAiError>;

/// Reject the fields of a request that no known field took: OpenAI fields wick does
/// not implement are "not supported", anything else is unrecognized (as OpenAI
/// answers). A `null` value is the same as an absent field and passes.
pub(crate) fn reject_unknown(rest: &Map<String, Value>, unsupported: &[&str]) -> OaResult<()> {
    let mut names: Vec<&String> = rest
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k)
        .collect();
    names.sort();
    let Some(name) = names.first() else {
        return Ok(());
    };
    let msg = if unsupported.contains(&name.as_str()) {
        format!("\"{name}\" is not supported")
    } else {
        format!("unrecognized request argument supplied: \"{name}\"")
    };
    Err(OpenAiError::invalid(name, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named() {
        let rest: Map<String, Value> =
            serde_json::from_value(json!({"logit_bias": {"1": 2}, "zz": null})).unwrap();
        let e = reject_unknown(&rest, &["logit_bias"]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
        assert_eq!(
            e.body()["error"]["message"],
            "\"logit_bias\" is not supported"
        );
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        let rest: Map<String, Value> = serde_json::from_value(json!({"bogus": 1})).unwrap();
        let e = reject_unknown(&rest, &[]).unwrap_err();
        assert!(e.body()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unrecognized request argument supplied: \"bogus\""));
        assert!(reject_unknown(&Map::new(), &[]).is_ok());
    }
}
