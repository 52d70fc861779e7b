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
    #[error("model runner stopped")]
    RunnerGone,
}
