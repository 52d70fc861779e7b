//! `POST /v1/chat/completions` onto the native chat: messages translated, `n` choices
//! sampled from one prefill, `tool_choice` and `parallel_tool_calls` enforced,
//! `logprobs`, `response_format`, and usage with the cached prompt tokens.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, TokenLogprob};
use wick_templating::{Message, Tool, ToolCall, ToolCallFunction};

use super::error::{reject_unknown, OaResult, OpenAiError};
use super::wire::{
    call_arguments, finish_reason, include_usage, oa_logprobs, oa_tool_call, request_id,
    response_format, think_from_effort, Sampling, StreamOptions, Usage,
};
use crate::answer::{Answer, AnswerParser};
use crate::chat::{self, ChatRequest};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::request::no_vision;
use crate::run::{self, Framing, Responder, Start};
use crate::tool_choice::ToolChoice;
use crate::wire::Metrics;
use crate::AppState;

/// OpenAI fields wick does not implement (a 400 naming the field).
const UNSUPPORTED: &[&str] = &[
    "logit_bias",
    "functions",
    "function_call",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "verbosity",
];

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
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    reasoning_effort: Option<String>,
    reasoning: Option<ReasoningOptions>,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
    keep_alive: Option<Value>,
    /// Accepted, as OpenAI's end-user identifiers and tags (nothing to do with them).
    #[allow(dead_code)]
    user: Option<String>,
    #[allow(dead_code)]
    metadata: Option<Map<String, Value>>,
    #[allow(dead_code)]
    safety_identifier: Option<String>,
    #[allow(dead_code)]
    prompt_cache_key: Option<String>,
    store: Option<bool>,
    service_tier: Option<String>,
    #[serde(flatten)]
    sampling: Sampling,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Checks of the fields accepted only in some values.
fn check_accepted(req: &ChatCompletionRequest) -> OaResult<()> {
    if req.store == Some(true) {
        return Err(OpenAiError::invalid(
            "store",
            "\"store\": true is not supported (wick stores no chat completions)",
        ));
    }
    if let Some(t) = req.service_tier.as_deref() {
        if !matches!(t, "auto" | "default") {
            return Err(OpenAiError::invalid(
                "service_tier",
                format!("\"service_tier\" {t:?} is not supported (only \"auto\" or \"default\")"),
            ));
        }
    }
    Ok(())
}

/// OpenAI messages as Ollama messages: each content part is its own message; tool
/// calls' string arguments become objects; tool results get their tool's name.
pub(crate) fn to_messages(model: &str, msgs: Vec<OaMessage>) -> Result<Vec<Message>, ApiError> {
    let mut out: Vec<Message> = Vec::new();
    for (i, m) in msgs.into_iter().enumerate() {
        let mut texts = Vec::new();
        match m.content {
            None | Some(Value::Null) => texts.push(String::new()),
            Some(Value::String(s)) => texts.push(s),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") => match p.get("text") {
                            Some(Value::String(t)) => texts.push(t.clone()),
                            _ => {
                                return Err(ApiError::bad(format!(
                                "messages[{i}].content[{j}]: a text part needs a string \"text\""
                            )))
                            }
                        },
                        Some("image_url") | Some("input_audio") | Some("file") => {
                            return Err(no_vision(model))
                        }
                        other => {
                            return Err(ApiError::bad(format!(
                                "messages[{i}]: invalid content part type {other:?}"
                            )))
                        }
                    }
                }
                if texts.is_empty() {
                    texts.push(String::new());
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
            calls.push(ToolCall {
                id: c.id,
                function: ToolCallFunction {
                    index: None,
                    name: c.function.name,
                    arguments: call_arguments(c.function.arguments, &format!("messages[{i}]"))?,
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

/// One choice's state while its answer streams.
struct ChoiceState {
    answer: AnswerParser,
    sent_role: bool,
    calls: usize,
}

struct ChatCompletionResponder {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    choices: Vec<ChoiceState>,
    ended: usize,
    usage: Usage,
}

impl ChatCompletionResponder {
    fn chunk(&self, index: usize, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{ "index": index, "delta": delta, "finish_reason": finish }],
        })
    }

    fn delta(&mut self, index: usize, a: Answer, logprobs: &[TokenLogprob]) -> Option<Value> {
        if a.is_empty() && logprobs.is_empty() {
            return None;
        }
        let c = self.choices.get_mut(index)?;
        let mut delta = json!({ "content": a.content });
        if !a.thinking.is_empty() {
            delta["reasoning"] = json!(a.thinking);
        }
        if !c.sent_role {
            delta["role"] = json!("assistant");
            c.sent_role = true;
        }
        if !a.tool_calls.is_empty() {
            let list: Vec<Value> = a
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, call)| oa_tool_call(call, c.calls + i))
                .collect();
            c.calls += a.tool_calls.len();
            delta["tool_calls"] = Value::Array(list);
        }
        let mut chunk = self.chunk(index, delta, None);
        if !logprobs.is_empty() {
            chunk["choices"][0]["logprobs"] = json!({ "content": oa_logprobs(logprobs) });
        }
        Some(chunk)
    }
}

impl Responder for ChatCompletionResponder {
    type Chunk = Value;
    type Whole = Value;

    fn text(&mut self, choice: usize, text: String, logprobs: Vec<TokenLogprob>) -> Vec<Value> {
        let Some(c) = self.choices.get_mut(choice) else {
            return Vec::new();
        };
        let a = c.answer.push(&text);
        self.delta(choice, a, &logprobs).into_iter().collect()
    }

    fn done(
        &mut self,
        choice: usize,
        reason: DoneReason,
        metrics: Metrics,
        _context: Vec<u32>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let Some(c) = self.choices.get_mut(choice) else {
            return out;
        };
        let a = c.answer.finish();
        out.extend(self.delta(choice, a, &[]));
        let calls = self.choices.get(choice).map_or(0, |c| c.calls);
        out.push(self.chunk(choice, json!({}), Some(finish_reason(reason, calls > 0))));
        self.usage.add(&metrics);
        self.ended += 1;
        if self.include_usage && self.ended == self.choices.len() {
            let mut u = self.chunk(0, json!({}), None);
            u["choices"] = json!([]);
            u["usage"] = self.usage.chat();
            out.push(u);
        }
        out
    }

    fn merge(chunks: Vec<Value>) -> Option<Value> {
        #[derive(Default)]
        struct Whole {
            content: String,
            reasoning: String,
            calls: Vec<Value>,
            logprobs: Option<Vec<Value>>,
            finish: Value,
        }
        let first = chunks.first()?.clone();
        let mut choices: Vec<Whole> = Vec::new();
        let mut total = Value::Null;
        for c in &chunks {
            if let Some(choice) = c.pointer("/choices/0") {
                let i = choice["index"].as_u64().unwrap_or(0) as usize;
                if choices.len() <= i {
                    choices.resize_with(i + 1, Whole::default);
                }
                let w = &mut choices[i];
                if let Some(list) = choice
                    .pointer("/logprobs/content")
                    .and_then(Value::as_array)
                {
                    w.logprobs
                        .get_or_insert_default()
                        .extend(list.iter().cloned());
                }
                if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str) {
                    w.content.push_str(t);
                }
                if let Some(t) = choice.pointer("/delta/reasoning").and_then(Value::as_str) {
                    w.reasoning.push_str(t);
                }
                if let Some(list) = choice
                    .pointer("/delta/tool_calls")
                    .and_then(Value::as_array)
                {
                    w.calls.extend(list.iter().cloned());
                }
                if !choice["finish_reason"].is_null() {
                    w.finish = choice["finish_reason"].clone();
                }
            }
            if let Some(u) = c.get("usage") {
                total = u.clone();
            }
        }
        let choices: Vec<Value> = choices
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let mut message = json!({ "role": "assistant", "content": w.content });
                if !w.reasoning.is_empty() {
                    message["reasoning"] = json!(w.reasoning);
                }
                if !w.calls.is_empty() {
                    message["tool_calls"] = Value::Array(w.calls);
                }
                json!({
                    "index": i,
                    "message": message,
                    "logprobs": w.logprobs.map(|c| json!({ "content": c })),
                    "finish_reason": w.finish,
                })
            })
            .collect();
        Some(json!({
            "id": first["id"],
            "object": "chat.completion",
            "created": first["created"],
            "model": first["model"],
            "system_fingerprint": "fp_ollama",
            "choices": choices,
            "usage": total,
        }))
    }
}

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    req: Result<ApiJson<ChatCompletionRequest>, ApiError>,
) -> OaResult<Response> {
    let ApiJson(req) = req?;
    reject_unknown(&req.rest, UNSUPPORTED)?;
    check_accepted(&req)?;
    let format = response_format(req.response_format.as_ref(), "response_format")?;
    let effort = req
        .reasoning
        .as_ref()
        .and_then(|r| r.effort.as_deref())
        .or(req.reasoning_effort.as_deref());
    let think = think_from_effort(effort)?;
    let stream = req.stream.unwrap_or(false);
    let include_usage = include_usage(req.stream_options.as_ref());
    let tool_choice = ToolChoice::parse(req.tool_choice.as_ref()).map_err(|e| OpenAiError {
        error: e,
        param: Some("tool_choice".into()),
    })?;
    tool_choice
        .check_offered(req.tools.as_deref().unwrap_or_default())
        .map_err(|e| OpenAiError {
            error: e,
            param: Some("tool_choice".into()),
        })?;
    let choices = req.sampling.choices()?;
    let messages = to_messages(
        req.model.as_deref().unwrap_or_default(),
        req.messages.unwrap_or_default(),
    )?;
    let mut native = ChatRequest {
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
    native.tool_choice = tool_choice;
    native.one_call = req.parallel_tool_calls == Some(false);
    native.choices = choices;
    let model = native.common.model.clone();
    match chat::start(&state, &native).await? {
        Start::Running(gen, answer) => {
            let r = ChatCompletionResponder {
                id: request_id("chatcmpl"),
                created: chrono::Utc::now().timestamp(),
                model,
                include_usage: include_usage || !stream,
                choices: (0..gen.choices())
                    .map(|_| ChoiceState {
                        answer: answer.clone(),
                        sent_role: false,
                        calls: 0,
                    })
                    .collect(),
                ended: 0,
                usage: Usage::default(),
            };
            Ok(run::respond(gen, r, stream, Framing::Sse).await?)
        }
        // An empty conversation only loads the model.
        Start::Loaded(_) | Start::Rendered(_) => {
            Err(OpenAiError::invalid("messages", "\"messages\" is empty"))
        }
    }
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
    fn image_parts_are_refused_by_name() {
        let msgs: Vec<OaMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}
        ]))
        .unwrap();
        let e = to_messages("smollm2", msgs).unwrap_err();
        assert_eq!(e.to_string(), "\"smollm2\" does not support vision");
    }

    #[test]
    fn fields_are_taken_or_refused_by_name() {
        let req: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m", "messages": [], "n": 2, "temperature": 0, "user": "u",
            "metadata": {"k": "v"}, "logit_bias": {"5": 1}
        }))
        .unwrap();
        assert_eq!(req.sampling.n, Some(2));
        assert_eq!(req.rest.len(), 1, "{:?}", req.rest);
        let e = reject_unknown(&req.rest, UNSUPPORTED).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
    }

    fn responder(n: usize) -> ChatCompletionResponder {
        ChatCompletionResponder {
            id: "chatcmpl-x".into(),
            created: 0,
            model: "m".into(),
            include_usage: true,
            choices: (0..n)
                .map(|_| ChoiceState {
                    answer: AnswerParser::default(),
                    sent_role: false,
                    calls: 0,
                })
                .collect(),
            ended: 0,
            usage: Usage::default(),
        }
    }

    #[test]
    fn choices_stream_with_their_index_and_merge_in_order() {
        let mut r = responder(2);
        let m = Metrics {
            prompt_eval_count: 7,
            eval_count: 2,
            ..Metrics::default()
        };
        let mut chunks = Vec::new();
        chunks.extend(r.text(1, "b".into(), vec![]));
        chunks.extend(r.text(0, "a".into(), vec![]));
        chunks.extend(r.done(1, DoneReason::Stop, m, vec![]));
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        chunks.extend(r.done(0, DoneReason::Length, m, vec![]));
        assert_eq!(chunks[0]["choices"][0]["index"], 1);
        let whole = ChatCompletionResponder::merge(chunks).unwrap();
        assert_eq!(whole["choices"][0]["message"]["content"], "a");
        assert_eq!(whole["choices"][0]["finish_reason"], "length");
        assert_eq!(whole["choices"][1]["message"]["content"], "b");
        assert_eq!(whole["usage"]["prompt_tokens"], 7);
        assert_eq!(whole["usage"]["completion_tokens"], 4);
    }
}
