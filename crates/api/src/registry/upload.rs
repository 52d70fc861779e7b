//! wick as a registry, the write side (`WICK_REGISTRY_PUSH=1`; without it every upload
//! route is a 405 `UNSUPPORTED`, and with `WICK_API_KEY` set the key guards them like
//! every route):
//!
//! `POST /v2/<ns>/<model>/blobs/uploads/` opens an upload session (202, `Location`);
//! `PATCH <location>` appends a chunk (202, `Range: 0-<last>`); `PUT <location>?digest=`
//! appends an optional last chunk, checks the digest and commits the blob (201);
//! `PUT /v2/<ns>/<model>/manifests/<tag>` writes the manifest once every blob it names
//! is in the store (201). A blob is renamed into place only when its digest checks out
//! and a manifest only when its blobs are there, so an interrupted push leaves nothing
//! visible.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{LOCATION, RANGE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use wick_store::{Digest, Manifest, ModelName, StoreError, Upload, DEFAULT_HOST};

use super::serve::RegistryError;
use crate::AppState;

/// Open upload sessions by id.
#[derive(Clone, Default)]
pub(crate) struct Uploads(Arc<Mutex<HashMap<String, Session>>>);

/// One upload: its chunks are written in order, each off the async threads.
type Session = Arc<Mutex<Upload>>;

impl Uploads {
    fn insert(&self, id: String, upload: Upload) {
        self.lock().insert(id, Arc::new(Mutex::new(upload)));
    }

    fn get(&self, id: &str) -> Option<Session> {
        self.lock().get(id).cloned()
    }

    fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Internal(e.to_string())
}

fn require_push(state: &AppState) -> Result<()> {
    if state.config.registry_push {
        Ok(())
    } else {
        Err(RegistryError::Unsupported)
    }
}

fn repository(namespace: &str, model: &str, tag: &str) -> Result<ModelName> {
    ModelName::from_parts(DEFAULT_HOST, namespace, model, tag)
        .map_err(|_| RegistryError::NameInvalid)
}

fn session_location(namespace: &str, model: &str, id: &str) -> String {
    format!("/v2/{namespace}/{model}/blobs/uploads/{id}")
}

/// `POST /v2/{namespace}/{model}/blobs/uploads/`.
pub(crate) async fn start(
    State(state): State<AppState>,
    Path((namespace, model)): Path<(String, String)>,
) -> Result<Response> {
    require_push(&state)?;
    repository(&namespace, &model, "latest")?;
    let store = state.store.clone();
    let upload = tokio::task::spawn_blocking(move || store.upload())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let id = format!("{:032x}", rand::random::<u128>());
    state.uploads.insert(id.clone(), upload);
    let mut r = StatusCode::ACCEPTED.into_response();
    set(&mut r, LOCATION, &session_location(&namespace, &model, &id));
    set(&mut r, RANGE, "0-0");
    set(&mut r, "docker-upload-uuid", &id);
    Ok(r)
}

/// `PATCH /v2/{namespace}/{model}/blobs/uploads/{id}`: one more chunk.
pub(crate) async fn patch(
    State(state): State<AppState>,
    Path((namespace, model, id)): Path<(String, String, String)>,
    body: Body,
) -> Result<Response> {
    require_push(&state)?;
    let session = state.uploads.get(&id).ok_or(RegistryError::UploadUnknown)?;
    let written = append(&session, body).await?;
    let mut r = StatusCode::ACCEPTED.into_response();
    set(&mut r, LOCATION, &session_location(&namespace, &model, &id));
    set(&mut r, RANGE, &format!("0-{}", written.saturating_sub(1)));
    set(&mut r, "docker-upload-uuid", &id);
    Ok(r)
}

#[derive(Deserialize)]
pub(crate) struct DigestQuery {
    digest: Option<String>,
}

/// `PUT /v2/{namespace}/{model}/blobs/uploads/{id}?digest=`: the last chunk, if any,
/// then the digest check and the commit.
pub(crate) async fn finish(
    State(state): State<AppState>,
    Path((namespace, model, id)): Path<(String, String, String)>,
    Query(q): Query<DigestQuery>,
    body: Body,
) -> Result<Response> {
    require_push(&state)?;
    let digest = q
        .digest
        .as_deref()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or(RegistryError::DigestInvalid)?;
    let session = state
        .uploads
        .remove(&id)
        .ok_or(RegistryError::UploadUnknown)?;
    append(&session, body).await?;
    let upload = Arc::try_unwrap(session)
        .map_err(|_| internal("the upload is still being written"))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let committed = digest.clone();
    match tokio::task::spawn_blocking(move || upload.finish(&committed))
        .await
        .map_err(internal)?
    {
        Ok(size) => tracing::info!(digest = %digest, size, "blob pushed"),
        Err(StoreError::DigestMismatch { .. }) => return Err(RegistryError::DigestInvalid),
        Err(e) => return Err(internal(e)),
    }
    let mut r = StatusCode::CREATED.into_response();
    set(
        &mut r,
        LOCATION,
        &format!("/v2/{namespace}/{model}/blobs/{digest}"),
    );
    set(&mut r, "docker-content-digest", &digest.to_string());
    Ok(r)
}

/// `PUT /v2/{namespace}/{model}/manifests/{tag}`.
pub(crate) async fn put_manifest(
    State(state): State<AppState>,
    Path((namespace, model, tag)): Path<(String, String, String)>,
    bytes: Bytes,
) -> Result<Response> {
    require_push(&state)?;
    let name = repository(&namespace, &model, &tag)?;
    let manifest = Manifest::from_bytes(&bytes).map_err(|_| RegistryError::ManifestInvalid)?;
    let mut digests = vec![manifest.config.digest.clone()];
    digests.extend(manifest.layers.iter().map(|l| l.digest.clone()));
    let store = state.store.clone();
    let body = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        for d in &digests {
            let d = Digest::parse(d).map_err(|_| RegistryError::ManifestInvalid)?;
            if !store.has_blob(&d) {
                return Err(RegistryError::ManifestBlobUnknown);
            }
        }
        store.write_manifest_bytes(&name, &body).map_err(internal)
    })
    .await
    .map_err(internal)??;
    let digest = Digest::of_bytes(&bytes);
    tracing::info!(model = %format!("{namespace}/{model}:{tag}"), "manifest pushed");
    let mut r = StatusCode::CREATED.into_response();
    set(
        &mut r,
        LOCATION,
        &format!("/v2/{namespace}/{model}/manifests/{tag}"),
    );
    set(&mut r, "docker-content-digest", &digest.to_string());
    Ok(r)
}

/// Stream a request body onto an upload session; its size afterwards.
async fn append(session: &Session, body: Body) -> Result<u64> {
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| internal(format!("reading the upload: {e}")))?;
        let s = session.clone();
        tokio::task::spawn_blocking(move || {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(&chunk)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
    }
    Ok(session
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .bytes_written())
}

fn set(r: &mut Response, name: impl axum::http::header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}
