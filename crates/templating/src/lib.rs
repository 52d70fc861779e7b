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
//!   The template engine underneath is our own small Go `text/template`
//!   (`gotmpl`), tested byte for byte against Go's.
//! - [`ToolCallFormat`] and [`ToolCallParser`] read tool calls in every family's
//!   syntax; the format comes from a [`GoTemplate`] or a [`ChatTemplate`].
//! - [`ThinkingParser`] splits `<think>...</think>` style output into thinking and
//!   content.
//!
//! ```
//! use wick_templating::*;
//!
//! let tmpl = GoTemplate::parse(
//!     "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}\
//!      {{- if .ToolCalls }}<tool_call>{{ end }}<|im_start|>assistant\n",
//! )?;
//! let messages = [Message::new("user", "Weather in Paris?")];
//! let prompt = tmpl.render_chat(&GoChat { messages: &messages, ..GoChat::default() })?;
//! assert_eq!(prompt, "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n");
//!
//! // Streamed output: thinking first (when asked for and the template has tags),
//! // then tool calls out of the content.
//! let mut thinking = ThinkingParser::for_prompt("<think>", "</think>", &prompt);
//! let mut n = 0;
//! let mut calls = ToolCallParser::new(tmpl.tool_call_format(), vec!["get_weather".into()], || {
//!     n += 1;
//!     format!("call_{n}")
//! });
//! let (think, content) = thinking.push("<think>Paris.</think><tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>");
//! assert_eq!(think, "Paris.");
//! let mut chunk = calls.push(&content);
//! let end = calls.finish();
//! chunk.tool_calls.extend(end.tool_calls);
//! assert_eq!(chunk.tool_calls[0].function.name, "get_weather");
//! assert_eq!(chunk.content + &end.content, "");
//! # Ok::<(), TemplateError>(())
//! ```

mod error;
mod gotmpl;
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
