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
}
