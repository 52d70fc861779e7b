//! `POST /api/push`: a model from the store to a registry, as Ollama pushes: the model
//! must already carry the destination's name (`wick cp` it first), each blob the
//! registry lacks is uploaded (`HEAD` to check, `POST` an upload session, `PUT` the
//! bytes with their digest; a blob over 32 MiB as a chunked upload, `PATCH` parts with
//! their `Content-Range` and an empty closing `PUT`), then the manifest.
//!
//! Progress is Ollama's: `retrieving manifest`, per layer `pushing <12 hex>` with
//! `digest`, `total` and `completed`, `pushing manifest`, `success`.

use axum::extract::State;
use axum::response::Response;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use wick_store::{Layer, Manifest, Store, StoreError, MEDIA_TYPE_MANIFEST};

use super::client::{ClientError, Registry, Target};
use super::pull::{respond, Progress};
use super::TransferRequest;
use crate::error::Result;
use crate::extract::ApiJson;
use crate::AppState;

/// Bytes read from a blob file per chunk of an upload body.
const CHUNK: usize = 1 << 20;
/// How much of a layer must go out before another progress line is sent.
const PROGRESS_STEP: u64 = 4 << 20;
/// Blobs above this go up as a chunked upload of parts this size.
const UPLOAD_PART: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error("{0}")]
    Registry(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<ClientError> for PushError {
    fn from(e: ClientError) -> Self {
        PushError::Registry(e.to_string())
    }
}

impl From<reqwest::Error> for PushError {
    fn from(e: reqwest::Error) -> Self {
        PushError::Registry(e.to_string())
    }
}

pub(crate) async fn push(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<Response> {
    let name = req.model_name()?;
    // The model must exist before anything streams: a 404 with Ollama's message.
    let store = state.store.clone();
    let lookup = name.clone();
    let (manifest_bytes, _) =
        crate::models::blocking(move || Ok(store.manifest_bytes(&lookup)?)).await?;
    let target = Target::new(&name, req.insecure);
    let (tx, rx) = mpsc::channel::<Value>(64);
    let store = state.store.clone();
    let job = tokio::spawn(async move {
        let progress = Progress {
            tx,
            verb: "pushing",
        };
        match run(&store, &target, manifest_bytes, &progress).await {
            Ok(()) => {
                tracing::info!(model = %name.display_shortest(), "model pushed");
                progress.send(json!({"status": "success"})).await;
                Ok(())
            }
            Err(e) => {
                tracing::info!(model = %name.display_shortest(), error = %e, "push failed");
                Err(e)
            }
        }
    });
    respond(req.stream.unwrap_or(true), rx, job).await
}

async fn run(
    store: &Store,
    target: &Target,
    manifest_bytes: Vec<u8>,
    progress: &Progress,
) -> std::result::Result<(), PushError> {
    progress
        .send(json!({"status": "retrieving manifest"}))
        .await;
    let manifest = Manifest::from_bytes(&manifest_bytes)
        .map_err(|e| PushError::Registry(format!("reading the manifest: {e}")))?;
    let registry = Registry::new()?;
    let mut layers = manifest.layers.clone();
    layers.push(manifest.config.clone());
    for layer in &layers {
        upload(store, &registry, target, layer, progress).await?;
    }
    progress.send(json!({"status": "pushing manifest"})).await;
    let resp = registry
        .authorized(Method::PUT, &target.manifest_url())
        .await
        .header(CONTENT_TYPE, MEDIA_TYPE_MANIFEST)
        .body(manifest_bytes)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(PushError::Registry(
            registry_error("pushing manifest", resp).await,
        ));
    }
    Ok(())
}

/// One blob, unless the registry already has it.
async fn upload(
    store: &Store,
    registry: &Registry,
    target: &Target,
    layer: &Layer,
    progress: &Progress,
) -> std::result::Result<(), PushError> {
    let url = target.blob_url(&layer.digest);
    // The HEAD also answers the registry's token challenge for the requests after it.
    let head = registry.send_small(Method::HEAD, &url, &[]).await?;
    if head.status().is_success() {
        progress.layer(layer, layer.size).await;
        return Ok(());
    }
    if head.status() != StatusCode::NOT_FOUND {
        return Err(PushError::Registry(format!(
            "checking {}: {}",
            layer.digest,
            head.status()
        )));
    }
    progress.layer(layer, 0).await;
    let start = registry
        .authorized(Method::POST, &target.uploads_url())
        .await
        .header(CONTENT_LENGTH, 0)
        .send()
        .await?;
    if start.status() != StatusCode::ACCEPTED {
        return Err(PushError::Registry(
            registry_error("starting the upload", start).await,
        ));
    }
    let location = start
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| target.absolute(l))
        .ok_or_else(|| PushError::Registry("the registry gave no upload location".into()))?;
    let digest = layer.parsed_digest()?;
    let path = store.blob_path(&digest);
    if layer.size > UPLOAD_PART {
        return upload_in_parts(registry, target, layer, &path, location, progress).await;
    }

    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| PushError::Registry(format!("reading {}: {e}", path.display())))?;
    let tx = progress.tx.clone();
    let layer_json = (layer.digest.clone(), layer.size, progress.verb);
    let body = futures::stream::unfold(
        (file, 0u64, 0u64, tx),
        move |(mut file, sent, reported, tx)| {
            let (digest, total, verb) = layer_json.clone();
            async move {
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let sent = sent + n as u64;
                        let reported = if sent - reported >= PROGRESS_STEP || sent == total {
                            let short = digest.get(7..19).unwrap_or(&digest).to_string();
                            let _ = tx
                                .send(json!({"status": format!("{verb} {short}"),
                                    "digest": digest, "total": total, "completed": sent}))
                                .await;
                            sent
                        } else {
                            reported
                        };
                        Some((Ok::<_, std::io::Error>(buf), (file, sent, reported, tx)))
                    }
                    Err(e) => Some((Err(e), (file, sent, reported, tx))),
                }
            }
        },
    );
    finish_upload(
        registry,
        &location,
        layer,
        layer.size,
        reqwest::Body::wrap_stream(body),
    )
    .await
}

/// The closing `PUT <location>?digest=` of an upload, with what is left of the bytes.
async fn finish_upload(
    registry: &Registry,
    location: &str,
    layer: &Layer,
    len: u64,
    body: reqwest::Body,
) -> std::result::Result<(), PushError> {
    let separator = if location.contains('?') { '&' } else { '?' };
    let finish = format!("{location}{separator}digest={}", layer.digest);
    let resp = registry
        .authorized(Method::PUT, &finish)
        .await
        .header(CONTENT_LENGTH, len)
        .body(body)
        .send()
        .await?;
    if resp.status() != StatusCode::CREATED {
        return Err(PushError::Registry(
            registry_error(&format!("pushing {}", layer.digest), resp).await,
        ));
    }
    Ok(())
}

/// A big blob as a chunked upload: `PATCH` parts of `UPLOAD_PART` bytes with their
/// `Content-Range`, each to the location the registry last gave, then an empty
/// `PUT ?digest=`. A registry that rejects a part fails the push by its message.
async fn upload_in_parts(
    registry: &Registry,
    target: &Target,
    layer: &Layer,
    path: &std::path::Path,
    mut location: String,
    progress: &Progress,
) -> std::result::Result<(), PushError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| PushError::Registry(format!("reading {}: {e}", path.display())))?;
    let mut sent = 0u64;
    while sent < layer.size {
        let len = (layer.size - sent).min(UPLOAD_PART);
        let mut part = vec![0u8; len as usize];
        file.read_exact(&mut part)
            .await
            .map_err(|e| PushError::Registry(format!("reading {}: {e}", path.display())))?;
        let resp = registry
            .authorized(Method::PATCH, &location)
            .await
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_RANGE, format!("{sent}-{}", sent + len - 1))
            .header(CONTENT_LENGTH, len)
            .body(part)
            .send()
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(PushError::Registry(
                registry_error(&format!("pushing {}", layer.digest), resp).await,
            ));
        }
        if let Some(next) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
            location = target.absolute(next);
        }
        sent += len;
        progress.layer(layer, sent).await;
    }
    finish_upload(
        registry,
        &location,
        layer,
        0,
        reqwest::Body::from(Vec::new()),
    )
    .await
}

/// A registry's refusal as one line: its own message when it sent one.
async fn registry_error(what: &str, resp: reqwest::Response) -> String {
    let status = resp.status();
    let message = resp
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| {
            v["errors"][0]["message"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["error"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| status.to_string());
    format!("{what}: {message}")
}
