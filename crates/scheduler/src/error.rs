//! The scheduler's error type.

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// Ollama's exact message for a full queue (HTTP 503).
    #[error("server busy, please try again.  maximum pending requests exceeded")]
    QueueFull,
    #[error("{0}")]
    Load(String),
    #[error(transparent)]
    Engine(#[from] wick_engine::EngineError),
    /// Ollama's wording when a model cannot fit (HTTP 500).
    #[error(
        "model requires more system memory ({:.1} GiB) than is available ({:.1} GiB)",
        *.needed as f64 / (1u64 << 30) as f64,
        *.available as f64 / (1u64 << 30) as f64
    )]
    OutOfMemory { needed: u64, available: u64 },
    #[error("model runner stopped")]
    RunnerGone,
    /// The server stopped before the generation finished (`WICK_SHUTDOWN_TIMEOUT`).
    #[error("server shutting down")]
    ShuttingDown,
}

/// Whose fault an error is, for the HTTP status the API gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request: 400.
    BadRequest,
    /// Too much load now; retry later: 503.
    Unavailable,
    /// The model file or wick itself: 500.
    Internal,
}

impl SchedError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SchedError::QueueFull | SchedError::ShuttingDown => ErrorKind::Unavailable,
            SchedError::Engine(e) if e.is_client_error() => ErrorKind::BadRequest,
            SchedError::Engine(_)
            | SchedError::Load(_)
            | SchedError::OutOfMemory { .. }
            | SchedError::RunnerGone => ErrorKind::Internal,
        }
    }
}
