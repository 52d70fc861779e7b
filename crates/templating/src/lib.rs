//! wick-templating: turns an Ollama conversation into a prompt with the model's chat
//! template, and turns the model's tool-call text back into structured tool calls.
//!
//! - [`ChatTemplate`] compiles a Hugging Face / GGUF `tokenizer.chat_template` (Jinja)
//!   and renders it the way transformers' `apply_chat_template` does.
//! - [`render_generate`] is `/api/generate`'s `[system, user]` rendering.
//! - [`parse_tool_calls`] and [`ToolCallStream`] read Qwen/Hermes-style
//!   `<tool_call>{...}</tool_call>` blocks from generated text.

mod error;
mod json;
mod template;
mod tool_calls;
mod types;

pub use error::TemplateError;
pub use template::{render_generate, ChatContext, ChatTemplate};
pub use tool_calls::{
    parse_tool_calls, random_call_id, StreamChunk, ToolCallStream, TOOL_CALL_END, TOOL_CALL_START,
};
pub use types::{Message, Tool, ToolCall, ToolCallFunction};
