//! Pieces the OpenAI routes share: sampling fields and their Ollama options, `n`,
//! `response_format`, reasoning effort, usage, tool calls and log probabilities in
//! OpenAI's shapes, and response ids.

use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, TokenLogprob};
use wick_templating::ToolCall;

use super::error::{OaResult, OpenAiError};
use crate::error::ApiError;
use crate::wire::Metrics;

/// Most choices one request may ask for (`n`).
pub(crate) const MAX_CHOICES: i64 = 16;

#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// Whether a streamed answer ends with a usage chunk.
pub(crate) fn include_usage(o: Option<&StreamOptions>) -> bool {
    o.and_then(|o| o.include_usage).unwrap_or(false)
}

/// Sampling fields shared by both completion routes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Sampling {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub stop: Option<Value>,
    pub n: Option<i64>,
    pub options: Option<Map<String, Value>>,
}

impl Sampling {
    /// Ollama's options for these fields: temperature and top_p default to 1.0.
    pub fn options(&self) -> OaResult<Map<String, Value>> {
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
                return Err(OpenAiError::invalid(
                    "stop",
                    "\"stop\" must be a string or an array of strings",
                ))
            }
        }
        Ok(o)
    }

    /// `n`: how many choices to sample (1 to [`MAX_CHOICES`]).
    pub fn choices(&self) -> OaResult<usize> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n as usize),
            Some(_) => Err(OpenAiError::invalid(
                "n",
                format!("\"n\" must be between 1 and {MAX_CHOICES}"),
            )),
        }
    }
}

/// `response_format` as Ollama's `format`: `text` is none, `json_object` is `"json"`,
/// `json_schema` is its schema (enforced whether or not `strict` is set). The
/// Responses API's `text.format` has the schema's fields at its top level.
pub(crate) fn response_format(v: Option<&Value>, param: &str) -> OaResult<Option<Value>> {
    let Some(f) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = |msg: &str| OpenAiError::invalid(param, format!("invalid \"{param}\": {msg}"));
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => {
            let spec = match f.get("json_schema") {
                Some(spec) => spec,
                None if f.get("schema").is_some() => f,
                None => return Err(bad("\"json_schema\" is required for type json_schema")),
            };
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
pub(crate) fn think_from_effort(effort: Option<&str>) -> Result<Option<Value>, ApiError> {
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

/// A tool call's `arguments` as sent by a client (a JSON string, or an object) as
/// an object.
pub(crate) fn call_arguments(v: Option<Value>, what: &str) -> Result<Map<String, Value>, ApiError> {
    let bad = || ApiError::bad(format!("{what}: tool call arguments are not a JSON object"));
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(o)) => Ok(o),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

pub(crate) fn finish_reason(reason: DoneReason, had_calls: bool) -> &'static str {
    match reason {
        DoneReason::Stop if had_calls => "tool_calls",
        other => other.as_str(),
    }
}

/// Token counts of an answer with one or more choices: the prompt counted once,
/// the completions of every choice added up.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Usage {
    pub prompt: usize,
    pub cached: usize,
    pub completion: usize,
}

impl Usage {
    pub fn add(&mut self, m: &Metrics) {
        self.prompt = self.prompt.max(m.prompt_eval_count);
        self.cached = self.cached.max(m.prompt_cached);
        self.completion += m.eval_count;
    }

    /// Another prompt's counts (completions with a list of prompts).
    pub fn add_prompt(&mut self, m: &Metrics) {
        self.prompt += m.prompt_eval_count;
        self.cached += m.prompt_cached;
        self.completion += m.eval_count;
    }

    /// Chat and completions' `usage`.
    pub fn chat(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": { "cached_tokens": self.cached },
        })
    }

    /// The Responses API's `usage`.
    pub fn responses(&self) -> Value {
        json!({
            "input_tokens": self.prompt,
            "output_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "input_tokens_details": { "cached_tokens": self.cached },
            "output_tokens_details": { "reasoning_tokens": 0 },
        })
    }
}

pub(crate) fn oa_tool_call(c: &ToolCall, index: usize) -> Value {
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

/// OpenAI's chat `logprobs.content[]` entries.
pub(crate) fn oa_logprobs(list: &[TokenLogprob]) -> Vec<Value> {
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
/// the characters of choice text before them.
pub(crate) fn legacy_logprobs(list: &[TokenLogprob], offset: &mut usize) -> Value {
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
pub(crate) fn merge_legacy_logprobs(whole: &mut Value, part: &Value) {
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

/// A response id: `prefix-` and random alphanumerics.
pub(crate) fn request_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..24)
        .map(|_| {
            let c = rng.random_range(0..36u8);
            (if c < 10 { b'0' + c } else { b'a' + c - 10 }) as char
        })
        .collect();
    format!("{prefix}-{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_defaults_like_ollama() {
        let s: Sampling = serde_json::from_value(json!({"max_tokens": 5, "stop": "x"})).unwrap();
        let o = s.options().unwrap();
        assert_eq!(o["num_predict"], 5);
        assert_eq!(o["temperature"], 1.0);
        assert_eq!(o["top_p"], 1.0);
        assert_eq!(o["stop"], "x");
        assert_eq!(s.choices().unwrap(), 1);
        let s: Sampling = serde_json::from_value(json!({"n": 3})).unwrap();
        assert_eq!(s.choices().unwrap(), 3);
        for n in [0, MAX_CHOICES + 1] {
            let s: Sampling = serde_json::from_value(json!({ "n": n })).unwrap();
            assert_eq!(s.choices().unwrap_err().param.as_deref(), Some("n"));
        }
    }

    #[test]
    fn usage_counts_the_prompt_once_and_every_choice() {
        let m = Metrics {
            prompt_eval_count: 10,
            prompt_cached: 9,
            eval_count: 4,
            ..Metrics::default()
        };
        let mut u = Usage::default();
        u.add(&m);
        u.add(&m);
        let v = u.chat();
        assert_eq!(v["prompt_tokens"], 10);
        assert_eq!(v["completion_tokens"], 8);
        assert_eq!(v["total_tokens"], 18);
        assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 9);
        assert_eq!(u.responses()["input_tokens_details"]["cached_tokens"], 9);
    }

    #[test]
    fn response_formats() {
        assert_eq!(
            response_format(Some(&json!({"type": "text"})), "x").unwrap(),
            None
        );
        assert_eq!(
            response_format(Some(&json!({"type": "json_object"})), "x").unwrap(),
            Some(json!("json"))
        );
        let s = json!({"type": "object"});
        let chat = json!({"type": "json_schema", "json_schema": {"name": "a", "schema": s}});
        assert_eq!(response_format(Some(&chat), "x").unwrap(), Some(s.clone()));
        let flat = json!({"type": "json_schema", "name": "a", "schema": s});
        assert_eq!(response_format(Some(&flat), "x").unwrap(), Some(s));
        let e = response_format(Some(&json!({"type": "yaml"})), "response_format").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
    }
}
