//! The one error type of this crate.

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template source is not valid Jinja.
    #[error("invalid chat template: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`: it rejects this conversation
    /// (e.g. roles that do not alternate). The message is the template's own.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    /// Rendering failed for another reason (bad operation, undefined method, ...).
    #[error("failed to render chat template: {0}")]
    Render(String),
}
