//! `POST /api/chat`: a conversation rendered with the model's chat template, optionally
//! with tools; the model's tool-call blocks come back as `message.tool_calls`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, Model};
use wick_templating::{
    parse_tool_calls, random_call_id, ChatTemplate, Message, StreamChunk, Tool, ToolCall,
    ToolCallStream, TOOL_CALL_END, TOOL_CALL_START,
};

use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models;
use crate::prompt;
use crate::request::{no_vision, prepare, Common, CommonFields, Prepared};
use crate::run::{self, Framing, Generation, Responder, Start};
use crate::wire::{self, Metrics};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub tools: Option<Vec<Tool>>,
    pub stream: Option<bool>,
    pub format: Option<Value>,
    pub keep_alive: Option<Value>,
    pub options: Option<Map<String, Value>>,
    pub think: Option<Value>,
    pub truncate: Option<bool>,
    pub shift: Option<bool>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    #[serde(rename = "_debug_render_only")]
    pub debug_render_only: Option<bool>,
}

/// A checked chat request.
pub struct ValidChatRequest {
    pub(crate) common: Common,
    pub(crate) messages: Vec<Message>,
    pub(crate) tools: Vec<Tool>,
}

impl ChatRequest {
    pub fn validate(self) -> Result<ValidChatRequest> {
        let common = CommonFields {
            model: self.model.as_deref(),
            stream: self.stream,
            format: self.format.as_ref(),
            keep_alive: self.keep_alive.as_ref(),
            options: self.options.as_ref(),
            think: self.think.as_ref(),
            truncate: self.truncate,
            shift: self.shift,
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
            debug_render_only: self.debug_render_only,
        }
        .validate()?;
        let mut messages = self.messages.unwrap_or_default();
        for (i, m) in messages.iter_mut().enumerate() {
            // Ollama lower-cases roles when it reads them.
            m.role = m.role.to_lowercase();
            if m.images.as_ref().is_some_and(|i| !i.is_empty()) {
                return Err(no_vision(&common.model));
            }
            if m.role.is_empty() {
                return Err(ApiError::bad(format!(
                    "messages[{i}]: \"role\" is required"
                )));
            }
        }
        let tools = self.tools.unwrap_or_default();
        for (i, t) in tools.iter().enumerate() {
            if !t.is_object() {
                return Err(ApiError::bad(format!(
                    "tools[{i}]: a tool must be an object, got {}",
                    wire::json_type(t)
                )));
            }
        }
        Ok(ValidChatRequest {
            common,
            messages,
            tools,
        })
    }
}

/// One line of a chat answer (Ollama's `ChatResponse`).
#[derive(Debug, Serialize)]
pub(crate) struct ChatChunk {
    model: String,
    created_at: String,
    message: Message,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
}

fn new_call_id() -> String {
    random_call_id(&mut rand::rng())
}

/// Tool calls out of generated text: `<tool_call>` blocks through the templating
/// crate's stream, and answers that are a bare JSON call
/// `{"name": ..., "arguments": ...}` naming an offered tool (small Qwen models often
/// leave out the tags). An answer that starts with `{` is held back until it ends.
pub(crate) struct ToolCalls {
    stream: ToolCallStream<fn() -> String>,
    names: Vec<String>,
    /// The answer so far, while it may still be a bare JSON call.
    held: Option<String>,
}

impl ToolCalls {
    fn new(tools: &[Tool]) -> Self {
        ToolCalls {
            stream: ToolCallStream::new(new_call_id as fn() -> String),
            names: tools
                .iter()
                .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
            held: Some(String::new()),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> StreamChunk {
        let Some(held) = &mut self.held else {
            return self.stream.push(text);
        };
        held.push_str(text);
        let start = held.trim_start();
        if start.is_empty() || start.starts_with('{') {
            return StreamChunk::default();
        }
        let held = self.held.take().unwrap_or_default();
        self.stream.push(&held)
    }

    pub(crate) fn finish(&mut self) -> StreamChunk {
        let Some(held) = self.held.take() else {
            return self.stream.finish();
        };
        if held.trim_start().starts_with('{') {
            let block = format!("{TOOL_CALL_START}{held}{TOOL_CALL_END}");
            if let Some(calls) = parse_tool_calls(&block, new_call_id) {
                if calls.iter().all(|c| self.names.contains(&c.function.name)) {
                    return StreamChunk {
                        content: String::new(),
                        tool_calls: calls,
                    };
                }
            }
        }
        let mut out = self.stream.push(&held);
        let rest = self.stream.finish();
        out.content.push_str(&rest.content);
        out.tool_calls.extend(rest.tool_calls);
        out
    }
}

struct ChatResponder {
    model: String,
    /// Set when tools were offered.
    tool_calls: Option<ToolCalls>,
}

impl ChatResponder {
    fn chunk(&self, content: String, calls: Vec<ToolCall>) -> ChatChunk {
        ChatChunk {
            model: self.model.clone(),
            created_at: wire::now_utc(),
            message: Message {
                tool_calls: (!calls.is_empty()).then_some(calls),
                ..Message::new("assistant", content)
            },
            done: false,
            done_reason: None,
            metrics: None,
        }
    }
}

impl Responder for ChatResponder {
    type Chunk = ChatChunk;
    type Whole = ChatChunk;

    fn text(&mut self, text: String) -> Vec<ChatChunk> {
        let (content, calls) = match &mut self.tool_calls {
            Some(s) => {
                let c = s.push(&text);
                (c.content, c.tool_calls)
            }
            None => (text, Vec::new()),
        };
        if content.is_empty() && calls.is_empty() {
            return Vec::new();
        }
        vec![self.chunk(content, calls)]
    }

    fn done(&mut self, reason: DoneReason, metrics: Metrics, _context: Vec<u32>) -> Vec<ChatChunk> {
        let mut out = Vec::new();
        if let Some(s) = &mut self.tool_calls {
            let c = s.finish();
            if !c.content.is_empty() || !c.tool_calls.is_empty() {
                out.push(self.chunk(c.content, c.tool_calls));
            }
        }
        let mut last = self.chunk(String::new(), Vec::new());
        last.done = true;
        last.done_reason = Some(reason.as_str());
        last.metrics = Some(metrics);
        out.push(last);
        out
    }

    fn merge(chunks: Vec<ChatChunk>) -> Option<ChatChunk> {
        let content: String = chunks.iter().map(|c| c.message.content.as_str()).collect();
        let calls: Vec<ToolCall> = chunks
            .iter()
            .flat_map(|c| c.message.tool_calls.iter().flatten().cloned())
            .collect();
        let mut last = chunks.into_iter().last()?;
        last.message.content = content;
        last.message.tool_calls = (!calls.is_empty()).then_some(calls);
        Some(last)
    }
}

/// Render the conversation. With truncation on and a conversation longer than the
/// context, drop the oldest messages (keeping system messages and the last message)
/// until it fits, as Ollama's `chatPrompt` does.
fn render_fitting(
    template: Option<&ChatTemplate>,
    model: &Model,
    messages: &[Message],
    tools: Option<&[Tool]>,
    ctx: usize,
    truncate: bool,
) -> Result<(String, Vec<u32>)> {
    let text = prompt::render(template, model, messages, tools)?;
    let tokens = prompt::tokenize(model, &text)?;
    if tokens.len() < ctx || !truncate || messages.len() < 2 {
        return Ok((text, tokens));
    }
    let last = messages.len() - 1;
    for start in 1..=last {
        let kept: Vec<Message> = messages[..start]
            .iter()
            .filter(|m| m.role == "system")
            .chain(&messages[start..])
            .cloned()
            .collect();
        let text = prompt::render(template, model, &kept, tools)?;
        let tokens = prompt::tokenize(model, &text)?;
        if tokens.len() < ctx || start == last {
            tracing::warn!(
                dropped = start,
                kept = kept.len(),
                tokens = tokens.len(),
                num_ctx = ctx,
                "chat history truncated to fit the context window"
            );
            return Ok((text, tokens));
        }
    }
    Ok((text, tokens))
}

/// Load the model, render and tokenize the conversation, and submit the generation.
/// A running chat comes with its tool-call reader when tools were offered.
pub(crate) async fn start(
    state: &AppState,
    req: &ValidChatRequest,
) -> Result<Start<Option<ToolCalls>>> {
    let c = &req.common;
    let (resolved, held, opts) = match prepare(state, c, "chat", req.messages.is_empty()).await? {
        Prepared::Loaded(reply) => return Ok(Start::Loaded(reply)),
        Prepared::Ready(r) => (r.resolved, r.held, r.opts),
    };
    let model = held.lease.model();
    let template = prompt::choose(
        &state.templates,
        None,
        resolved.template.as_deref(),
        model.facts.chat_template.as_deref(),
    )?;
    let tools = (!req.tools.is_empty()).then_some(req.tools.as_slice());
    if tools.is_some() && !template.as_ref().is_some_and(|t| t.supports_tools()) {
        return Err(ApiError::bad(format!(
            "\"{}\" does not support tools",
            c.model
        )));
    }

    let mut messages = models::messages(&resolved);
    messages.extend(req.messages.iter().cloned());
    if let Some(system) = resolved.system.as_deref().filter(|s| !s.is_empty()) {
        if req.messages.first().is_none_or(|m| m.role != "system") {
            messages.insert(0, Message::new("system", system));
        }
    }
    let ctx = prompt::effective_ctx(model, opts.num_ctx);
    let (text, tokens) = render_fitting(
        template.as_deref(),
        model,
        &messages,
        tools,
        ctx,
        c.truncate,
    )?;
    if c.debug_render_only {
        return Ok(Start::Rendered(text));
    }
    if tokens.len() >= ctx && !c.truncate {
        return Err(prompt::too_long(tokens.len(), ctx));
    }

    let gen = Generation::submit(held, c.request(tokens, opts))?;
    Ok(Start::Running(gen, tools.map(ToolCalls::new)))
}

pub(crate) async fn chat(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response> {
    let req = req.validate()?;
    let c = &req.common;
    match start(&state, &req).await? {
        Start::Loaded(reply) => Ok(Json(json!({
            "model": c.model,
            "created_at": wire::now_utc(),
            "message": { "role": "assistant", "content": "" },
            "done": true,
            "done_reason": reply.as_str(),
        }))
        .into_response()),
        Start::Rendered(text) => Ok(Json(json!({
            "model": c.model,
            "created_at": wire::now_utc(),
            "message": { "role": "", "content": "" },
            "done": false,
            "_debug_info": { "rendered_template": text, "image_count": 0 },
        }))
        .into_response()),
        Start::Running(gen, tool_calls) => {
            let responder = ChatResponder {
                model: c.model.clone(),
                tool_calls,
            };
            run::respond(gen, responder, c.stream, Framing::Ndjson).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<Tool> {
        vec![json!({"type": "function", "function": {"name": "get_weather", "parameters": {}}})]
    }

    fn run(pieces: &[&str]) -> (String, Vec<ToolCall>) {
        let mut t = ToolCalls::new(&tools());
        let mut content = String::new();
        let mut calls = Vec::new();
        for p in pieces {
            let c = t.push(p);
            content.push_str(&c.content);
            calls.extend(c.tool_calls);
        }
        let c = t.finish();
        content.push_str(&c.content);
        calls.extend(c.tool_calls);
        (content, calls)
    }

    #[test]
    fn bare_json_calls_and_plain_text() {
        let (content, calls) = run(&[
            "{\"name\": \"get_",
            "weather\", \"arguments\": {\"city\": \"Paris\"}}",
        ]);
        assert_eq!(content, "");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments["city"], "Paris");

        let (content, calls) =
            run(&["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"]);
        assert_eq!((content.as_str(), calls.len()), ("", 1));

        let (content, calls) = run(&["Hello", " there"]);
        assert_eq!((content.as_str(), calls.len()), ("Hello there", 0));

        // JSON that is not a call of an offered tool stays content.
        let (content, calls) = run(&["{\"name\": \"other\", \"arguments\": {}}"]);
        assert_eq!(calls.len(), 0);
        assert_eq!(content, "{\"name\": \"other\", \"arguments\": {}}");
        let (content, _) = run(&["{\"a\": 1}"]);
        assert_eq!(content, "{\"a\": 1}");
    }
}
