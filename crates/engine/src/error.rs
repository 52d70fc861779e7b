//! The engine's error type.

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid model file: {0}")]
    InvalidModel(String),
    #[error("unsupported architecture '{0}'")]
    UnsupportedArchitecture(String),
    /// A tensor stored in a quantization kind wick's kernels do not have yet.
    #[error("tensor '{tensor}' has type {kind}, which wick does not support yet")]
    UnsupportedTensorType { tensor: String, kind: String },
    #[error("missing GGUF metadata key '{0}'")]
    MissingMetadata(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The request asks for something the model cannot do (a token outside the
    /// vocabulary, an input longer than the context): the client's fault.
    #[error("{0}")]
    InvalidRequest(String),
    /// A failure inside the engine (a kernel, a cache, a shape that should not
    /// happen): wick's fault, never the client's.
    #[error("internal error: {0}")]
    Internal(String),
    /// A `format` (JSON schema) that cannot be compiled into a grammar: the message
    /// names the problem (invalid schema, unsupported keyword, bad `$ref`, ...).
    #[error("invalid format: {0}")]
    InvalidFormat(String),
    /// The grammar of a constrained generation failed while it ran.
    #[error("constrained decoding failed: {0}")]
    Constraint(String),
    /// Embeddings asked of a model that has no embedding output.
    #[error("this model does not support embeddings")]
    NoEmbeddings,
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl EngineError {
    /// Whether the request itself is at fault (HTTP 400), rather than the model file
    /// or wick (HTTP 500).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            EngineError::InvalidRequest(_)
                | EngineError::InvalidFormat(_)
                | EngineError::NoEmbeddings
        )
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
