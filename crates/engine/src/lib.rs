//! wick's inference engine: GGUF models on candle tensors, per-sequence KV caches,
//! tokenization from GGUF metadata, sampling and safe text streaming, structured
//! outputs (a JSON schema as a grammar, by llguidance) and per-token log probabilities.
//!
//! Synchronous on purpose: the scheduler owns threads and async; this crate computes.

pub mod constraint;
pub mod convert;
pub mod cpu;
pub mod device;
pub mod error;
pub mod facts;
pub mod gguf;
pub mod kv_cache;
pub mod logprobs;
pub mod mapped_file;
pub mod model;
pub mod quantize;
pub mod sampling;
pub mod sequence;
pub mod text_stream;
#[doc(hidden)]
pub mod tiny_models;
pub mod tokenizer;

pub use candle_core::Device;
pub use constraint::OutputFormat;
pub use error::{EngineError, Result};
pub use facts::GgufFacts;
pub use logprobs::{TokenLogprob, TopLogprob, MAX_TOP_LOGPROBS};
pub use model::{BatchInput, Model};
pub use sampling::{Sampler, SamplingOptions};
pub use sequence::{
    CachedPrefix, DoneReason, GenerationRequest, Plan, Sequence, Stats, StepOutput, PREFILL_CHUNK,
};
pub use tokenizer::GgufTokenizer;
