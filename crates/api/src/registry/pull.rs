//! `POST /api/pull`: a model from a registry into the store, over the OCI/Docker v2
//! protocol Ollama uses (the manifest by tag, each blob by digest; a bearer-token
//! challenge answered when the registry asks for one).
//!
//! Progress is Ollama's: `pulling manifest`, per layer `pulling <12 hex>` with `digest`,
//! `total` and `completed`, `verifying sha256 digest`, `writing manifest`, `success`.
//! Nothing half-written is ever visible: each blob downloads into a partial file under
//! a fixed name (an interrupted pull resumes from it with a `Range` request), every blob
//! is verified against its digest before it is renamed into place, and the manifest,
//! written last and atomically, is what makes the model exist. Concurrent pulls of one
//! blob take turns, so the second finds it already downloaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use wick_store::{Digest, Layer, Manifest, ModelName, PartialBlob, Store, MEDIA_TYPE_MANIFEST};

use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::run::ndjson;
use crate::AppState;

/// Bytes gathered from the network before one write to the partial file.
const WRITE_BATCH: usize = 1 << 20;
/// How much a layer's `completed` must grow before another progress line is sent.
const PROGRESS_STEP: u64 = 4 << 20;

#[derive(Debug, Deserialize)]
pub(crate) struct PullRequest {
    model: Option<String>,
    /// Ollama's older spelling of `model`.
    name: Option<String>,
    #[serde(default)]
    insecure: bool,
    stream: Option<bool>,
    username: Option<String>,
    password: Option<String>,
}

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

pub(crate) async fn pull(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PullRequest>,
) -> Result<Response> {
    for (field, value) in [("username", &req.username), ("password", &req.password)] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::bad(format!(
                "\"{field}\": registry credentials in the request are not supported; \
                 the registry's bearer-token challenge is answered anonymously"
            )));
        }
    }
    let given = req.model.or(req.name).unwrap_or_default();
    let name = ModelName::parse(&given).map_err(|_| ApiError::bad("invalid model name"))?;
    let target = Target::new(&name, req.insecure);
    let (tx, rx) = mpsc::channel::<Value>(64);
    let store = state.store.clone();
    let job = tokio::spawn(async move {
        let progress = Progress(tx);
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
    if req.stream.unwrap_or(true) {
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
        Err(e) => Err(ApiError::internal(format!("pull task failed: {e}"))),
    }
}

fn line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Progress lines to the client; a client that went away does not stop the pull (what
/// it downloaded stays for the next one).
struct Progress(mpsc::Sender<Value>);

impl Progress {
    async fn send(&self, v: Value) {
        let _ = self.0.send(v).await;
    }

    async fn layer(&self, layer: &Layer, completed: u64) {
        let short = layer.digest.get(7..19).unwrap_or(&layer.digest);
        self.send(json!({
            "status": format!("pulling {short}"),
            "digest": layer.digest,
            "total": layer.size,
            "completed": completed,
        }))
        .await;
    }
}

/// Where a model lives: the registry's base URL and the repository path.
struct Target {
    base: String,
    repository: String,
    tag: String,
}

impl Target {
    fn new(name: &ModelName, insecure: bool) -> Self {
        let scheme = if insecure { "http" } else { "https" };
        Target {
            base: format!("{scheme}://{}", name.host()),
            repository: format!("{}/{}", name.namespace(), name.model()),
            tag: name.tag().to_string(),
        }
    }

    fn manifest_url(&self) -> String {
        format!(
            "{}/v2/{}/manifests/{}",
            self.base, self.repository, self.tag
        )
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }
}

/// An HTTP client for one pull, holding the bearer token once a registry issued one.
struct Registry {
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<String>>,
}

impl Registry {
    fn new() -> std::result::Result<Self, PullError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Registry {
            http,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// GET `url`, answering one bearer-token challenge.
    async fn get(
        &self,
        url: &str,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> std::result::Result<reqwest::Response, PullError> {
        for attempt in 0..2 {
            let mut req = self.http.get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(t) = self.token.lock().await.as_deref() {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let resp = req.send().await?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(BearerChallenge::parse)
                .ok_or_else(|| PullError::Registry("unauthorized".into()))?;
            let token = self.fetch_token(&challenge).await?;
            *self.token.lock().await = Some(token);
        }
        Err(PullError::Registry("unauthorized".into()))
    }

    async fn fetch_token(&self, c: &BearerChallenge) -> std::result::Result<String, PullError> {
        let mut query = Vec::new();
        if let Some(s) = &c.service {
            query.push(("service", s.as_str()));
        }
        if let Some(s) = &c.scope {
            query.push(("scope", s.as_str()));
        }
        let resp = self.http.get(&c.realm).query(&query).send().await?;
        if !resp.status().is_success() {
            return Err(PullError::Registry(format!(
                "getting a registry token: {}",
                resp.status()
            )));
        }
        let body: Value = resp.json().await?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| PullError::Registry("the registry's token answer has no token".into()))
    }
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<Self> {
        let rest = header.trim().strip_prefix("Bearer ")?;
        let mut fields = HashMap::new();
        let mut s = rest;
        while !s.is_empty() {
            let (key, after) = s.split_once('=')?;
            let after = after.trim_start();
            let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                after.split_once(',').unwrap_or((after, ""))
            };
            fields.insert(key.trim().to_ascii_lowercase(), value.to_string());
            s = tail.trim_start_matches([',', ' ']);
        }
        Some(BearerChallenge {
            realm: fields.remove("realm")?,
            service: fields.remove("service"),
            scope: fields.remove("scope"),
        })
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

    let mut downloaded = Vec::new();
    for layer in &layers {
        let digest = layer.parsed_digest()?;
        // Held until the blob is committed: a concurrent pull of the same blob waits,
        // then finds it in place.
        let turn = blob_lock(&digest).lock_owned().await;
        if blocking(store, move |s| Ok(s.has_blob(&digest))).await? {
            progress.layer(layer, layer.size).await;
            continue;
        }
        let partial = download(store, &registry, target, layer, progress).await?;
        downloaded.push((turn, partial));
    }

    progress
        .send(json!({"status": "verifying sha256 digest"}))
        .await;
    for (_, partial) in downloaded {
        let want = partial.expected().to_string();
        match blocking(store, move |_| Ok(partial.commit())).await? {
            Ok(_) => {}
            Err(wick_store::StoreError::DigestMismatch { got, .. }) => {
                return Err(PullError::Digest {
                    want,
                    got: got.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }

    progress.send(json!({"status": "writing manifest"})).await;
    let name = name.clone();
    let bytes = manifest_bytes.to_vec();
    blocking(store, move |s| Ok(s.write_manifest_bytes(&name, &bytes)?)).await?;
    Ok(())
}

/// One blob into its partial file, resuming from what an earlier pull left there.
/// Returns the partial file, complete but not yet verified.
async fn download(
    store: &Store,
    registry: &Registry,
    target: &Target,
    layer: &Layer,
    progress: &Progress,
) -> std::result::Result<PartialBlob, PullError> {
    let digest = layer.parsed_digest()?;
    let mut partial = blocking(store, move |s| Ok(s.partial_blob(digest)?)).await?;
    if partial.offset() > layer.size {
        partial = blocking_partial(partial, |p| p.restart()).await?;
    }
    let offset = partial.offset();
    progress.layer(layer, offset).await;
    if offset == layer.size {
        return Ok(partial);
    }
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
                progress.layer(layer, reported).await;
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

/// One lock per blob digest, so concurrent pulls of the same blob take turns on its
/// partial file; the second finds the blob in place.
fn blob_lock(digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.retain(|_, l| Arc::strong_count(l) > 1);
    map.entry(digest.to_string()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let c = BearerChallenge::parse(
            r#"Bearer realm="https://ollama.com/token",service="ollama.com",scope="repository:library/qwen:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://ollama.com/token");
        assert_eq!(c.service.as_deref(), Some("ollama.com"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/qwen:pull"));
        assert_eq!(BearerChallenge::parse("Basic realm=\"x\""), None);
        assert_eq!(BearerChallenge::parse("Bearer service=\"x\""), None);
    }

    #[test]
    fn targets() {
        let name = ModelName::parse("127.0.0.1:5000/library/qwen:0.5b").unwrap();
        let t = Target::new(&name, true);
        assert_eq!(
            t.manifest_url(),
            "http://127.0.0.1:5000/v2/library/qwen/manifests/0.5b"
        );
        assert_eq!(
            t.blob_url("sha256:ab"),
            "http://127.0.0.1:5000/v2/library/qwen/blobs/sha256:ab"
        );
        let t = Target::new(&ModelName::parse("qwen").unwrap(), false);
        assert_eq!(
            t.manifest_url(),
            "https://registry.ollama.ai/v2/library/qwen/manifests/latest"
        );
    }
}
