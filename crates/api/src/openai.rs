//! OpenAI-compatible routes, translated onto the native ones as Ollama's middleware
//! does: `/v1/chat/completions`, `/v1/completions` (both with server-sent events when
//! streaming), `/v1/models` and `/v1/models/{model}`. Errors use OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}` with the native status codes.
//!
//! Extensions: `options` (any Ollama option, e.g. `num_ctx`) and `keep_alive` are
//! accepted; `max_completion_tokens` is read when `max_tokens` is absent.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, TokenLogprob, MAX_TOP_LOGPROBS};
use wick_store::ModelName;
use wick_templating::{Message, Tool, ToolCall, ToolCallFunction};

use crate::answer::{Answer, AnswerParser};
use crate::chat::{self, ChatRequest};
use crate::error::{without_backtrace, ApiError};
use crate::extract::ApiJson;
use crate::generate::{self, GenerateRequest};
use crate::models::blocking;
use crate::request::no_vision;
use crate::run::{self, Framing, Responder, Start};
use crate::wire::Metrics;
use crate::AppState;

/// An [`ApiError`] in OpenAI's body shape.
pub(crate) struct OpenAiError(ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let kind = match status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let body = json!({ "error": {
            "message": without_backtrace(&self.0.to_string()),
            "type": kind,
            "param": null,
            "code": null,
        }});
        (status, Json(body)).into_response()
    }
}

type OaResult<T> = std::result::Result<T, OpenAiError>;

#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OaFunction {
    name: String,
    arguments: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OaToolCall {
    id: Option<String>,
    function: OaFunction,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OaMessage {
    role: String,
    content: Option<Value>,
    tool_calls: Option<Vec<OaToolCall>>,
    tool_call_id: Option<String>,
    name: Option<String>,
    reasoning: Option<String>,
}

/// Sampling fields shared by both completion routes.
#[derive(Debug, Deserialize)]
pub(crate) struct Sampling {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    stop: Option<Value>,
    n: Option<i64>,
    options: Option<Map<String, Value>>,
}

impl Sampling {
    /// Ollama's options for these fields: temperature and top_p default to 1.0.
    fn options(&self) -> Result<Map<String, Value>, ApiError> {
        if self.n.is_some_and(|n| n > 1) {
            return Err(ApiError::bad("\"n\" greater than 1 is not supported yet"));
        }
        let mut o = self.options.clone().unwrap_or_default();
        let mut set = |k: &str, v: Value| {
            o.insert(k.to_string(), v);
        };
        if let Some(n) = self.max_tokens.or(self.max_completion_tokens) {
            set("num_predict", json!(n));
        }
        set("temperature", json!(self.temperature.unwrap_or(1.0)));
        set("top_p", json!(self.top_p.unwrap_or(1.0)));
        if let Some(s) = self.seed {
            set("seed", json!(s));
        }
        if let Some(p) = self.frequency_penalty {
            set("frequency_penalty", json!(p));
        }
        if let Some(p) = self.presence_penalty {
            set("presence_penalty", json!(p));
        }
        match &self.stop {
            None | Some(Value::Null) => {}
            Some(v @ (Value::String(_) | Value::Array(_))) => set("stop", v.clone()),
            Some(_) => {
                return Err(ApiError::bad(
                    "\"stop\" must be a string or an array of strings",
                ))
            }
        }
        Ok(o)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReasoningOptions {
    effort: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChatCompletionRequest {
    model: Option<String>,
    messages: Option<Vec<OaMessage>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    response_format: Option<Value>,
    tools: Option<Vec<Tool>>,
    reasoning_effort: Option<String>,
    reasoning: Option<ReasoningOptions>,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
    keep_alive: Option<Value>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// `response_format` as Ollama's `format`: `text` is none, `json_object` is `"json"`,
/// `json_schema` is its schema (enforced whether or not `strict` is set).
fn response_format(v: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(f) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = |msg: &str| ApiError::bad(format!("invalid \"response_format\": {msg}"));
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => {
            let spec = f
                .get("json_schema")
                .ok_or_else(|| bad("\"json_schema\" is required for type json_schema"))?;
            match spec.get("strict") {
                None | Some(Value::Null) | Some(Value::Bool(_)) => {}
                Some(_) => return Err(bad("\"json_schema.strict\" must be a boolean")),
            }
            match spec.get("schema") {
                Some(schema @ Value::Object(_)) => Ok(Some(schema.clone())),
                None | Some(Value::Null) => Err(bad("\"json_schema.schema\" is required")),
                Some(_) => Err(bad("\"json_schema.schema\" must be an object")),
            }
        }
        Some(other) => Err(bad(&format!(
            "unknown type {other:?} (expected text, json_object or json_schema)"
        ))),
        None => Err(bad("\"type\" is required")),
    }
}

/// Ollama's `think` for OpenAI's `reasoning_effort` (or `reasoning.effort`): `none`
/// turns thinking off, OpenAI's extra tiers clamp to Ollama's nearest level.
fn think_from_effort(effort: Option<&str>) -> Result<Option<Value>, ApiError> {
    match effort {
        None | Some("") => Ok(None),
        Some("none") => Ok(Some(json!(false))),
        Some("minimal") => Ok(Some(json!("low"))),
        Some(e @ ("low" | "medium" | "high" | "max")) => Ok(Some(json!(e))),
        Some("xhigh" | "ultra") => Ok(Some(json!("max"))),
        Some(other) => Err(ApiError::bad(format!(
            "invalid reasoning value: {other:?} (must be \"minimal\", \"low\", \"medium\", \
             \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
        ))),
    }
}

/// OpenAI messages as Ollama messages: each content part is its own message; tool
/// calls' string arguments become objects; tool results get their tool's name.
fn to_messages(model: &str, msgs: Vec<OaMessage>) -> Result<Vec<Message>, ApiError> {
    let mut out: Vec<Message> = Vec::new();
    for (i, m) in msgs.into_iter().enumerate() {
        let mut texts = Vec::new();
        match m.content {
            None | Some(Value::Null) => texts.push(String::new()),
            Some(Value::String(s)) => texts.push(s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") => texts.push(
                            p.get("text")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .into(),
                        ),
                        Some("image_url") | Some("input_audio") => return Err(no_vision(model)),
                        other => {
                            return Err(ApiError::bad(format!(
                                "messages[{i}]: invalid content part type {other:?}"
                            )))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::bad(format!(
                    "messages[{i}]: invalid message content type"
                )))
            }
        }
        let mut calls = Vec::new();
        for c in m.tool_calls.unwrap_or_default() {
            let arguments = match c.function.arguments {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(o)) => o,
                Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
                Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                    Ok(Value::Object(o)) => o,
                    _ => {
                        return Err(ApiError::bad(format!(
                            "messages[{i}]: tool call arguments are not a JSON object"
                        )))
                    }
                },
                Some(_) => {
                    return Err(ApiError::bad(format!(
                        "messages[{i}]: tool call arguments are not a JSON object"
                    )))
                }
            };
            calls.push(ToolCall {
                id: c.id,
                function: ToolCallFunction {
                    index: None,
                    name: c.function.name,
                    arguments,
                },
            });
        }
        let tool_name = m.name.clone().or_else(|| {
            let id = m.tool_call_id.as_deref()?;
            out.iter()
                .flat_map(|m| m.tool_calls.iter().flatten())
                .find(|c| c.id.as_deref() == Some(id))
                .map(|c| c.function.name.clone())
        });
        let last = texts.len() - 1;
        for (j, text) in texts.into_iter().enumerate() {
            out.push(Message {
                thinking: m.reasoning.clone().filter(|_| j == 0),
                tool_calls: (j == last && !calls.is_empty()).then(|| calls.clone()),
                tool_name: tool_name.clone().filter(|_| m.role == "tool"),
                tool_call_id: m.tool_call_id.clone(),
                ..Message::new(m.role.clone(), text)
            });
        }
    }
    Ok(out)
}

fn finish_reason(reason: DoneReason, had_calls: bool) -> &'static str {
    match reason {
        DoneReason::Stop if had_calls => "tool_calls",
        other => other.as_str(),
    }
}

fn usage(m: &Metrics) -> Value {
    json!({
        "prompt_tokens": m.prompt_eval_count,
        "completion_tokens": m.eval_count,
        "total_tokens": m.prompt_eval_count + m.eval_count,
    })
}

fn oa_tool_call(c: &ToolCall, index: usize) -> Value {
    json!({
        "id": c.id,
        "index": index,
        "type": "function",
        "function": {
            "name": c.function.name,
            "arguments": Value::Object(c.function.arguments.clone()).to_string(),
        },
    })
}

struct ChatCompletionResponder {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    answer: AnswerParser,
    sent_role: bool,
    calls: usize,
}

impl ChatCompletionResponder {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    }

    fn delta(&mut self, a: Answer, logprobs: &[TokenLogprob]) -> Option<Value> {
        if a.is_empty() && logprobs.is_empty() {
            return None;
        }
        let (content, calls) = (a.content, a.tool_calls);
        let mut delta = json!({ "content": content });
        if !a.thinking.is_empty() {
            delta["reasoning"] = json!(a.thinking);
        }
        if !self.sent_role {
            delta["role"] = json!("assistant");
            self.sent_role = true;
        }
        if !calls.is_empty() {
            let list: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| oa_tool_call(c, self.calls + i))
                .collect();
            self.calls += calls.len();
            delta["tool_calls"] = Value::Array(list);
        }
        let mut chunk = self.chunk(delta, None);
        if !logprobs.is_empty() {
            chunk["choices"][0]["logprobs"] = json!({ "content": oa_logprobs(logprobs) });
        }
        Some(chunk)
    }
}

impl Responder for ChatCompletionResponder {
    type Chunk = Value;
    type Whole = Value;

    fn text(&mut self, text: String, logprobs: Vec<TokenLogprob>) -> Vec<Value> {
        let a = self.answer.push(&text);
        self.delta(a, &logprobs).into_iter().collect()
    }

    fn done(&mut self, reason: DoneReason, metrics: Metrics, _context: Vec<u32>) -> Vec<Value> {
        let mut out = Vec::new();
        let a = self.answer.finish();
        out.extend(self.delta(a, &[]));
        let finish = finish_reason(reason, self.calls > 0);
        out.push(self.chunk(json!({}), Some(finish)));
        if self.include_usage {
            let mut u = self.chunk(json!({}), None);
            u["choices"] = json!([]);
            u["usage"] = usage(&metrics);
            out.push(u);
        }
        out
    }

    fn merge(chunks: Vec<Value>) -> Option<Value> {
        let first = chunks.first()?.clone();
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        let mut logprobs: Option<Vec<Value>> = None;
        let mut finish = Value::Null;
        let mut total = Value::Null;
        for c in &chunks {
            if let Some(choice) = c.pointer("/choices/0") {
                if let Some(list) = choice
                    .pointer("/logprobs/content")
                    .and_then(Value::as_array)
                {
                    logprobs
                        .get_or_insert_default()
                        .extend(list.iter().cloned());
                }
                if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str) {
                    content.push_str(t);
                }
                if let Some(t) = choice.pointer("/delta/reasoning").and_then(Value::as_str) {
                    reasoning.push_str(t);
                }
                if let Some(list) = choice
                    .pointer("/delta/tool_calls")
                    .and_then(Value::as_array)
                {
                    calls.extend(list.iter().cloned());
                }
                if !choice["finish_reason"].is_null() {
                    finish = choice["finish_reason"].clone();
                }
            }
            if let Some(u) = c.get("usage") {
                total = u.clone();
            }
        }
        let mut message = json!({ "role": "assistant", "content": content });
        if !reasoning.is_empty() {
            message["reasoning"] = json!(reasoning);
        }
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        Some(json!({
            "id": first["id"],
            "object": "chat.completion",
            "created": first["created"],
            "model": first["model"],
            "system_fingerprint": "fp_ollama",
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": logprobs.map(|c| json!({ "content": c })),
                "finish_reason": finish,
            }],
            "usage": total,
        }))
    }
}

/// OpenAI's chat `logprobs.content[]` entries.
fn oa_logprobs(list: &[TokenLogprob]) -> Vec<Value> {
    list.iter()
        .map(|t| {
            json!({
                "token": t.token,
                "logprob": t.logprob,
                "bytes": t.bytes,
                "top_logprobs": t.top_logprobs.iter().map(|a| json!({
                    "token": a.token,
                    "logprob": a.logprob,
                    "bytes": a.bytes,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// OpenAI's legacy completions `logprobs` object for these tokens; `offset` counts
/// the characters of completion text before them.
fn legacy_logprobs(list: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for t in list {
        tokens.push(json!(t.token));
        token_logprobs.push(json!(t.logprob));
        let alternatives: Map<String, Value> = t
            .top_logprobs
            .iter()
            .map(|a| (a.token.clone(), json!(a.logprob)))
            .collect();
        top.push(Value::Object(alternatives));
        offsets.push(json!(*offset));
        *offset += t.token.chars().count();
    }
    json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// Append one chunk's legacy `logprobs` lists to the whole answer's.
fn merge_legacy_logprobs(whole: &mut Value, part: &Value) {
    if part.is_null() {
        return;
    }
    if whole.is_null() {
        *whole = part.clone();
        return;
    }
    for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
        if let (Some(w), Some(p)) = (
            whole.get_mut(key).and_then(Value::as_array_mut),
            part.get(key).and_then(Value::as_array),
        ) {
            w.extend(p.iter().cloned());
        }
    }
}

fn request_id(prefix: &str) -> String {
    format!("{prefix}-{}", rand::rng().random_range(0..999))
}

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    req: Result<ApiJson<ChatCompletionRequest>, ApiError>,
) -> OaResult<Response> {
    let ApiJson(req) = req?;
    let format = response_format(req.response_format.as_ref())?;
    let effort = req
        .reasoning
        .as_ref()
        .and_then(|r| r.effort.as_deref())
        .or(req.reasoning_effort.as_deref());
    let think = think_from_effort(effort)?;
    let stream = req.stream.unwrap_or(false);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let messages = to_messages(
        req.model.as_deref().unwrap_or_default(),
        req.messages.unwrap_or_default(),
    )?;
    let native = ChatRequest {
        model: req.model,
        messages: Some(messages),
        tools: req.tools,
        stream: Some(stream),
        keep_alive: req.keep_alive,
        options: Some(req.sampling.options()?),
        think,
        format,
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
        ..ChatRequest::default()
    }
    .validate()?;
    let model = native.common.model.clone();
    match chat::start(&state, &native).await? {
        Start::Running(gen, answer) => {
            let r = ChatCompletionResponder {
                id: request_id("chatcmpl"),
                created: chrono::Utc::now().timestamp(),
                model,
                include_usage: include_usage || !stream,
                answer,
                sent_role: false,
                calls: 0,
            };
            Ok(run::respond(gen, r, stream, Framing::Sse).await?)
        }
        // An empty conversation only loads the model.
        Start::Loaded(_) | Start::Rendered(_) => Err(ApiError::bad("\"messages\" is empty").into()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    model: Option<String>,
    prompt: Option<Value>,
    suffix: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    keep_alive: Option<Value>,
    /// How many alternatives to report per token (OpenAI's legacy `logprobs`).
    logprobs: Option<i64>,
    #[serde(flatten)]
    sampling: Sampling,
}

struct CompletionResponder {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    answer: AnswerParser,
    /// Characters of completion text so far (`text_offset` of the next token).
    offset: usize,
}

impl CompletionResponder {
    fn chunk(&self, text: String, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{ "text": text, "index": 0, "logprobs": null, "finish_reason": finish }],
        })
    }
}

impl Responder for CompletionResponder {
    type Chunk = Value;
    type Whole = Value;

    fn text(&mut self, text: String, logprobs: Vec<TokenLogprob>) -> Vec<Value> {
        let a = self.answer.push(&text);
        if a.content.is_empty() && logprobs.is_empty() {
            return Vec::new();
        }
        let mut chunk = self.chunk(a.content, None);
        if !logprobs.is_empty() {
            chunk["choices"][0]["logprobs"] = legacy_logprobs(&logprobs, &mut self.offset);
        }
        vec![chunk]
    }

    fn done(&mut self, reason: DoneReason, metrics: Metrics, _context: Vec<u32>) -> Vec<Value> {
        let mut out = Vec::new();
        let a = self.answer.finish();
        if !a.content.is_empty() {
            out.push(self.chunk(a.content, None));
        }
        out.push(self.chunk(String::new(), Some(reason.as_str())));
        if self.include_usage {
            let mut u = self.chunk(String::new(), None);
            u["choices"] = json!([]);
            u["usage"] = usage(&metrics);
            out.push(u);
        }
        out
    }

    fn merge(chunks: Vec<Value>) -> Option<Value> {
        let mut whole = chunks.first()?.clone();
        let mut text = String::new();
        let mut finish = Value::Null;
        let mut logprobs = Value::Null;
        for c in &chunks {
            if let Some(choice) = c.pointer("/choices/0") {
                text.push_str(choice["text"].as_str().unwrap_or_default());
                merge_legacy_logprobs(&mut logprobs, &choice["logprobs"]);
                if !choice["finish_reason"].is_null() {
                    finish = choice["finish_reason"].clone();
                }
            }
            if let Some(u) = c.get("usage") {
                whole["usage"] = u.clone();
            }
        }
        whole["choices"] =
            json!([{ "text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish }]);
        Some(whole)
    }
}

pub(crate) async fn completions(
    State(state): State<AppState>,
    req: Result<ApiJson<CompletionRequest>, ApiError>,
) -> OaResult<Response> {
    let ApiJson(req) = req?;
    let prompt = match req.prompt {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(_) => return Err(ApiError::bad("\"prompt\" must be a string").into()),
    };
    if prompt.is_empty() {
        return Err(ApiError::bad("\"prompt\" is required").into());
    }
    let stream = req.stream.unwrap_or(false);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let top = match req.logprobs {
        None => None,
        Some(n) if (0..=MAX_TOP_LOGPROBS as i64).contains(&n) => Some(n),
        Some(_) => return Err(ApiError::bad("\"logprobs\" must be between 0 and 20").into()),
    };
    let native = GenerateRequest {
        logprobs: top.map(|_| true),
        top_logprobs: top,
        model: req.model,
        prompt: Some(prompt),
        suffix: req.suffix,
        stream: Some(stream),
        keep_alive: req.keep_alive,
        options: Some(req.sampling.options()?),
        ..GenerateRequest::default()
    }
    .validate()?;
    let model = native.common.model.clone();
    match generate::start(&state, &native).await? {
        Start::Running(gen, answer) => {
            let r = CompletionResponder {
                id: request_id("cmpl"),
                created: chrono::Utc::now().timestamp(),
                model,
                include_usage: include_usage || !stream,
                answer,
                offset: 0,
            };
            Ok(run::respond(gen, r, stream, Framing::Sse).await?)
        }
        Start::Loaded(_) | Start::Rendered(_) => {
            Err(ApiError::bad("\"prompt\" is required").into())
        }
    }
}

fn model_object(m: &wick_store::ListedModel) -> Value {
    json!({
        "id": m.name.display_shortest(),
        "object": "model",
        "created": m.modified_at.timestamp(),
        "owned_by": m.name.namespace(),
    })
}

pub(crate) async fn list_models(State(state): State<AppState>) -> OaResult<Json<Value>> {
    let store = state.store.clone();
    let data =
        blocking(move || Ok(store.list()?.iter().map(model_object).collect::<Vec<_>>())).await?;
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub(crate) async fn get_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> OaResult<Json<Value>> {
    let store = state.store.clone();
    let m = blocking(move || {
        let name = ModelName::parse(&model)?;
        Ok(store.manifest(&name)?)
    })
    .await?;
    Ok(Json(model_object(&m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_translate() {
        let msgs: Vec<OaMessage> = serde_json::from_value(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}
        ]))
        .unwrap();
        let m = to_messages("m", msgs).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!((m[1].content.as_str(), m[2].content.as_str()), ("a", "b"));
        let call = &m[3].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.arguments["x"], 1);
        assert_eq!(m[4].tool_name.as_deref(), Some("f"));
    }

    #[test]
    fn sampling_defaults_like_ollama() {
        let s: Sampling = serde_json::from_value(json!({"max_tokens": 5, "stop": "x"})).unwrap();
        let o = s.options().unwrap();
        assert_eq!(o["num_predict"], 5);
        assert_eq!(o["temperature"], 1.0);
        assert_eq!(o["top_p"], 1.0);
        assert_eq!(o["stop"], "x");
        let s: Sampling = serde_json::from_value(json!({"n": 2})).unwrap();
        assert!(s.options().is_err());
    }
}
