//! Graceful shutdown, the API's side: when the server stops it first lets running
//! generations finish; once its drain timeout (`WICK_SHUTDOWN_TIMEOUT`) passes it
//! calls [`ShutdownDeadline::expire`], and every generation still running ends at
//! once: a stream with an error line, a non-streamed request with a 503.

use tokio_util::sync::CancellationToken;

/// Shared by the server's accept loop (which expires it) and every generation (which
/// watches it).
#[derive(Debug, Clone, Default)]
pub struct ShutdownDeadline(CancellationToken);

impl ShutdownDeadline {
    /// End every generation still running now.
    pub fn expire(&self) {
        self.0.cancel();
    }

    pub fn has_passed(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes when the deadline passes.
    pub async fn passed(&self) {
        self.0.cancelled().await
    }
}
