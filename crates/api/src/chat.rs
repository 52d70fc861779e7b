//! `POST /api/chat`: a conversation rendered with the model's chat template, optionally
//! with tools; the model's tool-call blocks come back as `message.tool_calls`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, Model, TokenLogprob};
use wick_templating::{Message, Think, ThinkingParser, Tool, ToolCall};

use crate::answer::{Answer, AnswerParser, ToolCalls};
use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models;
use crate::prompt::{self, Template};
use crate::request::{no_vision, prepare, Common, CommonFields, Prepared};
use crate::run::{self, Framing, Generation, Responder, Start};
use crate::tool_choice::ToolChoice;
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
    /// OpenAI's `tool_choice` (Ollama's chat: `auto`).
    pub(crate) tool_choice: ToolChoice,
    /// OpenAI's `parallel_tool_calls: false`: at most one call is read.
    pub(crate) one_call: bool,
    /// OpenAI's `n`: answers sampled from one prefill (Ollama's chat: 1).
    pub(crate) choices: usize,
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
            tool_choice: ToolChoice::Auto,
            one_call: false,
            choices: 1,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<Vec<wire::Logprob>>,
}

struct ChatResponder {
    model: String,
    answer: AnswerParser,
}

impl ChatResponder {
    fn chunk(&self, a: Answer) -> ChatChunk {
        ChatChunk {
            model: self.model.clone(),
            created_at: wire::now_utc(),
            message: Message {
                thinking: (!a.thinking.is_empty()).then_some(a.thinking),
                tool_calls: (!a.tool_calls.is_empty()).then_some(a.tool_calls),
                ..Message::new("assistant", a.content)
            },
            done: false,
            done_reason: None,
            metrics: None,
            logprobs: None,
        }
    }
}

impl Responder for ChatResponder {
    type Chunk = ChatChunk;
    type Whole = ChatChunk;

    fn text(
        &mut self,
        _choice: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> Vec<ChatChunk> {
        let a = self.answer.push(&text);
        if a.is_empty() && logprobs.is_empty() {
            return Vec::new();
        }
        let mut chunk = self.chunk(a);
        chunk.logprobs = wire::logprobs(&logprobs);
        vec![chunk]
    }

    fn done(
        &mut self,
        _choice: usize,
        reason: DoneReason,
        metrics: Metrics,
        _context: Vec<u32>,
    ) -> Vec<ChatChunk> {
        let mut out = Vec::new();
        let a = self.answer.finish();
        if !a.is_empty() {
            out.push(self.chunk(a));
        }
        let mut last = self.chunk(Answer::default());
        last.done = true;
        last.done_reason = Some(reason.as_str());
        last.metrics = Some(metrics);
        out.push(last);
        out
    }

    fn merge(chunks: Vec<ChatChunk>) -> Option<ChatChunk> {
        let content: String = chunks.iter().map(|c| c.message.content.as_str()).collect();
        let thinking: String = chunks
            .iter()
            .filter_map(|c| c.message.thinking.as_deref())
            .collect();
        let calls: Vec<ToolCall> = chunks
            .iter()
            .flat_map(|c| c.message.tool_calls.iter().flatten().cloned())
            .collect();
        let logprobs: Vec<wire::Logprob> = chunks
            .iter()
            .flat_map(|c| c.logprobs.iter().flatten().cloned())
            .collect();
        let mut last = chunks.into_iter().last()?;
        last.logprobs = (!logprobs.is_empty()).then_some(logprobs);
        last.message.content = content;
        last.message.thinking = (!thinking.is_empty()).then_some(thinking);
        last.message.tool_calls = (!calls.is_empty()).then_some(calls);
        Some(last)
    }
}

/// Render the conversation. With truncation on and a conversation longer than the
/// context, drop the oldest messages (keeping system messages and the last message)
/// until it fits, as Ollama's `chatPrompt` does.
fn render_fitting(
    template: Option<&Template>,
    model: &Model,
    messages: &[Message],
    tools: Option<&[Tool]>,
    think: Option<&Think>,
    ctx: usize,
    truncate: bool,
) -> Result<(String, Vec<u32>)> {
    let text = prompt::render(template, model, messages, tools, think)?;
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
        let text = prompt::render(template, model, &kept, tools, think)?;
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
/// A running chat comes with the parser that splits its answer into thinking, content
/// and tool calls (one per choice; cloned from the first).
pub(crate) async fn start(state: &AppState, req: &ValidChatRequest) -> Result<Start<AnswerParser>> {
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
    let tools = (!req.tools.is_empty() && req.tool_choice != ToolChoice::None)
        .then_some(req.tools.as_slice());
    if tools.is_some() && !template.as_ref().is_some_and(Template::supports_tools) {
        return Err(ApiError::bad(format!(
            "\"{}\" does not support tools",
            c.model
        )));
    }
    let tags = template.as_ref().and_then(Template::thinking_tags);
    let think = c.resolve_think(tags.as_ref())?;

    let mut messages = models::messages(&resolved);
    messages.extend(req.messages.iter().cloned());
    if let Some(system) = resolved.system.as_deref().filter(|s| !s.is_empty()) {
        if req.messages.first().is_none_or(|m| m.role != "system") {
            messages.insert(0, Message::new("system", system));
        }
    }
    let ctx = prompt::effective_ctx(model, opts.num_ctx);
    let (text, tokens) = render_fitting(
        template.as_ref(),
        model,
        &messages,
        tools,
        think.as_ref(),
        ctx,
        c.truncate,
    )?;
    if c.debug_render_only {
        return Ok(Start::Rendered(text));
    }
    if tokens.len() >= ctx && !c.truncate {
        return Err(prompt::too_long(tokens.len(), ctx));
    }

    let thinking = match (&think, &tags) {
        (Some(t), Some((open, close))) if t.enabled() => {
            Some(ThinkingParser::for_prompt(open, close, &text))
        }
        _ => None,
    };
    let call_format = tools.and(template.as_ref().and_then(Template::tool_call_format));
    let forced = match (&call_format, tools) {
        (Some(format), Some(tools)) => req.tool_choice.grammar(tools, format)?,
        (None, Some(_)) if req.tool_choice != ToolChoice::Auto => {
            return Err(ApiError::bad(format!(
                "\"tool_choice\": the template of \"{}\" has no tool-call syntax to enforce",
                c.model
            )))
        }
        _ => None,
    };
    if forced.is_some() && c.format.is_some() {
        return Err(ApiError::bad(
            "\"tool_choice\" that requires a call cannot be combined with a response format",
        ));
    }
    let tool_calls = match (tools, call_format) {
        (Some(tools), Some(format)) => Some(ToolCalls::new(format, tools)),
        _ => None,
    };
    let close_tag = thinking.as_ref().and(tags.map(|(_, close)| close));
    let mut gen_req = c.request(tokens, opts, close_tag.clone());
    if let Some(grammar) = forced {
        let model = held.lease.shared_model();
        let check = grammar.clone();
        models::blocking(move || {
            model
                .check_format(&check)
                .map_err(|e| ApiError::bad(format!("invalid tool parameters: {e}")))
        })
        .await?;
        gen_req.format = Some(grammar);
        gen_req.format_after = close_tag;
    }
    let gen = Generation::submit_choices(held, gen_req, req.choices)?;
    let answer = AnswerParser::new(thinking, tool_calls).at_most_one_call(req.one_call);
    Ok(Start::Running(gen, answer))
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
        Start::Running(gen, answer) => {
            let responder = ChatResponder {
                model: c.model.clone(),
                answer,
            };
            run::respond(gen, responder, c.stream, Framing::Ndjson).await
        }
    }
}
