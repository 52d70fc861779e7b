//! A response as the Responses API's typed events: `response.created`,
//! `response.in_progress`, then per output item `response.output_item.added`, its
//! deltas (`response.reasoning_summary_text.delta`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`) and `...done` events, and finally
//! `response.completed` (or `response.incomplete` when `max_output_tokens` cut it)
//! carrying the whole response. Every event has a `sequence_number`. A
//! non-streamed answer is the final event's response, so both are the same.

use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, TokenLogprob};
use wick_templating::{Message, ToolCall};

use super::{ResponseStore, StoredResponse};
use crate::answer::{Answer, AnswerParser};
use crate::openai::wire::{request_id, Usage};
use crate::run::Responder;
use crate::wire::Metrics;

/// Request fields a response echoes back.
pub(crate) struct Echo {
    pub instructions: Option<String>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub temperature: f64,
    pub top_p: f64,
    pub max_output_tokens: Option<i64>,
    pub previous_response_id: Option<String>,
    pub text_format: Value,
    pub reasoning: Option<Value>,
    pub truncation: String,
    pub metadata: Map<String, Value>,
}

/// An output item whose deltas are still streaming.
struct Open {
    id: String,
    index: usize,
    text: String,
}

pub(crate) struct ResponsesResponder {
    id: String,
    created: i64,
    model: String,
    echo: Echo,
    answer: AnswerParser,
    store: ResponseStore,
    /// The conversation so far (without `instructions`); the answer is added to it.
    conversation: Vec<Message>,
    sequence: u64,
    started: bool,
    /// Finished output items, in order.
    output: Vec<Value>,
    reasoning: Option<Open>,
    message: Option<Open>,
    thinking: String,
    content: String,
    calls: Vec<ToolCall>,
}

impl ResponsesResponder {
    pub fn new(
        id: String,
        model: String,
        echo: Echo,
        answer: AnswerParser,
        store: ResponseStore,
        conversation: Vec<Message>,
    ) -> Self {
        ResponsesResponder {
            id,
            created: chrono::Utc::now().timestamp(),
            model,
            echo,
            answer,
            store,
            conversation,
            sequence: 0,
            started: false,
            output: Vec::new(),
            reasoning: None,
            message: None,
            thinking: String::new(),
            content: String::new(),
            calls: Vec::new(),
        }
    }

    fn event(&mut self, kind: &str, mut data: Value) -> Value {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        data
    }

    /// The response object with this status, output and usage.
    fn response(&self, status: &str, usage: Option<&Usage>, incomplete: Option<&str>) -> Value {
        let e = &self.echo;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "completed_at": usage.map(|_| chrono::Utc::now().timestamp()),
            "status": status,
            "error": null,
            "incomplete_details": incomplete.map(|r| json!({ "reason": r })),
            "instructions": e.instructions,
            "max_output_tokens": e.max_output_tokens,
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": e.parallel_tool_calls,
            "previous_response_id": e.previous_response_id,
            "reasoning": e.reasoning.clone().unwrap_or(json!({ "effort": null, "summary": null })),
            "store": true,
            "temperature": e.temperature,
            "text": { "format": e.text_format },
            "tool_choice": e.tool_choice,
            "tools": e.tools,
            "top_p": e.top_p,
            "truncation": e.truncation,
            "usage": usage.map(Usage::responses),
            "metadata": e.metadata,
            "service_tier": "default",
        })
    }

    fn start(&mut self, out: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.response("in_progress", None, None);
        out.push(self.event("response.created", json!({ "response": r })));
        out.push(self.event("response.in_progress", json!({ "response": r })));
    }

    fn reasoning_item(&self, o: &Open) -> Value {
        json!({
            "id": o.id,
            "type": "reasoning",
            "summary": [{ "type": "summary_text", "text": o.text }],
        })
    }

    fn message_item(&self, o: &Open, status: &str) -> Value {
        json!({
            "id": o.id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [{ "type": "output_text", "text": o.text, "annotations": [], "logprobs": [] }],
        })
    }

    fn close_reasoning(&mut self, out: &mut Vec<Value>) {
        let Some(o) = self.reasoning.take() else {
            return;
        };
        let (id, index) = (o.id.clone(), o.index);
        let part = json!({ "type": "summary_text", "text": o.text });
        out.push(self.event(
            "response.reasoning_summary_text.done",
            json!({ "item_id": id, "output_index": index, "summary_index": 0, "text": o.text }),
        ));
        out.push(self.event(
            "response.reasoning_summary_part.done",
            json!({ "item_id": id, "output_index": index, "summary_index": 0, "part": part }),
        ));
        let item = self.reasoning_item(&o);
        self.output.push(item.clone());
        out.push(self.event(
            "response.output_item.done",
            json!({ "output_index": index, "item": item }),
        ));
    }

    fn close_message(&mut self, out: &mut Vec<Value>) {
        let Some(o) = self.message.take() else {
            return;
        };
        let (id, index) = (o.id.clone(), o.index);
        let part =
            json!({ "type": "output_text", "text": o.text, "annotations": [], "logprobs": [] });
        out.push(self.event(
            "response.output_text.done",
            json!({ "item_id": id, "output_index": index, "content_index": 0, "text": o.text, "logprobs": [] }),
        ));
        out.push(self.event(
            "response.content_part.done",
            json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part }),
        ));
        let item = self.message_item(&o, "completed");
        self.output.push(item.clone());
        out.push(self.event(
            "response.output_item.done",
            json!({ "output_index": index, "item": item }),
        ));
    }

    fn next_index(&self) -> usize {
        self.output.len()
            + usize::from(self.reasoning.is_some())
            + usize::from(self.message.is_some())
    }

    fn take(&mut self, a: Answer, out: &mut Vec<Value>) {
        if !a.thinking.is_empty() {
            if self.reasoning.is_none() {
                let o = Open {
                    id: request_id("rs"),
                    index: self.next_index(),
                    text: String::new(),
                };
                let item = json!({ "id": o.id, "type": "reasoning", "summary": [] });
                let (id, index) = (o.id.clone(), o.index);
                self.reasoning = Some(o);
                out.push(self.event(
                    "response.output_item.added",
                    json!({ "output_index": index, "item": item }),
                ));
                out.push(self.event(
                    "response.reasoning_summary_part.added",
                    json!({ "item_id": id, "output_index": index, "summary_index": 0,
                            "part": { "type": "summary_text", "text": "" } }),
                ));
            }
            self.thinking.push_str(&a.thinking);
            if let Some(o) = &mut self.reasoning {
                o.text.push_str(&a.thinking);
                let (id, index) = (o.id.clone(), o.index);
                out.push(self.event(
                    "response.reasoning_summary_text.delta",
                    json!({ "item_id": id, "output_index": index, "summary_index": 0, "delta": a.thinking }),
                ));
            }
        }
        if !a.content.is_empty() {
            self.close_reasoning(out);
            if self.message.is_none() {
                let o = Open {
                    id: request_id("msg"),
                    index: self.next_index(),
                    text: String::new(),
                };
                let item = self.message_item(&o, "in_progress");
                let (id, index) = (o.id.clone(), o.index);
                self.message = Some(o);
                let mut item = item;
                item["content"] = json!([]);
                out.push(self.event(
                    "response.output_item.added",
                    json!({ "output_index": index, "item": item }),
                ));
                out.push(self.event(
                    "response.content_part.added",
                    json!({ "item_id": id, "output_index": index, "content_index": 0,
                            "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] } }),
                ));
            }
            self.content.push_str(&a.content);
            if let Some(o) = &mut self.message {
                o.text.push_str(&a.content);
                let (id, index) = (o.id.clone(), o.index);
                out.push(self.event(
                    "response.output_text.delta",
                    json!({ "item_id": id, "output_index": index, "content_index": 0,
                            "delta": a.content, "logprobs": [] }),
                ));
            }
        }
        if !a.tool_calls.is_empty() {
            self.close_reasoning(out);
            self.close_message(out);
            for call in a.tool_calls {
                let id = request_id("fc");
                let index = self.next_index();
                let arguments = Value::Object(call.function.arguments.clone()).to_string();
                let mut item = json!({
                    "id": id,
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": call.id,
                    "name": call.function.name,
                    "arguments": "",
                });
                out.push(self.event(
                    "response.output_item.added",
                    json!({ "output_index": index, "item": item }),
                ));
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({ "item_id": id, "output_index": index, "delta": arguments }),
                ));
                out.push(self.event(
                    "response.function_call_arguments.done",
                    json!({ "item_id": id, "output_index": index, "name": call.function.name,
                            "arguments": arguments }),
                ));
                item["status"] = json!("completed");
                item["arguments"] = json!(arguments);
                self.output.push(item.clone());
                out.push(self.event(
                    "response.output_item.done",
                    json!({ "output_index": index, "item": item }),
                ));
                self.calls.push(call);
            }
        }
    }
}

impl Responder for ResponsesResponder {
    type Chunk = Value;
    type Whole = Value;

    fn text(&mut self, _choice: usize, text: String, _logprobs: Vec<TokenLogprob>) -> Vec<Value> {
        let mut out = Vec::new();
        self.start(&mut out);
        let a = self.answer.push(&text);
        self.take(a, &mut out);
        out
    }

    fn done(
        &mut self,
        _choice: usize,
        reason: DoneReason,
        metrics: Metrics,
        _context: Vec<u32>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        self.start(&mut out);
        let a = self.answer.finish();
        self.take(a, &mut out);
        self.close_reasoning(&mut out);
        self.close_message(&mut out);
        let mut usage = Usage::default();
        usage.add(&metrics);
        let (status, kind, incomplete) = match reason {
            DoneReason::Length => (
                "incomplete",
                "response.incomplete",
                Some("max_output_tokens"),
            ),
            DoneReason::Stop => ("completed", "response.completed", None),
        };
        let response = self.response(status, Some(&usage), incomplete);
        let mut conversation = std::mem::take(&mut self.conversation);
        conversation.push(Message {
            thinking: (!self.thinking.is_empty()).then(|| self.thinking.clone()),
            tool_calls: (!self.calls.is_empty()).then(|| self.calls.clone()),
            ..Message::new("assistant", self.content.clone())
        });
        self.store.put(
            self.id.clone(),
            StoredResponse {
                body: response.clone(),
                messages: conversation,
            },
        );
        out.push(self.event(kind, json!({ "response": response })));
        out
    }

    fn merge(chunks: Vec<Value>) -> Option<Value> {
        chunks
            .into_iter()
            .rev()
            .find(|c| {
                matches!(
                    c["type"].as_str(),
                    Some("response.completed" | "response.incomplete")
                )
            })
            .map(|mut c| c["response"].take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::ToolCalls;
    use wick_templating::ToolCallFormat;

    fn responder(store: &ResponseStore) -> ResponsesResponder {
        let tools = vec![json!({"type": "function", "function": {"name": "f", "parameters": {}}})];
        let answer = AnswerParser::new(
            None,
            Some(ToolCalls::new(ToolCallFormat::new("<tool_call>"), &tools)),
        );
        let echo = Echo {
            instructions: None,
            tools: vec![],
            tool_choice: json!("auto"),
            parallel_tool_calls: true,
            temperature: 1.0,
            top_p: 1.0,
            max_output_tokens: None,
            previous_response_id: None,
            text_format: json!({"type": "text"}),
            reasoning: None,
            truncation: "disabled".into(),
            metadata: Map::new(),
        };
        ResponsesResponder::new(
            "resp-1".into(),
            "m".into(),
            echo,
            answer,
            store.clone(),
            vec![],
        )
    }

    #[test]
    fn text_streams_as_typed_events_and_merges_into_the_response() {
        let store = ResponseStore::default();
        let mut r = responder(&store);
        let mut events = r.text(0, "Hel".into(), vec![]);
        events.extend(r.text(0, "lo".into(), vec![]));
        events.extend(r.done(0, DoneReason::Stop, Metrics::default(), vec![]));
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seq: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seq, (0..10).collect::<Vec<_>>());
        let whole = ResponsesResponder::merge(events).unwrap();
        assert_eq!(whole["status"], "completed");
        assert_eq!(whole["output"][0]["content"][0]["text"], "Hello");
        let kept = store.get("resp-1").unwrap();
        assert_eq!(kept.messages.last().unwrap().content, "Hello");
    }

    #[test]
    fn a_call_is_a_function_call_item() {
        let store = ResponseStore::default();
        let mut r = responder(&store);
        let mut events = r.text(
            0,
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>".into(),
            vec![],
        );
        events.extend(r.done(0, DoneReason::Stop, Metrics::default(), vec![]));
        assert!(events
            .iter()
            .any(|e| e["type"] == "response.function_call_arguments.delta"));
        let whole = ResponsesResponder::merge(events).unwrap();
        let item = &whole["output"][0];
        assert_eq!(
            (item["type"].as_str(), item["name"].as_str()),
            (Some("function_call"), Some("f"))
        );
        assert_eq!(item["arguments"], "{\"a\":1}");
        let kept = store.get("resp-1").unwrap();
        assert_eq!(
            kept.messages[0].tool_calls.as_ref().unwrap()[0]
                .function
                .name,
            "f"
        );
    }
}
