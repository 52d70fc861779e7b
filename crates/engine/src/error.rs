//! The engine's error type.

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid model file: {0}")]
    InvalidModel(String),
    #[error("unsupported architecture '{0}'")]
    UnsupportedArchitecture(String),
    #[error("missing GGUF metadata key '{0}'")]
    MissingMetadata(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, EngineError>;
