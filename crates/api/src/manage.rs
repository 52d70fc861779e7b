//! Health, version and model management: `/`, `/api/version`, `/api/tags`,
//! `/api/ps`, `/api/copy`, `/api/delete`, and the registry routes wick cannot serve.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use wick_store::{go_quote, ModelName, StoreError};

use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models::blocking;
use crate::wire::{self, Details};
use crate::{AppState, OLLAMA_VERSION};

pub(crate) async fn root() -> &'static str {
    "Ollama is running"
}

pub(crate) async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": OLLAMA_VERSION }))
}

#[derive(Debug, Serialize)]
pub(crate) struct ListedModel {
    name: String,
    model: String,
    modified_at: String,
    size: u64,
    digest: String,
    details: Details,
}

#[derive(Debug, Serialize)]
pub(crate) struct TagsResponse {
    models: Vec<ListedModel>,
}

pub(crate) async fn tags(State(state): State<AppState>) -> Result<Json<TagsResponse>> {
    let store = state.store.clone();
    let models = blocking(move || {
        let mut out = Vec::new();
        for m in store.list()? {
            // The config blob gives `details`; a model whose config cannot be read is
            // still listed, with what the manifest says.
            let (config, parent) = match store.resolve(&m.name) {
                Ok(r) => (r.config, r.parent_model),
                Err(e) => {
                    tracing::warn!(model = %m.name, error = %e, "listing a model without details");
                    (Default::default(), None)
                }
            };
            let name = m.name.display_shortest();
            out.push(ListedModel {
                model: name.clone(),
                name,
                modified_at: wire::go_time(&m.modified_at),
                size: m.size,
                digest: m.digest_hex,
                details: Details::from_config(&config, parent.as_deref()),
            });
        }
        Ok(out)
    })
    .await?;
    Ok(Json(TagsResponse { models }))
}

#[derive(Debug, Serialize)]
pub(crate) struct RunningModel {
    name: String,
    model: String,
    size: u64,
    digest: String,
    details: Details,
    expires_at: String,
    size_vram: u64,
    context_length: usize,
}

pub(crate) async fn ps(State(state): State<AppState>) -> Result<Json<serde_json::Value>> {
    let running = state.scheduler.running();
    let store = state.store.clone();
    let models = blocking(move || {
        Ok(running
            .into_iter()
            .map(|r| {
                let details = ModelName::parse(&r.name)
                    .ok()
                    .and_then(|n| store.resolve(&n).ok())
                    .map(|m| Details::from_config(&m.config, m.parent_model.as_deref()))
                    .unwrap_or_default();
                RunningModel {
                    model: r.name.clone(),
                    name: r.name,
                    size: r.size,
                    digest: r.digest,
                    details,
                    expires_at: expires_at(r.expires_at, r.forever, &chrono::Local),
                    size_vram: r.size_vram,
                    context_length: r.context_length,
                }
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(serde_json::json!({ "models": models })))
}

/// `expires_at` as Ollama prints it: Go's `time.Time` in JSON, local time with its
/// offset and nanoseconds (`2026-12-02T18:40:12.123456789+01:00`); a model kept
/// forever expires at `time.Now().Add(math.MaxInt64)`, as in Ollama.
fn expires_at<Tz: TimeZone>(at: Option<DateTime<Utc>>, forever: bool, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let at = match (forever, at) {
        (false, Some(at)) => at,
        _ => Utc::now() + chrono::Duration::nanoseconds(i64::MAX),
    };
    wire::go_time(&at.with_timezone(tz))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CopyRequest {
    source: Option<String>,
    destination: Option<String>,
}

pub(crate) async fn copy(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CopyRequest>,
) -> Result<StatusCode> {
    let source = req.source.unwrap_or_default();
    let destination = req.destination.unwrap_or_default();
    let src = ModelName::parse(&source)
        .map_err(|_| ApiError::bad(format!("source {} is invalid", go_quote(&source))))?;
    let dst = ModelName::parse(&destination)
        .map_err(|_| ApiError::bad(format!("destination {} is invalid", go_quote(&destination))))?;
    let store = state.store.clone();
    blocking(move || match store.copy(&src, &dst) {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound(_)) => Err(ApiError::NotFound(format!(
            "model {} not found",
            go_quote(&source)
        ))),
        Err(e) => Err(e.into()),
    })
    .await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteRequest {
    model: Option<String>,
    name: Option<String>,
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DeleteRequest>,
) -> Result<StatusCode> {
    let name = wire::model_name(req.model.as_deref(), req.name.as_deref())?;
    let store = state.store.clone();
    let scheduler = state.scheduler.clone();
    blocking(move || {
        let listed = store.manifest(&name)?;
        let report = store.delete(&name)?;
        // A deleted model must not keep running, unless another name (a copy) still
        // has the same manifest: requests by that name go on using the loaded model.
        let still_named = store
            .list()
            .map(|all| all.iter().any(|m| m.digest_hex == listed.digest_hex))
            .unwrap_or(false);
        if !still_named {
            scheduler.unload(&listed.digest_hex);
        }
        tracing::info!(model = %name, blobs_removed = report.blobs_removed, "model deleted");
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    #[test]
    fn expires_at_is_local_time_with_its_offset() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 17, 40, 12).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let paris = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(
            expires_at(Some(at), false, &paris),
            "2026-12-02T18:40:12.123456789+01:00"
        );
        let new_york = FixedOffset::west_opt(5 * 3600).unwrap();
        assert_eq!(
            expires_at(Some(at), false, &new_york),
            "2026-12-02T12:40:12.123456789-05:00"
        );
        // Go trims trailing zeros of the fraction and writes a zero offset as `Z`.
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 17, 40, 12).unwrap()
            + chrono::Duration::milliseconds(500);
        assert_eq!(expires_at(Some(at), false, &Utc), "2026-12-02T17:40:12.5Z");
        // Kept forever: about 292 years from now, in the local zone.
        let forever = expires_at(None, true, &paris);
        let year: i32 = forever[..4].parse().unwrap();
        assert!(year >= 2026 + 292, "{forever}");
        assert!(forever.ends_with("+01:00"), "{forever}");
    }
}
