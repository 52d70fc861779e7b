//! wick as a registry: the read side of the OCI/Docker v2 distribution protocol that
//! Ollama pulls over, so one wick pulls from another.
//!
//! `GET /v2/` answers `{}`; `GET|HEAD /v2/<namespace>/<model>/manifests/<tag>` serves the
//! manifest file as stored (its sha256 in `Docker-Content-Digest`);
//! `GET|HEAD /v2/<namespace>/<model>/blobs/<digest>` streams a blob, honouring a single
//! `Range` (resumed and ranged downloads); `GET /v2/<namespace>/<model>/tags/list` lists
//! the tags. A repository is the store's `registry.ollama.ai/<namespace>/<model>`, the
//! host a bare name gets. Errors use the registry's shape, `{"errors": [{"code",
//! "message"}]}`. The API key, when set, guards these routes like every other.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use wick_store::{Digest, ModelName, StoreError, DEFAULT_HOST, MEDIA_TYPE_MANIFEST};

use crate::AppState;

/// Bytes read from a blob file per chunk of the response body.
const CHUNK: usize = 256 * 1024;

/// What the registry side answers when it cannot serve a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("invalid digest")]
    DigestInvalid,
    #[error("the requested range cannot be satisfied")]
    RangeInvalid { size: u64 },
    #[error("pushing is not enabled on this server (WICK_REGISTRY_PUSH=1)")]
    Unsupported,
    #[error("invalid repository name")]
    NameInvalid,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("manifest invalid")]
    ManifestInvalid,
    #[error("blob unknown to registry")]
    ManifestBlobUnknown,
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    fn code(&self) -> &'static str {
        match self {
            RegistryError::NameUnknown => "NAME_UNKNOWN",
            RegistryError::ManifestUnknown => "MANIFEST_UNKNOWN",
            RegistryError::BlobUnknown => "BLOB_UNKNOWN",
            RegistryError::DigestInvalid => "DIGEST_INVALID",
            RegistryError::RangeInvalid { .. } => "RANGE_INVALID",
            RegistryError::Unsupported => "UNSUPPORTED",
            RegistryError::NameInvalid => "NAME_INVALID",
            RegistryError::UploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            RegistryError::ManifestInvalid => "MANIFEST_INVALID",
            RegistryError::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            RegistryError::Internal(_) => "UNKNOWN",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            RegistryError::NameUnknown
            | RegistryError::ManifestUnknown
            | RegistryError::BlobUnknown
            | RegistryError::UploadUnknown => StatusCode::NOT_FOUND,
            RegistryError::DigestInvalid
            | RegistryError::NameInvalid
            | RegistryError::ManifestInvalid
            | RegistryError::ManifestBlobUnknown => StatusCode::BAD_REQUEST,
            RegistryError::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if let RegistryError::Internal(e) = &self {
            tracing::error!(error = %e, "registry request failed");
        }
        let body = json!({"errors": [{"code": self.code(), "message": self.to_string()}]});
        let mut response = (self.status(), Json(body)).into_response();
        if let RegistryError::RangeInvalid { size } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(CONTENT_RANGE, v);
            }
        }
        response
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Internal(e.to_string())
}

/// Store work off the async threads.
async fn blocking_io<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(internal)
}

/// `GET /v2/`: the protocol's version check.
pub(crate) async fn root() -> Json<serde_json::Value> {
    Json(json!({}))
}

/// The store name a repository path and tag stand for.
fn repository(namespace: &str, model: &str, tag: &str) -> Result<ModelName> {
    ModelName::from_parts(DEFAULT_HOST, namespace, model, tag)
        .map_err(|_| RegistryError::NameUnknown)
}

/// `GET|HEAD /v2/{namespace}/{model}/manifests/{reference}` (a tag).
pub(crate) async fn manifest(
    State(state): State<AppState>,
    Path((namespace, model, reference)): Path<(String, String, String)>,
) -> Result<Response> {
    let name = repository(&namespace, &model, &reference)?;
    let store = state.store.clone();
    let bytes = blocking_io(move || store.manifest_bytes(&name)).await?;
    let bytes = match bytes {
        Ok((bytes, _)) => bytes,
        Err(StoreError::NotFound(_) | StoreError::InvalidName(_)) => {
            return Err(RegistryError::ManifestUnknown)
        }
        Err(e) => return Err(internal(e)),
    };
    let digest = Digest::of_bytes(&bytes);
    Ok((
        [
            (CONTENT_TYPE, MEDIA_TYPE_MANIFEST.to_string()),
            (
                axum::http::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /v2/{namespace}/{model}/tags/list`.
pub(crate) async fn tags(
    State(state): State<AppState>,
    Path((namespace, model)): Path<(String, String)>,
) -> Result<Response> {
    let probe = repository(&namespace, &model, "latest")?;
    let store = state.store.clone();
    let listed = blocking_io(move || store.list()).await?.map_err(internal)?;
    let mut tags: Vec<String> = listed
        .iter()
        .filter(|m| {
            m.name.host().eq_ignore_ascii_case(probe.host())
                && m.name.namespace().eq_ignore_ascii_case(probe.namespace())
                && m.name.model().eq_ignore_ascii_case(probe.model())
        })
        .map(|m| m.name.tag().to_string())
        .collect();
    if tags.is_empty() {
        return Err(RegistryError::NameUnknown);
    }
    tags.sort();
    Ok(Json(json!({"name": format!("{namespace}/{model}"), "tags": tags})).into_response())
}

/// `GET|HEAD /v2/{namespace}/{model}/blobs/{digest}`, whole or one `Range`.
pub(crate) async fn blob(
    State(state): State<AppState>,
    Path((namespace, model, digest)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    repository(&namespace, &model, "latest")?;
    let digest = Digest::parse(&digest).map_err(|_| RegistryError::DigestInvalid)?;
    let path = state.store.blob_path(&digest);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::BlobUnknown)
        }
        Err(e) => return Err(internal(e)),
    };
    let size = file.metadata().await.map_err(internal)?.len();
    let range = match headers.get(RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) => Some(parse_range(spec, size).ok_or(RegistryError::RangeInvalid { size })?),
        None => None,
    };
    let (start, end) = range.unwrap_or((0, size));
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await.map_err(internal)?;
    }
    let body = Body::from_stream(read_chunks(file, end - start));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("docker-content-digest", v);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            response.headers_mut().insert(CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// `len` bytes of `file` from where it stands, as a body stream.
fn read_chunks(
    file: tokio::fs::File,
    len: u64,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than its size",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range of a `size`-byte blob, as a
/// half-open `(start, end)`; `None` when it is malformed or outside the blob.
fn parse_range(spec: &str, size: u64) -> Option<(u64, u64)> {
    let spec = spec.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (size.checked_sub(n.min(size))?, size)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>().ok()?.checked_add(1)?.min(size)
        };
        (start, end)
    };
    (start < end && end <= size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-", 100), None);
    }
}
