//! wick-store: Ollama's on-disk model store (`$OLLAMA_MODELS`, default
//! `~/.ollama/models`), read and written exactly as Ollama does so an existing store is
//! served as is.
//!
//! ```text
//! blobs/sha256-<hex>                              content-addressed files
//! manifests/<host>/<namespace>/<model>/<tag>      manifest JSON
//! ```
//!
//! Synchronous by design; async callers wrap calls in `spawn_blocking`.
//! Every write is atomic (temp file, fsync, rename). Errors carry Ollama's messages and
//! a [`ErrorKind`] that tells the API which HTTP status to use.

mod blob;
mod create;
mod digest;
mod error;
mod gojson;
mod manifest;
pub mod modelfile;
mod name;
mod ops;
mod options;
mod store;

pub use blob::{BlobWriter, PartialBlob, Upload};
pub use create::NewModel;
pub use digest::Digest;
pub use error::{go_quote, ErrorKind, Result, StoreError};
pub use manifest::{
    ConfigV2, Layer, Manifest, RootFs, MEDIA_TYPE_ADAPTER, MEDIA_TYPE_CONFIG, MEDIA_TYPE_DRAFT,
    MEDIA_TYPE_EMBED, MEDIA_TYPE_JSON, MEDIA_TYPE_LICENSE, MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_MESSAGES, MEDIA_TYPE_MODEL, MEDIA_TYPE_PARAMS, MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_PROMPT, MEDIA_TYPE_SYSTEM, MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_TENSOR,
};
pub use name::{ModelName, DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG};
pub use ops::PruneReport;
pub use options::{option_kind, OptionKind, KNOWN_OPTIONS};
pub use store::{ListedModel, ResolvedModel, Store};
