//! The registry protocol, both sides: wick serves its store to other wicks and Ollamas
//! ([`serve`]), takes pushes when allowed ([`upload`]) and pulls from any registry
//! ([`pull`]).

mod client;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod serve;
pub(crate) mod upload;

use serde::Deserialize;
use wick_store::ModelName;

use crate::error::{ApiError, Result};

/// The body of `/api/pull` and `/api/push`.
#[derive(Debug, Deserialize)]
pub(crate) struct TransferRequest {
    model: Option<String>,
    /// Ollama's older spelling of `model`.
    name: Option<String>,
    #[serde(default)]
    pub(crate) insecure: bool,
    pub(crate) stream: Option<bool>,
    username: Option<String>,
    password: Option<String>,
}

impl TransferRequest {
    /// The model named, after refusing credentials in the body (Ollama ignores them;
    /// here a field either works or is a 400).
    pub(crate) fn model_name(&self) -> Result<ModelName> {
        for (field, value) in [("username", &self.username), ("password", &self.password)] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad(format!(
                    "\"{field}\": registry credentials in the request are not supported; \
                     the registry's bearer-token challenge is answered anonymously"
                )));
            }
        }
        let given = self
            .model
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or_default();
        ModelName::parse(given).map_err(|_| ApiError::bad("invalid model name"))
    }
}
