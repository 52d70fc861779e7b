//! `POST /v1/responses` (OpenAI's Responses API, used by the Codex CLI and the
//! Agents SDK) onto the native chat, streamed as typed server-sent events or not;
//! `GET /v1/responses/{id}`.
//!
//! `instructions` become the system message; `input` is text or items (messages,
//! `function_call`, `function_call_output`, `reasoning`); function tools are offered
//! as chat tools. Every completed response is kept in memory (the newest
//! [`KEPT_RESPONSES`]) with its whole conversation, so `previous_response_id`
//! continues it (the previous `instructions` are not carried over, as OpenAI
//! specifies). The events are built in [`stream`].

mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wick_templating::{Message, Tool, ToolCall, ToolCallFunction};

use super::error::{reject_unknown, OaResult, OpenAiError};
use super::wire::{call_arguments, request_id, response_format, think_from_effort, Sampling};
use crate::chat::{self, ChatRequest};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::request::no_vision;
use crate::run::{self, Framing, Start};
use crate::tool_choice::ToolChoice;
use crate::AppState;
use stream::ResponsesResponder;

/// How many finished responses are kept for `previous_response_id`.
pub(crate) const KEPT_RESPONSES: usize = 512;

const UNSUPPORTED: &[&str] = &[
    "background",
    "conversation",
    "prompt",
    "max_tool_calls",
    "top_logprobs",
    "include",
];

/// A finished response: its body (for `GET`) and the conversation it ends (for
/// `previous_response_id`).
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub body: Value,
    pub messages: Vec<Message>,
}

/// Responses of this server's lifetime, the newest [`KEPT_RESPONSES`].
#[derive(Clone, Default)]
pub(crate) struct ResponseStore {
    inner: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<String, StoredResponse>,
    order: VecDeque<String>,
}

impl ResponseStore {
    pub fn put(&self, id: String, r: StoredResponse) {
        let mut k = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if k.by_id.insert(id.clone(), r).is_none() {
            k.order.push_back(id);
        }
        while k.order.len() > KEPT_RESPONSES {
            if let Some(old) = k.order.pop_front() {
                k.by_id.remove(&old);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<StoredResponse> {
        let k = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        k.by_id.get(id).cloned()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReasoningOptions {
    effort: Option<String>,
    #[allow(dead_code)]
    summary: Option<String>,
    #[allow(dead_code)]
    generate_summary: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TextOptions {
    format: Option<Value>,
    #[allow(dead_code)]
    verbosity: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResponsesRequest {
    model: Option<String>,
    input: Option<Value>,
    instructions: Option<String>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    stream: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<i64>,
    text: Option<TextOptions>,
    reasoning: Option<ReasoningOptions>,
    previous_response_id: Option<String>,
    truncation: Option<String>,
    keep_alive: Option<Value>,
    options: Option<Map<String, Value>>,
    /// Every response is kept (in memory, bounded) whatever `store` says.
    #[allow(dead_code)]
    store: Option<bool>,
    metadata: Option<Map<String, Value>>,
    #[allow(dead_code)]
    user: Option<String>,
    #[allow(dead_code)]
    safety_identifier: Option<String>,
    #[allow(dead_code)]
    prompt_cache_key: Option<String>,
    service_tier: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Responses function tools (`{"type": "function", "name", "parameters", ...}`) as
/// chat tools.
fn chat_tools(tools: Vec<Value>) -> OaResult<Vec<Tool>> {
    tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
            if kind != "function" {
                return Err(OpenAiError::invalid(
                    "tools",
                    format!(
                        "tools[{i}]: tools of type {kind:?} are not supported (only \"function\")"
                    ),
                ));
            }
            let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
                OpenAiError::invalid("tools", format!("tools[{i}]: \"name\" is required"))
            })?;
            let mut f = json!({ "name": name });
            for key in ["description", "parameters"] {
                if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                    f[key] = v.clone();
                }
            }
            Ok(json!({ "type": "function", "function": f }))
        })
        .collect()
}

/// The text of an input message's content: a string or a list of text parts.
fn content_text(model: &str, content: Option<&Value>, what: &str) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text" | "refusal") => {
                        let t = p
                            .get("text")
                            .or_else(|| p.get("refusal"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        text.push_str(t);
                    }
                    Some("input_image" | "input_file" | "input_audio") => {
                        return Err(no_vision(model))
                    }
                    other => {
                        return Err(ApiError::bad(format!(
                            "{what}: invalid content part type {other:?}"
                        )))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::bad(format!("{what}: invalid content"))),
    }
}

/// `input` as chat messages after `history` (the previous response's conversation):
/// a string is one user message; items are messages, function calls (joined into
/// the assistant message before them), their outputs (tool messages named after
/// their call), and reasoning (the next assistant message's thinking).
fn input_messages(
    model: &str,
    input: Option<Value>,
    history: &[Message],
) -> OaResult<Vec<Message>> {
    let items = match input {
        None | Some(Value::Null) => {
            return Err(OpenAiError::invalid("input", "\"input\" is required"))
        }
        Some(Value::String(s)) => return Ok(vec![Message::new("user", s)]),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "input",
                "\"input\" must be a string or a list of items",
            ))
        }
    };
    let mut out: Vec<Message> = Vec::new();
    let mut thinking: Option<String> = None;
    for (i, item) in items.into_iter().enumerate() {
        let what = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .or(item.get("role").map(|_| "message"))
            .unwrap_or_default();
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("developer") => "system",
                    Some(r @ ("user" | "system" | "assistant")) => r,
                    other => {
                        return Err(OpenAiError::invalid(
                            "input",
                            format!("{what}: invalid role {other:?}"),
                        ))
                    }
                };
                let text = content_text(model, item.get("content"), &what)?;
                let mut m = Message::new(role, text);
                if role == "assistant" {
                    m.thinking = thinking.take();
                }
                out.push(m);
            }
            "function_call" => {
                let field = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
                let name = field("name").ok_or_else(|| {
                    OpenAiError::invalid("input", format!("{what}: \"name\" is required"))
                })?;
                let call = ToolCall {
                    id: field("call_id").or_else(|| field("id")),
                    function: ToolCallFunction {
                        index: None,
                        name,
                        arguments: call_arguments(item.get("arguments").cloned(), &what)?,
                    },
                };
                match out.last_mut() {
                    Some(m) if m.role == "assistant" => {
                        m.tool_calls.get_or_insert_default().push(call)
                    }
                    _ => out.push(Message {
                        thinking: thinking.take(),
                        tool_calls: Some(vec![call]),
                        ..Message::new("assistant", "")
                    }),
                }
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                    OpenAiError::invalid("input", format!("{what}: \"call_id\" is required"))
                })?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    other => content_text(model, other, &what)?,
                };
                let tool_name = history
                    .iter()
                    .chain(out.iter())
                    .flat_map(|m| m.tool_calls.iter().flatten())
                    .find(|c| c.id.as_deref() == Some(call_id))
                    .map(|c| c.function.name.clone());
                out.push(Message {
                    tool_name,
                    tool_call_id: Some(call_id.to_string()),
                    ..Message::new("tool", output)
                });
            }
            "reasoning" => {
                let text: String = item
                    .get("summary")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .chain(
                        item.get("content")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten(),
                    )
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                if !text.is_empty() {
                    thinking = Some(text);
                }
            }
            other => {
                return Err(OpenAiError::invalid(
                    "input",
                    format!("{what}: items of type {other:?} are not supported"),
                ))
            }
        }
    }
    Ok(out)
}

fn check_accepted(req: &ResponsesRequest) -> OaResult<()> {
    if let Some(t) = req.service_tier.as_deref() {
        if !matches!(t, "auto" | "default") {
            return Err(OpenAiError::invalid(
                "service_tier",
                format!("\"service_tier\" {t:?} is not supported (only \"auto\" or \"default\")"),
            ));
        }
    }
    match req.truncation.as_deref() {
        None | Some("auto" | "disabled") => Ok(()),
        Some(other) => Err(OpenAiError::invalid(
            "truncation",
            format!("invalid \"truncation\" {other:?} (expected \"auto\" or \"disabled\")"),
        )),
    }
}

pub(crate) async fn create_response(
    State(state): State<AppState>,
    req: Result<ApiJson<ResponsesRequest>, ApiError>,
) -> OaResult<Response> {
    let ApiJson(req) = req?;
    reject_unknown(&req.rest, UNSUPPORTED)?;
    check_accepted(&req)?;
    let model_name = req.model.clone().unwrap_or_default();
    let history = match &req.previous_response_id {
        Some(id) => {
            let prev = state.responses.get(id).ok_or_else(|| OpenAiError {
                error: ApiError::NotFound(format!("previous response {id:?} not found")),
                param: Some("previous_response_id".into()),
            })?;
            prev.messages
        }
        None => Vec::new(),
    };
    let input = input_messages(&model_name, req.input.clone(), &history)?;
    let mut conversation = history;
    conversation.extend(input);
    let mut messages = Vec::new();
    if let Some(i) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(Message::new("system", i));
    }
    messages.extend(conversation.iter().cloned());
    if messages.is_empty() {
        return Err(OpenAiError::invalid("input", "\"input\" is empty"));
    }

    let format = response_format(
        req.text.as_ref().and_then(|t| t.format.as_ref()),
        "text.format",
    )?;
    let think = think_from_effort(req.reasoning.as_ref().and_then(|r| r.effort.as_deref()))?;
    let tool_choice = ToolChoice::parse(req.tool_choice.as_ref()).map_err(|e| OpenAiError {
        error: e,
        param: Some("tool_choice".into()),
    })?;
    let tools = chat_tools(req.tools.clone().unwrap_or_default())?;
    tool_choice.check_offered(&tools).map_err(|e| OpenAiError {
        error: e,
        param: Some("tool_choice".into()),
    })?;
    let sampling = Sampling {
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        options: req.options.clone(),
        ..Sampling::default()
    };
    let stream = req.stream.unwrap_or(false);
    let mut native = ChatRequest {
        model: req.model.clone(),
        messages: Some(messages),
        tools: Some(tools),
        stream: Some(stream),
        keep_alive: req.keep_alive.clone(),
        options: Some(sampling.options()?),
        think,
        format,
        truncate: Some(req.truncation.as_deref() != Some("disabled")),
        ..ChatRequest::default()
    }
    .validate()?;
    native.tool_choice = tool_choice.clone();
    native.one_call = req.parallel_tool_calls == Some(false);
    let model = native.common.model.clone();
    match chat::start(&state, &native).await? {
        Start::Running(gen, answer) => {
            let echo = stream::Echo {
                instructions: req.instructions.clone(),
                tools: req.tools.clone().unwrap_or_default(),
                tool_choice: req.tool_choice.clone().unwrap_or(json!("auto")),
                parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
                temperature: req.temperature.unwrap_or(1.0),
                top_p: req.top_p.unwrap_or(1.0),
                max_output_tokens: req.max_output_tokens,
                previous_response_id: req.previous_response_id.clone(),
                text_format: req
                    .text
                    .as_ref()
                    .and_then(|t| t.format.clone())
                    .unwrap_or(json!({ "type": "text" })),
                reasoning: req
                    .reasoning
                    .as_ref()
                    .map(|r| json!({ "effort": r.effort })),
                truncation: req.truncation.clone().unwrap_or("disabled".into()),
                metadata: req.metadata.clone().unwrap_or_default(),
            };
            let r = ResponsesResponder::new(
                request_id("resp"),
                model,
                echo,
                answer,
                state.responses.clone(),
                conversation,
            );
            Ok(run::respond(gen, r, stream, Framing::SseEvents).await?)
        }
        Start::Loaded(_) | Start::Rendered(_) => {
            Err(OpenAiError::invalid("input", "\"input\" is empty"))
        }
    }
}

pub(crate) async fn get_response(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> OaResult<Json<Value>> {
    let r = state.responses.get(&id).ok_or_else(|| {
        OpenAiError::from(ApiError::NotFound(format!("response {id:?} not found")))
    })?;
    Ok(Json(r.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_messages() {
        let history = vec![Message {
            tool_calls: Some(vec![ToolCall {
                id: Some("call_old".into()),
                function: ToolCallFunction {
                    index: None,
                    name: "old_fn".into(),
                    arguments: Map::new(),
                },
            }]),
            ..Message::new("assistant", "")
        }];
        let input = json!([
            {"role": "developer", "content": "be brief"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"x\": 1}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            {"type": "function_call_output", "call_id": "call_old", "output": "7"}
        ]);
        let m = input_messages("m", Some(input), &history).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(
            (m[0].role.as_str(), m[1].content.as_str()),
            ("system", "hi")
        );
        assert_eq!(m[2].thinking.as_deref(), Some("hmm"));
        assert_eq!(
            m[2].tool_calls.as_ref().unwrap()[0].function.arguments["x"],
            1
        );
        assert_eq!(m[3].tool_name.as_deref(), Some("f"));
        assert_eq!(m[4].tool_name.as_deref(), Some("old_fn"));
        let e = input_messages("m", Some(json!([{"type": "web_search_call"}])), &[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = input_messages(
            "m",
            Some(json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])),
            &[],
        )
        .unwrap_err();
        assert!(e.error.to_string().contains("does not support vision"));
    }

    #[test]
    fn only_function_tools() {
        let t = chat_tools(vec![
            json!({"type": "function", "name": "f", "parameters": {"type": "object"}}),
        ])
        .unwrap();
        assert_eq!(t[0]["function"]["name"], "f");
        assert!(chat_tools(vec![json!({"type": "web_search"})]).is_err());
    }

    #[test]
    fn the_store_keeps_the_newest() {
        let s = ResponseStore::default();
        for i in 0..KEPT_RESPONSES + 1 {
            s.put(
                format!("r{i}"),
                StoredResponse {
                    body: json!({}),
                    messages: vec![],
                },
            );
        }
        assert!(s.get("r0").is_none());
        assert!(s.get(&format!("r{KEPT_RESPONSES}")).is_some());
    }
}
