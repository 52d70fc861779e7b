//! `POST /api/generate`: a completion of one prompt, through the model's chat template
//! (`system` + `prompt`) unless `raw`, with `context` prepended and `suffix` as
//! fill-in-the-middle.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, TokenLogprob};
use wick_templating::{Message, ThinkingParser};

use crate::answer::{Answer, AnswerParser};
use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models;
use crate::prompt::{self, Template};
use crate::request::{no_vision, prepare, Common, CommonFields, Prepared};
use crate::run::{self, Framing, Generation, Responder, Start};
use crate::wire::{self, Metrics};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct GenerateRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub suffix: Option<String>,
    pub system: Option<String>,
    pub template: Option<String>,
    pub context: Option<Vec<i64>>,
    pub stream: Option<bool>,
    pub raw: Option<bool>,
    pub format: Option<Value>,
    pub keep_alive: Option<Value>,
    pub images: Option<Vec<Value>>,
    pub options: Option<Map<String, Value>>,
    pub think: Option<Value>,
    pub truncate: Option<bool>,
    pub shift: Option<bool>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    #[serde(rename = "_debug_render_only")]
    pub debug_render_only: Option<bool>,
}

/// A checked generate request.
pub struct ValidGenerateRequest {
    pub(crate) common: Common,
    pub(crate) prompt: String,
    pub(crate) suffix: String,
    pub(crate) system: Option<String>,
    pub(crate) template: Option<String>,
    pub(crate) context: Option<Vec<u32>>,
    pub(crate) raw: bool,
    /// OpenAI's `n`: answers sampled from one prefill (Ollama's generate: 1).
    pub(crate) choices: usize,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl GenerateRequest {
    pub fn validate(self) -> Result<ValidGenerateRequest> {
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
        if self.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(no_vision(&common.model));
        }
        let raw = self.raw.unwrap_or(false);
        let system = non_empty(self.system);
        let template = non_empty(self.template);
        let context = match self.context {
            None => None,
            Some(ids) => Some(
                ids.into_iter()
                    .map(|id| {
                        u32::try_from(id).map_err(|_| {
                            ApiError::bad(format!("\"context\" has an invalid token id: {id}"))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()?,
            ),
        };
        if raw && (template.is_some() || system.is_some() || context.is_some()) {
            return Err(ApiError::bad(
                "raw mode does not support template, system, or context",
            ));
        }
        Ok(ValidGenerateRequest {
            common,
            prompt: self.prompt.unwrap_or_default(),
            suffix: self.suffix.unwrap_or_default(),
            system,
            template,
            context,
            raw,
            choices: 1,
        })
    }
}

/// One line of a generate answer (Ollama's `GenerateResponse`).
#[derive(Debug, Serialize)]
pub(crate) struct GenerateChunk {
    model: String,
    created_at: String,
    response: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<String>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<Vec<wire::Logprob>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
}

struct GenerateResponder {
    model: String,
    /// Raw answers carry no `context`.
    with_context: bool,
    answer: AnswerParser,
}

impl GenerateResponder {
    fn chunk(&self, a: Answer) -> GenerateChunk {
        GenerateChunk {
            model: self.model.clone(),
            created_at: wire::now_utc(),
            response: a.content,
            thinking: (!a.thinking.is_empty()).then_some(a.thinking),
            done: false,
            done_reason: None,
            context: None,
            logprobs: None,
            metrics: None,
        }
    }
}

impl Responder for GenerateResponder {
    type Chunk = GenerateChunk;
    type Whole = GenerateChunk;

    fn text(
        &mut self,
        _choice: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> Vec<GenerateChunk> {
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
        context: Vec<u32>,
    ) -> Vec<GenerateChunk> {
        let mut out = Vec::new();
        let a = self.answer.finish();
        if !a.is_empty() {
            out.push(self.chunk(a));
        }
        let mut last = self.chunk(Answer::default());
        last.done = true;
        last.done_reason = Some(reason.as_str());
        last.context = self.with_context.then_some(context);
        last.metrics = Some(metrics);
        out.push(last);
        out
    }

    fn merge(chunks: Vec<GenerateChunk>) -> Option<GenerateChunk> {
        let text: String = chunks.iter().map(|c| c.response.as_str()).collect();
        let thinking: String = chunks
            .iter()
            .filter_map(|c| c.thinking.as_deref())
            .collect();
        let logprobs: Vec<wire::Logprob> = chunks
            .iter()
            .flat_map(|c| c.logprobs.iter().flatten().cloned())
            .collect();
        let mut last = chunks.into_iter().last()?;
        last.response = text;
        last.thinking = (!thinking.is_empty()).then_some(thinking);
        last.logprobs = (!logprobs.is_empty()).then_some(logprobs);
        Some(last)
    }
}

/// Load the model, render and tokenize the prompt, and submit the generation. A
/// running generation comes with the parser that splits thinking from the response.
pub(crate) async fn start(
    state: &AppState,
    req: &ValidGenerateRequest,
) -> Result<Start<AnswerParser>> {
    let c = &req.common;
    let (resolved, held, opts) = match prepare(state, c, "generate", req.prompt.is_empty()).await? {
        Prepared::Loaded(reply) => return Ok(Start::Loaded(reply)),
        Prepared::Ready(r) => (r.resolved, r.held, r.opts),
    };
    let model = held.lease.model();
    let template = if req.raw {
        None
    } else {
        prompt::choose(
            &state.templates,
            req.template.as_deref(),
            resolved.template.as_deref(),
            model.facts.chat_template.as_deref(),
        )?
    };
    let tags = template.as_ref().and_then(Template::thinking_tags);
    let think = c.resolve_think(tags.as_ref())?;

    let text = if !req.suffix.is_empty() {
        match (&template, &model.tokenizer.fim_tokens) {
            (Some(t @ Template::Go(_)), _) if t.supports_insert() => {
                t.render_insert(&req.prompt, &req.suffix, think.as_ref())?
            }
            (_, Some((pre, suf, mid))) => format!("{pre}{}{suf}{}{mid}", req.prompt, req.suffix),
            _ => {
                return Err(ApiError::bad(format!(
                    "\"{}\" does not support insert",
                    c.model
                )))
            }
        }
    } else if let Some(t) = &template {
        let mut messages = Vec::new();
        if let Some(system) = req.system.clone().or(resolved.system.clone()) {
            messages.push(Message::new("system", system));
        }
        if req.context.is_none() {
            messages.extend(models::messages(&resolved));
        }
        messages.push(Message::new("user", req.prompt.clone()));
        let rendered = t.render_chat(model, &messages, None, think.as_ref())?;
        match &req.context {
            Some(ids) => {
                tracing::warn!("the context field is deprecated");
                model.tokenizer.decode(ids) + &rendered
            }
            None => rendered,
        }
    } else {
        // Raw, or a model without a template: the prompt as is (Ollama's `{{ .Prompt }}`).
        let mut text = req.prompt.clone();
        if let Some(ids) = &req.context {
            text = model.tokenizer.decode(ids) + &text;
        }
        text
    };
    if c.debug_render_only {
        return Ok(Start::Rendered(text));
    }

    let tokens = prompt::tokenize(model, &text)?;
    let ctx = prompt::effective_ctx(model, opts.num_ctx);
    if tokens.len() >= ctx && !c.truncate {
        return Err(prompt::too_long(tokens.len(), ctx));
    }
    let thinking = match (&think, &tags) {
        (Some(t), Some((open, close))) if t.enabled() && !req.raw => {
            Some(ThinkingParser::for_prompt(open, close, &text))
        }
        _ => None,
    };
    let close_tag = thinking.as_ref().and(tags.map(|(_, close)| close));
    let gen = Generation::submit_choices(held, c.request(tokens, opts, close_tag), req.choices)?;
    Ok(Start::Running(gen, AnswerParser::new(thinking, None)))
}

pub(crate) async fn generate(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response> {
    let req = req.validate()?;
    let c = &req.common;
    match start(&state, &req).await? {
        Start::Loaded(reply) => Ok(Json(json!({
            "model": c.model,
            "created_at": wire::now_utc(),
            "response": "",
            "done": true,
            "done_reason": reply.as_str(),
        }))
        .into_response()),
        Start::Rendered(text) => Ok(Json(json!({
            "model": c.model,
            "created_at": wire::now_utc(),
            "response": "",
            "done": false,
            "_debug_info": { "rendered_template": text, "image_count": 0 },
        }))
        .into_response()),
        Start::Running(gen, answer) => {
            let responder = GenerateResponder {
                model: c.model.clone(),
                with_context: !req.raw,
                answer,
            };
            run::respond(gen, responder, c.stream, Framing::Ndjson).await
        }
    }
}
