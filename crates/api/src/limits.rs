//! Request limits: a body size cap (`WICK_MAX_BODY_BYTES`, 413; blob uploads are
//! exempt and streamed to disk; bodies without a `Content-Length` are read here, up
//! to the cap; `DefaultBodyLimit` in [`crate::app`] backs this up) and a wall-clock cap per request
//! (`WICK_REQUEST_TIMEOUT`, off by default).
//!
//! A request whose answer is not ready within the cap gets 504; a stream that is still
//! running then ends with an error line (`{"error": ...}`, or an SSE `data:` event on
//! OpenAI's routes) and its generation is cancelled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::{ApiError, ErrorShape};
use crate::run::Framing;
use crate::AppState;

/// Default `WICK_MAX_BODY_BYTES`: room for long chat histories with a few images.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

/// `POST /api/blobs/{digest}` and registry blob uploads (`PATCH`/`PUT
/// /v2/.../blobs/uploads/...`): streamed to disk, exempt from both caps.
fn is_blob_upload(method: &Method, path: &str) -> bool {
    (method == Method::POST && path.starts_with("/api/blobs/"))
        || ((method == Method::PATCH || method == Method::PUT)
            && path.starts_with("/v2/")
            && path.contains("/blobs/uploads/"))
}

/// The 413 for a body over `limit` bytes.
pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "request body too large: the limit is {limit} bytes (WICK_MAX_BODY_BYTES)"
    ))
}

/// The middleware: refuse a body over the limit, and hold the request to the time cap.
pub(crate) async fn cap_request(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let shape = ErrorShape::of_path(&path);
    if is_blob_upload(req.method(), &path) {
        return next.run(req).await;
    }
    let req = match within_limit(req, state.config.body_limit()).await {
        Ok(req) => req,
        Err(e) => {
            let mut resp = shape.response(&e);
            // What is left of the body is not read: the connection cannot be reused.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    let Some(cap) = state.config.request_timeout else {
        return next.run(req).await;
    };
    let deadline = Instant::now() + cap;
    let resp = match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(resp) => resp,
        // Dropping the handler drops its generation, which cancels the sequence.
        Err(_) => return shape.response(&ApiError::Timeout(cap)),
    };
    let framing = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Framing::of_content_type);
    match framing {
        Some(framing) => resp.map(|inner| {
            Body::new(Capped {
                inner,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                cap,
                framing,
                ended: false,
            })
        }),
        None => resp,
    }
}

/// Most bytes of a refused body read and thrown away so that the client, still
/// sending, gets the 413 instead of a reset connection; and for how long.
const DRAIN_BYTES: u64 = 32 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The request, if its body fits in `limit` bytes. A body declared larger is refused
/// before it is read (at once for a client that waits for `100 Continue`); a body of
/// unknown length (chunked, HTTP/2) is read here, up to the limit.
async fn within_limit(req: Request, limit: usize) -> Result<Request, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    match declared {
        Some(n) if n > limit as u64 => {
            let waits_for_continue = parts
                .headers
                .get(EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !waits_for_continue {
                drain(body.into_data_stream()).await;
            }
            Err(too_large(limit))
        }
        Some(_) => Ok(Request::from_parts(parts, body)),
        None => {
            let mut stream = body.into_data_stream();
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?;
                if buf.len() + chunk.len() > limit {
                    drain(stream).await;
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Request::from_parts(parts, Body::from(buf)))
        }
    }
}

/// Read and drop what is left of a refused body, within [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`].
async fn drain(mut stream: axum::body::BodyDataStream) {
    let discard = async {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// A streamed body that ends with an error frame when the time cap passes.
struct Capped {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    cap: Duration,
    framing: Framing,
    ended: bool,
}

impl http_body::Body for Capped {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.ended = true;
            // Drop the stream now: its generation is cancelled.
            this.inner = Body::empty();
            let msg = ApiError::Timeout(this.cap).to_string();
            tracing::info!(error = %msg, "stream cut at the time cap");
            return Poll::Ready(Some(Ok(Frame::data(this.framing.error(&msg)))));
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        this.ended = frame.is_none();
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_uploads_are_exempt() {
        assert!(is_blob_upload(&Method::POST, "/api/blobs/sha256:abc"));
        assert!(!is_blob_upload(&Method::HEAD, "/api/blobs/sha256:abc"));
        assert!(!is_blob_upload(&Method::POST, "/api/create"));
    }

    #[test]
    fn too_large_names_the_limit() {
        let e = too_large(1024);
        assert_eq!(e.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.to_string().contains("1024 bytes"), "{e}");
    }
}
