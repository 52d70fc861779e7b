//! The accept loop: hyper-util's server (HTTP/1 and HTTP/2) under the API router,
//! with a timeout on reading a request's headers so that a client cannot hold a
//! connection open by sending them slowly, a cap on open connections, and a graceful
//! shutdown.
//!
//! Shutdown: the first SIGINT/SIGTERM stops accepting and lets requests in flight
//! finish (idle keep-alive connections close) for up to the drain timeout; then the
//! [`ShutdownDeadline`] passes, so generations still running end with an error line,
//! and the loop returns. A second signal cuts the drain short.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use wick_api::ShutdownDeadline;

/// How long connections get to close after the deadline ended their generations.
const AFTER_DEADLINE: Duration = Duration::from_secs(5);

/// How the accept loop behaves.
pub struct ListenConfig {
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Most connections open at once; the next one gets a 503 and is closed.
    pub max_connections: usize,
    /// How long running requests get to finish once shutdown begins.
    pub drain_timeout: Duration,
}

/// Serve `app` on `listener` until the first message on `signals`, then drain.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: ListenConfig,
    deadline: ShutdownDeadline,
    mut signals: mpsc::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = signals.recv() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, cfg.max_connections));
            continue;
        };
        // Streamed tokens go out as soon as they are written.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = cfg.max_connections.max(1) - slots.available_permits();
    tracing::info!(
        connections = open,
        timeout = ?cfg.drain_timeout,
        "shutting down: no new connections; letting running requests finish"
    );
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => {
            tracing::info!("all requests finished");
            return;
        }
        () = tokio::time::sleep(cfg.drain_timeout) => {
            tracing::warn!("drain timeout passed: ending the generations still running");
        }
        _ = signals.recv() => {
            tracing::warn!("second signal: ending the generations still running");
        }
    }
    deadline.expire();
    if tokio::time::timeout(AFTER_DEADLINE, drained).await.is_err() {
        tracing::warn!("some connections did not close in time");
    }
}

/// Over the connection cap: a 503 in Ollama's error shape, then close.
async fn refuse(mut stream: TcpStream, max: usize) {
    tracing::warn!(
        max,
        "connection refused: too many open connections (WICK_MAX_CONNECTIONS)"
    );
    let body = format!(
        "{{\"error\":\"server busy: too many open connections (the limit is {max}, WICK_MAX_CONNECTIONS)\"}}"
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Read what the client sent until it closes (briefly), so that closing with its
    // request unread does not reset the connection before it reads the answer.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// A failed `accept`: a connection that went away before it was accepted is nothing;
/// anything else (out of file descriptors) is logged and retried after a pause.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
