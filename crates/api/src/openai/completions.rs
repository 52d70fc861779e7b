//! `POST /v1/completions` onto the native generate (as Ollama's middleware does):
//! a prompt or a list of prompts (one generation each, `n` choices per
//! prompt sharing its prefill; choice `index` = prompt × n + choice), `echo`,
//! `suffix`, and the legacy `logprobs` shape.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, TokenLogprob, MAX_TOP_LOGPROBS};

use super::error::{reject_unknown, OaResult, OpenAiError};
use super::wire::{
    include_usage, legacy_logprobs, merge_legacy_logprobs, request_id, Sampling, StreamOptions,
    Usage,
};
use crate::answer::AnswerParser;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::generate::{self, GenerateRequest};
use crate::run::{self, Framing, Generation, Responder, Start};
use crate::wire::Metrics;
use crate::AppState;

/// Most prompts in one request.
const MAX_PROMPTS: usize = 64;

const UNSUPPORTED: &[&str] = &["logit_bias"];

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
    echo: Option<bool>,
    best_of: Option<i64>,
    #[allow(dead_code)]
    user: Option<String>,
    #[serde(flatten)]
    sampling: Sampling,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The prompts of a request: a string or a list of strings.
fn prompts(v: Option<Value>) -> OaResult<Vec<String>> {
    let bad = |msg: &str| OpenAiError::invalid("prompt", msg);
    let list = match v {
        None | Some(Value::Null) => return Err(bad("\"prompt\" is required")),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => out.push(s),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(bad("token ids as \"prompt\" are not supported"))
                    }
                    _ => return Err(bad("\"prompt\" must be a string or a list of strings")),
                }
            }
            out
        }
        Some(_) => return Err(bad("\"prompt\" must be a string or a list of strings")),
    };
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err(bad(
            "\"prompt\" is required (and no prompt of the list may be empty)",
        ));
    }
    if list.len() > MAX_PROMPTS {
        return Err(bad(&format!("at most {MAX_PROMPTS} prompts per request")));
    }
    Ok(list)
}

struct ChoiceState {
    answer: AnswerParser,
    /// The prompt, while it is still to be echoed at the start of the text.
    echo: Option<String>,
    /// Characters of choice text so far (`text_offset` of the next token).
    offset: usize,
}

struct CompletionResponder {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    /// Choices per prompt.
    n: usize,
    choices: Vec<ChoiceState>,
    ended: usize,
    usage: Usage,
}

impl CompletionResponder {
    fn chunk(&self, index: usize, text: String, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{ "text": text, "index": index, "logprobs": null, "finish_reason": finish }],
        })
    }
}

impl Responder for CompletionResponder {
    type Chunk = Value;
    type Whole = Value;

    fn text(&mut self, choice: usize, text: String, logprobs: Vec<TokenLogprob>) -> Vec<Value> {
        let Some(c) = self.choices.get_mut(choice) else {
            return Vec::new();
        };
        let a = c.answer.push(&text);
        let echoed = c.echo.take().unwrap_or_default();
        if echoed.is_empty() && a.content.is_empty() && logprobs.is_empty() {
            return Vec::new();
        }
        c.offset += echoed.chars().count();
        let lp = (!logprobs.is_empty()).then(|| legacy_logprobs(&logprobs, &mut c.offset));
        let mut chunk = self.chunk(choice, echoed + &a.content, None);
        if let Some(lp) = lp {
            chunk["choices"][0]["logprobs"] = lp;
        }
        vec![chunk]
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
        let text = c.echo.take().unwrap_or_default() + &c.answer.finish().content;
        if !text.is_empty() {
            out.push(self.chunk(choice, text, None));
        }
        out.push(self.chunk(choice, String::new(), Some(reason.as_str())));
        if choice.is_multiple_of(self.n.max(1)) {
            self.usage.add_prompt(&metrics);
        } else {
            self.usage.completion += metrics.eval_count;
        }
        self.ended += 1;
        if self.include_usage && self.ended == self.choices.len() {
            let mut u = self.chunk(0, String::new(), None);
            u["choices"] = json!([]);
            u["usage"] = self.usage.chat();
            out.push(u);
        }
        out
    }

    fn merge(chunks: Vec<Value>) -> Option<Value> {
        let mut whole = chunks.first()?.clone();
        let mut choices: Vec<(String, Value, Value)> = Vec::new();
        for c in &chunks {
            if let Some(choice) = c.pointer("/choices/0") {
                let i = choice["index"].as_u64().unwrap_or(0) as usize;
                if choices.len() <= i {
                    choices.resize(i + 1, (String::new(), Value::Null, Value::Null));
                }
                let (text, logprobs, finish) = &mut choices[i];
                text.push_str(choice["text"].as_str().unwrap_or_default());
                merge_legacy_logprobs(logprobs, &choice["logprobs"]);
                if !choice["finish_reason"].is_null() {
                    *finish = choice["finish_reason"].clone();
                }
            }
            if let Some(u) = c.get("usage") {
                whole["usage"] = u.clone();
            }
        }
        whole["choices"] = choices
            .into_iter()
            .enumerate()
            .map(|(i, (text, logprobs, finish))| {
                json!({ "text": text, "index": i, "logprobs": logprobs, "finish_reason": finish })
            })
            .collect();
        Some(whole)
    }
}

pub(crate) async fn completions(
    State(state): State<AppState>,
    req: Result<ApiJson<CompletionRequest>, ApiError>,
) -> OaResult<Response> {
    let ApiJson(req) = req?;
    reject_unknown(&req.rest, UNSUPPORTED)?;
    let prompts = prompts(req.prompt)?;
    let n = req.sampling.choices()?;
    if req.best_of.is_some_and(|b| b != n as i64) {
        return Err(OpenAiError::invalid(
            "best_of",
            "\"best_of\" other than \"n\" is not supported",
        ));
    }
    let echo = req.echo.unwrap_or(false);
    let stream = req.stream.unwrap_or(false);
    let top = match req.logprobs {
        None => None,
        Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Some(k),
        Some(_) => {
            return Err(OpenAiError::invalid(
                "logprobs",
                "\"logprobs\" must be between 0 and 20",
            ))
        }
    };
    if echo && top.is_some() {
        return Err(OpenAiError::invalid(
            "echo",
            "\"echo\" with \"logprobs\" (log probabilities of the prompt) is not supported",
        ));
    }
    let options = req.sampling.options()?;
    let mut gens = Vec::new();
    let mut answer = AnswerParser::default();
    let mut model = String::new();
    for prompt in &prompts {
        let mut native = GenerateRequest {
            logprobs: top.map(|_| true),
            top_logprobs: top,
            model: req.model.clone(),
            prompt: Some(prompt.clone()),
            suffix: req.suffix.clone(),
            stream: Some(stream),
            keep_alive: req.keep_alive.clone(),
            options: Some(options.clone()),
            ..GenerateRequest::default()
        }
        .validate()?;
        native.choices = n;
        model = native.common.model.clone();
        match generate::start(&state, &native).await? {
            Start::Running(gen, a) => {
                gens.push(gen);
                answer = a;
            }
            Start::Loaded(_) | Start::Rendered(_) => {
                return Err(OpenAiError::invalid("prompt", "\"prompt\" is required"))
            }
        }
    }
    let gen = Generation::join(gens).ok_or_else(|| ApiError::internal("no prompt ran"))?;
    let choices = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, n))
        .map(|p| ChoiceState {
            answer: answer.clone(),
            echo: echo.then(|| p.clone()),
            offset: 0,
        })
        .collect();
    let r = CompletionResponder {
        id: request_id("cmpl"),
        created: chrono::Utc::now().timestamp(),
        model,
        include_usage: include_usage(req.stream_options.as_ref()) || !stream,
        n,
        choices,
        ended: 0,
        usage: Usage::default(),
    };
    Ok(run::respond(gen, r, stream, Framing::Sse).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_a_string_or_a_list() {
        assert_eq!(prompts(Some(json!("a"))).unwrap(), vec!["a"]);
        assert_eq!(prompts(Some(json!(["a", "b"]))).unwrap(), vec!["a", "b"]);
        for bad in [json!([]), json!([1, 2]), json!(""), json!(3), Value::Null] {
            let e = prompts(Some(bad)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("prompt"));
        }
    }

    #[test]
    fn echo_leads_the_text_and_usage_counts_each_prompt_once() {
        let mut r = CompletionResponder {
            id: "cmpl-x".into(),
            created: 0,
            model: "m".into(),
            include_usage: true,
            n: 2,
            choices: ["p", "p", "q", "q"]
                .iter()
                .map(|p| ChoiceState {
                    answer: AnswerParser::default(),
                    echo: Some(p.to_string()),
                    offset: 0,
                })
                .collect(),
            ended: 0,
            usage: Usage::default(),
        };
        let m = Metrics {
            prompt_eval_count: 3,
            eval_count: 1,
            ..Metrics::default()
        };
        let mut chunks = r.text(2, " x".into(), vec![]);
        for i in 0..4 {
            chunks.extend(r.done(i, DoneReason::Stop, m, vec![]));
        }
        let whole = CompletionResponder::merge(chunks).unwrap();
        assert_eq!(whole["choices"][2]["text"], "q x");
        assert_eq!(whole["choices"][0]["text"], "p");
        assert_eq!(whole["choices"][3]["index"], 3);
        assert_eq!(whole["usage"]["prompt_tokens"], 6);
        assert_eq!(whole["usage"]["completion_tokens"], 4);
    }
}
