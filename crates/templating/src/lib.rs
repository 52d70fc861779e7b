//! wick-templating: turns an Ollama conversation into a prompt with the model's chat
//! template, and turns the model's tool-call text back into structured tool calls.
//!
//! - [`ChatTemplate`] compiles a Hugging Face / GGUF `tokenizer.chat_template` (Jinja)
//!   and renders it the way transformers' `apply_chat_template` does.
//! - [`render_generate`] is `/api/generate`'s `[system, user]` rendering.
//! - [`parse_tool_calls`] and [`ToolCallStream`] read Qwen/Hermes-style
//!   `<tool_call>{...}</tool_call>` blocks from generated text.
//! - [`GoTemplate`] is Ollama's Go `text/template` chat template (a Modelfile
//!   `TEMPLATE`), rendered with Ollama's data and rules for chat and generate, with
//!   the capabilities Ollama reads from it (`vars`, thinking tags, tool-call tag).
//!   The template engine itself is the [`gotmpl`] module.
//! - [`ToolCallFormat`] and [`ToolCallParser`] read tool calls in every family's
//!   syntax; the format comes from a [`GoTemplate`] or a [`ChatTemplate`].
//! - [`ThinkingParser`] splits `<think>...</think>` style output into thinking and
//!   content.

mod error;
pub mod gotmpl;
mod json;
mod ollama;
mod template;
mod thinking;
mod tool_calls;
mod tool_format;
mod types;

pub use error::TemplateError;
pub use ollama::{GoChat, GoGenerate, GoTemplate, Think};
pub use template::{render_generate, ChatContext, ChatTemplate};
pub use thinking::ThinkingParser;
pub use tool_calls::{
    parse_tool_calls, random_call_id, StreamChunk, ToolCallStream, TOOL_CALL_END, TOOL_CALL_START,
};
pub use tool_format::{calls_use_offered_tools, tool_names, ToolCallFormat, ToolCallParser};
pub use types::{Message, Tool, ToolCall, ToolCallFunction};
