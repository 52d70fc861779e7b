//! The one error type of the store. Messages follow Ollama's wording; [`StoreError::kind`]
//! tells the API crate which HTTP status each variant maps to.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// Result alias used throughout the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every way a store operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The model name does not parse or a part is invalid (HTTP 400).
    /// Carries the name exactly as the caller gave it.
    #[error("name {} is invalid", go_quote(.0))]
    InvalidName(String),

    /// No manifest for this model (HTTP 404). Carries the name as the caller gave it.
    #[error("model '{0}' not found")]
    NotFound(String),

    /// A digest that does not match `^sha256[:-][0-9a-fA-F]{64}$` (HTTP 400).
    /// Carries the rejected input.
    #[error("invalid digest format")]
    InvalidDigest(String),

    /// Uploaded bytes hash to something else than announced (HTTP 400).
    #[error("digest mismatch, expected \"{expected}\", got \"{got}\"")]
    DigestMismatch { expected: Digest, got: Digest },

    /// A blob referenced by a request or a manifest is missing (HTTP 404).
    #[error("blob \"{0}\" not found")]
    BlobNotFound(Digest),

    /// A manifest file exists but is not a valid manifest (HTTP 500).
    #[error("corrupt manifest {}: {reason}", path.display())]
    CorruptManifest { path: PathBuf, reason: String },

    /// A small layer blob (config, params, messages) does not hold the JSON it should
    /// (HTTP 500).
    #[error("invalid content in blob \"{digest}\": {reason}")]
    InvalidBlob { digest: Digest, reason: String },

    /// A filesystem error, with what we were doing (HTTP 500).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// The HTTP-level class of a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was wrong: 400.
    BadRequest,
    /// The model or blob does not exist: 404.
    NotFound,
    /// Anything else: 500.
    Internal,
}

impl StoreError {
    /// Which HTTP status class this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::InvalidName(_)
            | StoreError::InvalidDigest(_)
            | StoreError::DigestMismatch { .. } => ErrorKind::BadRequest,
            StoreError::NotFound(_) | StoreError::BlobNotFound(_) => ErrorKind::NotFound,
            StoreError::CorruptManifest { .. }
            | StoreError::InvalidBlob { .. }
            | StoreError::Io { .. } => ErrorKind::Internal,
        }
    }

    /// True for errors that map to HTTP 404.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// True for errors that map to HTTP 400.
    pub fn is_bad_request(&self) -> bool {
        self.kind() == ErrorKind::BadRequest
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Attach a context string to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| StoreError::io(f(), e))
    }
}

/// Quote a string the way Go's `%q` does for the characters that matter here.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_ollama() {
        assert_eq!(
            StoreError::InvalidName("a/b/c/d/e".into()).to_string(),
            r#"name "a/b/c/d/e" is invalid"#
        );
        assert_eq!(
            StoreError::InvalidName("x\"y\n".into()).to_string(),
            r#"name "x\"y\n" is invalid"#
        );
        assert_eq!(
            StoreError::NotFound("llama3".into()).to_string(),
            "model 'llama3' not found"
        );
        assert_eq!(
            StoreError::InvalidDigest("sha256:zz".into()).to_string(),
            "invalid digest format"
        );
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        assert_eq!(
            StoreError::DigestMismatch {
                expected: a.clone(),
                got: b.clone()
            }
            .to_string(),
            format!(
                "digest mismatch, expected \"sha256:{}\", got \"sha256:{}\"",
                a.hex(),
                b.hex()
            )
        );
        assert_eq!(
            StoreError::BlobNotFound(a.clone()).to_string(),
            format!("blob \"sha256:{}\" not found", a.hex())
        );
    }

    #[test]
    fn kinds() {
        assert!(StoreError::InvalidName(String::new()).is_bad_request());
        assert!(StoreError::InvalidDigest(String::new()).is_bad_request());
        assert!(StoreError::NotFound(String::new()).is_not_found());
        assert!(StoreError::BlobNotFound(Digest::of_bytes(b"")).is_not_found());
        let io = StoreError::io("reading x", io::Error::other("boom"));
        assert_eq!(io.kind(), ErrorKind::Internal);
        assert_eq!(io.to_string(), "reading x: boom");
    }
}
