//! `HEAD /api/blobs/:digest` (does the blob exist?) and `POST /api/blobs/:digest`
//! (upload it). Uploads stream into the store's blob writer chunk by chunk, never
//! holding the file in memory; the digest is checked before the blob appears, so a
//! mismatch leaves the store unchanged.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures::StreamExt;
use wick_store::{Digest, StoreError};

use crate::error::{ApiError, Result};
use crate::models::blocking;
use crate::AppState;

pub(crate) async fn head_blob(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<StatusCode> {
    let d = Digest::parse(&digest)?;
    let store = state.store.clone();
    blocking(move || {
        if store.has_blob(&d) {
            Ok(StatusCode::OK)
        } else {
            Err(StoreError::BlobNotFound(d).into())
        }
    })
    .await
}

/// What the request side sends to the blocking writer.
enum Piece {
    Data(Bytes),
    /// The upload broke off: drop the partial blob.
    Abort,
}

pub(crate) async fn upload_blob(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    body: Body,
) -> Result<StatusCode> {
    let d = Digest::parse(&digest)?;
    let store = state.store.clone();
    let writer = blocking(move || {
        if store.has_blob(&d) {
            // Already there: 200 without reading the body, as Ollama does.
            return Ok(None);
        }
        Ok(Some(store.blob_writer(d)?))
    })
    .await?;
    let Some(mut writer) = writer else {
        return Ok(StatusCode::OK);
    };

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(8);
    let task = tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Data(chunk) => writer.write_all(&chunk)?,
                // Dropping the writer removes its temp file.
                Piece::Abort => return Ok(None),
            }
        }
        Ok(Some(writer.commit()?))
    });

    let mut stream = body.into_data_stream();
    let mut read_error = None;
    while let Some(chunk) = stream.next().await {
        let piece = match chunk {
            Ok(bytes) => Piece::Data(bytes),
            Err(e) => {
                read_error = Some(e.to_string());
                Piece::Abort
            }
        };
        let abort = matches!(piece, Piece::Abort);
        // A send fails only when the writer stopped; its error is reported below.
        if tx.send(piece).await.is_err() || abort {
            break;
        }
    }
    drop(tx);
    let written = task
        .await
        .map_err(|e| ApiError::internal(format!("blob writer failed: {e}")))??;
    if let Some(e) = read_error {
        return Err(ApiError::bad(format!("reading the request body: {e}")));
    }
    match written {
        Some(size) => {
            tracing::info!(digest = %digest, size, "blob stored");
            Ok(StatusCode::CREATED)
        }
        None => Err(ApiError::bad("the upload was interrupted")),
    }
}
