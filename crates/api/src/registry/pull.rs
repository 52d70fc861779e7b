//! `POST /api/pull`: a model from a registry into the store, over the OCI/Docker v2
//! protocol Ollama uses (the manifest by tag, each blob by digest; a bearer-token
//! challenge answered when the registry asks for one).
//!
//! Progress is Ollama's: `pulling manifest`, per layer `pulling <12 hex>` with `digest`,
//! `total` and `completed`, `verifying sha256 digest`, `writing manifest`, `success`.
//! Nothing half-written is ever visible: each blob downloads into a partial file under
//! a fixed name (an interrupted pull resumes from it with a `Range` request), every blob
//! is verified against its digest before it is renamed into place, and the manifest,
//! written last and atomically, is what makes the model exist. One download serves
//! concurrent pulls of the same blob: the others wait for it, reporting its progress
//! as their own, then find the blob in place. A pull holds one blob's turn at a time
//! (each blob is verified and committed before the next is taken), so two pulls
//! sharing blobs in different orders cannot wait on each other.
//!
//! A big blob downloads as several ranged requests at once (`PART_SIZE` each, up to
//! `PARTS_IN_FLIGHT`), written to the partial file in order as they arrive, so the
//! file always holds a prefix of the blob and resuming stays a matter of its length.
//! A registry that ignores ranges gets the one-stream download.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use reqwest::header::{ACCEPT, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use wick_store::{Digest, Layer, Manifest, ModelName, PartialBlob, Store, MEDIA_TYPE_MANIFEST};

use super::client::{ClientError, Registry, Target};
use super::TransferRequest;
use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::run::ndjson;
use crate::AppState;

/// Bytes gathered from the network before one write to the partial file.
const WRITE_BATCH: usize = 1 << 20;
/// How much a layer's `completed` must grow before another progress line is sent.
const PROGRESS_STEP: u64 = 4 << 20;
/// The size of one ranged part of a big blob.
const PART_SIZE: u64 = 16 << 20;
/// Ranged parts downloading (or done and waiting for their turn) at once; with
/// `PART_SIZE` this bounds the memory one pull holds.
const PARTS_IN_FLIGHT: usize = 4;

/// Why a pull failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("pull model manifest: file does not exist")]
    ManifestNotFound,
    #[error("{0}")]
    Registry(String),
    #[error("digest mismatch, file must be downloaded again: want {want}, got {got}")]
    Digest { want: String, got: String },
    #[error("{0}")]
    Store(#[from] wick_store::StoreError),
}

impl From<reqwest::Error> for PullError {
    fn from(e: reqwest::Error) -> Self {
        PullError::Registry(e.to_string())
    }
}

impl From<ClientError> for PullError {
    fn from(e: ClientError) -> Self {
        PullError::Registry(e.to_string())
    }
}

pub(crate) async fn pull(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<Response> {
    let name = req.model_name()?;
    let target = Target::new(&name, req.insecure);
    let (tx, rx) = mpsc::channel::<Value>(64);
    let store = state.store.clone();
    let job = tokio::spawn(async move {
        let progress = Progress {
            tx,
            verb: "pulling",
        };
        match run(&store, &name, &target, &progress).await {
            Ok(()) => {
                tracing::info!(model = %name.display_shortest(), "model pulled");
                progress.send(json!({"status": "success"})).await;
                Ok(())
            }
            Err(e) => {
                tracing::info!(model = %name.display_shortest(), error = %e, "pull failed");
                Err(e)
            }
        }
    });
    respond(req.stream.unwrap_or(true), rx, job).await
}

/// The answer of a pull or push: its progress lines as NDJSON (an error ends the
/// stream with Ollama's error line), or, not streamed, `{"status": "success"}` or the
/// error.
pub(crate) async fn respond<E: std::fmt::Display + Send + 'static>(
    stream: bool,
    rx: mpsc::Receiver<Value>,
    job: tokio::task::JoinHandle<std::result::Result<(), E>>,
) -> Result<Response> {
    if stream {
        let lines = futures::stream::unfold((rx, Some(job)), |(mut rx, job)| async move {
            if let Some(v) = rx.recv().await {
                return Some((line(&v), (rx, job)));
            }
            // The job has finished: an error ends the stream with Ollama's error line.
            match job?.await {
                Ok(Err(e)) => Some((line(&json!({"error": e.to_string()})), (rx, None))),
                Err(e) => Some((line(&json!({"error": e.to_string()})), (rx, None))),
                Ok(Ok(())) => None,
            }
        });
        return Ok(ndjson(Body::from_stream(
            lines.map(Ok::<_, std::convert::Infallible>),
        )));
    }
    drop(rx);
    match job.await {
        Ok(Ok(())) => Ok(Json(json!({"status": "success"})).into_response()),
        Ok(Err(e)) => Err(ApiError::internal(e.to_string())),
        Err(e) => Err(ApiError::internal(format!("task failed: {e}"))),
    }
}

fn line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Progress lines to the client; a client that went away does not stop the pull (what
/// it downloaded stays for the next one).
pub(crate) struct Progress {
    pub(crate) tx: mpsc::Sender<Value>,
    /// `pulling` or `pushing`.
    pub(crate) verb: &'static str,
}

impl Progress {
    pub(crate) async fn send(&self, v: Value) {
        let _ = self.tx.send(v).await;
    }

    pub(crate) async fn layer(&self, layer: &Layer, completed: u64) {
        let short = layer.digest.get(7..19).unwrap_or(&layer.digest);
        self.send(json!({
            "status": format!("{} {short}", self.verb),
            "digest": layer.digest,
            "total": layer.size,
            "completed": completed,
        }))
        .await;
    }
}

async fn run(
    store: &Store,
    name: &ModelName,
    target: &Target,
    progress: &Progress,
) -> std::result::Result<(), PullError> {
    let registry = Registry::new()?;
    progress.send(json!({"status": "pulling manifest"})).await;
    let resp = registry
        .get(
            &target.manifest_url(),
            &[(ACCEPT, MEDIA_TYPE_MANIFEST.to_string())],
        )
        .await?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => return Err(PullError::ManifestNotFound),
        s => return Err(PullError::Registry(format!("pull model manifest: {s}"))),
    }
    let claimed = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let manifest_bytes = resp.bytes().await?;
    if let Some(claimed) = claimed {
        let got = Digest::of_bytes(&manifest_bytes).to_string();
        if !claimed.eq_ignore_ascii_case(&got) {
            return Err(PullError::Digest { want: claimed, got });
        }
    }
    let manifest = Manifest::from_bytes(&manifest_bytes)
        .map_err(|e| PullError::Registry(format!("pull model manifest: {e}")))?;
    let mut layers = vec![manifest.config.clone()];
    layers.extend(manifest.layers.iter().cloned());

    for layer in &layers {
        let digest = layer.parsed_digest()?;
        let shared = in_flight(&digest);
        // Held until this blob is committed: a concurrent pull of it waits (showing
        // this download's progress), then finds it in place.
        let _turn = wait_turn(&shared, layer, progress).await;
        if blocking(store, move |s| Ok(s.has_blob(&digest))).await? {
            progress.layer(layer, layer.size).await;
            continue;
        }
        let report = LayerProgress {
            progress,
            layer,
            shared: &shared.completed,
        };
        let partial = download(store, &registry, target, &report).await?;
        commit(store, partial).await?;
    }

    // Every blob was verified against its digest as it was committed.
    progress
        .send(json!({"status": "verifying sha256 digest"}))
        .await;

    progress.send(json!({"status": "writing manifest"})).await;
    let name = name.clone();
    let bytes = manifest_bytes.to_vec();
    blocking(store, move |s| Ok(s.write_manifest_bytes(&name, &bytes)?)).await?;
    Ok(())
}

/// A complete partial file verified against its digest and renamed into place; on a
/// mismatch it is removed, so the next pull starts over.
async fn commit(store: &Store, partial: PartialBlob) -> std::result::Result<(), PullError> {
    let want = partial.expected().to_string();
    match blocking(store, move |_| Ok(partial.commit())).await? {
        Ok(_) => Ok(()),
        Err(wick_store::StoreError::DigestMismatch { got, .. }) => Err(PullError::Digest {
            want,
            got: got.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// One layer's progress: to this pull's client, and to the other pulls waiting on
/// the same blob.
struct LayerProgress<'a> {
    progress: &'a Progress,
    layer: &'a Layer,
    shared: &'a watch::Sender<u64>,
}

impl LayerProgress<'_> {
    async fn at(&self, completed: u64) {
        self.shared.send_replace(completed);
        self.progress.layer(self.layer, completed).await;
    }
}

/// One blob into its partial file, resuming from what an earlier pull left there.
/// Returns the partial file, complete but not yet verified.
async fn download(
    store: &Store,
    registry: &Registry,
    target: &Target,
    report: &LayerProgress<'_>,
) -> std::result::Result<PartialBlob, PullError> {
    let layer = report.layer;
    let digest = layer.parsed_digest()?;
    let mut partial = blocking(store, move |s| Ok(s.partial_blob(digest)?)).await?;
    if partial.offset() > layer.size {
        partial = blocking_partial(partial, |p| p.restart()).await?;
    }
    let offset = partial.offset();
    report.at(offset).await;
    if offset == layer.size {
        return Ok(partial);
    }
    if layer.size - offset >= 2 * PART_SIZE {
        match download_parts(registry, target, partial, report).await? {
            (p, true) => return Ok(p),
            (p, false) => partial = p, // no ranges: one stream from here
        }
    }
    let offset = partial.offset();
    let mut headers = Vec::new();
    if offset > 0 {
        headers.push((RANGE, format!("bytes={offset}-")));
    }
    let resp = registry
        .get(&target.blob_url(&layer.digest), &headers)
        .await?;
    match resp.status() {
        StatusCode::PARTIAL_CONTENT if offset > 0 => {}
        StatusCode::OK => {
            if offset > 0 {
                partial = blocking_partial(partial, |p| p.restart()).await?;
            }
        }
        s => {
            return Err(PullError::Registry(format!(
                "pulling {}: {s}",
                layer.digest
            )))
        }
    }
    let mut body = resp.bytes_stream();
    let mut buffer = Vec::with_capacity(WRITE_BATCH);
    let mut reported = partial.offset();
    loop {
        let chunk = body.next().await.transpose()?;
        let done = chunk.is_none();
        if let Some(c) = &chunk {
            buffer.extend_from_slice(c);
        }
        if buffer.len() >= WRITE_BATCH || (done && !buffer.is_empty()) {
            let data = std::mem::take(&mut buffer);
            partial = blocking_partial(partial, move |p| p.write_all(&data)).await?;
            if partial.offset() > layer.size {
                // Too much: what came is not this blob, so the next pull starts over.
                blocking_partial(partial, |p| p.restart()).await?;
                return Err(PullError::Registry(format!(
                    "pulling {}: the registry sent more than {} bytes",
                    layer.digest, layer.size
                )));
            }
            if partial.offset() - reported >= PROGRESS_STEP || done {
                reported = partial.offset();
                report.at(reported).await;
            }
        }
        if done {
            break;
        }
    }
    if partial.offset() != layer.size {
        return Err(PullError::Registry(format!(
            "pulling {}: got {} of {} bytes",
            layer.digest,
            partial.offset(),
            layer.size
        )));
    }
    Ok(partial)
}

/// The rest of a blob as ranged parts, `PARTS_IN_FLIGHT` at a time, appended to the
/// partial file in order. Gives the partial file back with `true` when it is complete,
/// `false` when the registry does not serve ranges (nothing written). On an error the
/// partial file keeps the parts written so far, for the next pull to resume from.
async fn download_parts(
    registry: &Registry,
    target: &Target,
    mut partial: PartialBlob,
    report: &LayerProgress<'_>,
) -> std::result::Result<(PartialBlob, bool), PullError> {
    let layer = report.layer;
    let url = target.blob_url(&layer.digest);
    let starts: Vec<u64> = (partial.offset()..layer.size)
        .step_by(PART_SIZE as usize)
        .collect();
    let fetch = |start: u64| {
        let end = (start + PART_SIZE).min(layer.size);
        let url = url.clone();
        async move {
            let resp = registry
                .get(&url, &[(RANGE, format!("bytes={start}-{}", end - 1))])
                .await?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT => {}
                s if s.is_success() => return Ok(None),
                s => {
                    return Err(PullError::Registry(format!(
                        "pulling {}: {s}",
                        layer.digest
                    )))
                }
            }
            let bytes = resp.bytes().await?;
            if bytes.len() as u64 != end - start {
                return Err(PullError::Registry(format!(
                    "pulling {}: a part of {} bytes came as {}",
                    layer.digest,
                    end - start,
                    bytes.len()
                )));
            }
            Ok(Some(bytes))
        }
    };
    let mut parts = futures::stream::iter(starts)
        .map(fetch)
        .buffered(PARTS_IN_FLIGHT);
    while let Some(part) = parts.next().await {
        let Some(bytes) = part? else {
            return Ok((partial, false));
        };
        partial = blocking_partial(partial, move |p| p.write_all(&bytes)).await?;
        report.at(partial.offset()).await;
    }
    Ok((partial, true))
}

/// Store work off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> std::result::Result<T, PullError> + Send + 'static,
) -> std::result::Result<T, PullError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| PullError::Registry(format!("worker task failed: {e}")))?
}

/// File work on a partial blob off the async threads; the blob comes back.
async fn blocking_partial(
    mut partial: PartialBlob,
    f: impl FnOnce(&mut PartialBlob) -> wick_store::Result<()> + Send + 'static,
) -> std::result::Result<PartialBlob, PullError> {
    tokio::task::spawn_blocking(move || f(&mut partial).map(|()| partial))
        .await
        .map_err(|e| PullError::Registry(format!("worker task failed: {e}")))?
        .map_err(PullError::from)
}

/// A blob's download, shared by every pull that wants it: the turn to download it,
/// and how far the download holding the turn has come.
struct InFlight {
    turn: tokio::sync::Mutex<()>,
    completed: watch::Sender<u64>,
}

/// The shared download state of one blob digest.
fn in_flight(digest: &Digest) -> Arc<InFlight> {
    static BLOBS: OnceLock<Mutex<HashMap<String, Arc<InFlight>>>> = OnceLock::new();
    let mut map = BLOBS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.retain(|_, b| Arc::strong_count(b) > 1);
    map.entry(digest.to_string())
        .or_insert_with(|| {
            Arc::new(InFlight {
                turn: tokio::sync::Mutex::new(()),
                completed: watch::channel(0).0,
            })
        })
        .clone()
}

/// Wait for the turn on a blob; while another pull downloads it, its progress is
/// reported to this pull's client as this layer's.
async fn wait_turn<'a>(
    shared: &'a InFlight,
    layer: &Layer,
    progress: &Progress,
) -> tokio::sync::MutexGuard<'a, ()> {
    let mut seen = shared.completed.subscribe();
    seen.mark_unchanged();
    let turn = shared.turn.lock();
    tokio::pin!(turn);
    loop {
        tokio::select! {
            guard = &mut turn => return guard,
            Ok(()) = seen.changed() => {
                let completed = *seen.borrow_and_update();
                progress.layer(layer, completed).await;
            }
        }
    }
}
