//! `POST /api/generate`: a completion of one prompt, through the model's chat template
//! (`system` + `prompt`) unless `raw`, with `context` prepended and `suffix` as
//! fill-in-the-middle.

use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wick_engine::{DoneReason, GenerationRequest};
use wick_scheduler::KeepAlive;
use wick_store::{ModelName, ResolvedModel};
use wick_templating::Message;

use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models;
use crate::options::{OptionsPatch, RunOptions};
use crate::prompt;
use crate::run::{self, Framing, Generation, Held, LoadReply, Responder, Start};
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

/// The checks both generate and chat make on their shared fields.
pub(crate) struct Common {
    pub name: ModelName,
    /// The name as the client gave it (echoed in responses).
    pub model: String,
    pub stream: bool,
    pub keep_alive: Option<KeepAlive>,
    pub options: OptionsPatch,
    pub truncate: bool,
    pub shift: bool,
    pub debug_render_only: bool,
}

impl Common {
    /// The engine's request for `prompt` with the resolved options.
    pub(crate) fn request(&self, prompt: Vec<u32>, opts: RunOptions) -> GenerationRequest {
        GenerationRequest {
            prompt,
            sampling: opts.sampling,
            stop: opts.stop,
            num_predict: opts.num_predict,
            num_ctx: opts.num_ctx,
            num_keep: opts.num_keep,
            shift: self.shift,
            truncate: self.truncate,
            num_thread: opts.num_thread,
            format: None,
            format_after: None,
            logprobs: None,
        }
    }
}

/// Fields generate and chat share, as received.
pub(crate) struct CommonFields<'a> {
    pub model: Option<&'a str>,
    pub stream: Option<bool>,
    pub format: Option<&'a Value>,
    pub keep_alive: Option<&'a Value>,
    pub options: Option<&'a Map<String, Value>>,
    pub think: Option<&'a Value>,
    pub truncate: Option<bool>,
    pub shift: Option<bool>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub debug_render_only: Option<bool>,
}

impl CommonFields<'_> {
    pub fn validate(self) -> Result<Common> {
        let name = wire::model_name(self.model, None)?;
        let model = self.model.unwrap_or_default().to_string();
        match self.format {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(_) => return Err(ApiError::Unsupported("format")),
        }
        match self.think {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) | Some(Value::String(_)) => {
                return Err(ApiError::bad(format!(
                    "\"{model}\" does not support thinking"
                )))
            }
            Some(v) => {
                return Err(ApiError::bad(format!(
                "invalid \"think\": expected a boolean or \"low\", \"medium\", \"high\", got {}",
                wire::json_type(v)
            )))
            }
        }
        if let Some(n) = self.top_logprobs {
            if !(0..=20).contains(&n) {
                return Err(ApiError::bad("top_logprobs must be between 0 and 20"));
            }
            if n > 0 {
                return Err(ApiError::Unsupported("top_logprobs"));
            }
        }
        if self.logprobs == Some(true) {
            return Err(ApiError::Unsupported("logprobs"));
        }
        Ok(Common {
            name,
            model,
            stream: self.stream.unwrap_or(true),
            keep_alive: wire::parse_keep_alive(self.keep_alive)?,
            options: match self.options {
                Some(m) => OptionsPatch::from_map(m)?,
                None => OptionsPatch::default(),
            },
            truncate: self.truncate.unwrap_or(true),
            shift: self.shift.unwrap_or(true),
            debug_render_only: self.debug_render_only.unwrap_or(false),
        })
    }
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
            return Err(ApiError::Unsupported("images"));
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
        })
    }
}

/// One line of a generate answer (Ollama's `GenerateResponse`).
#[derive(Debug, Serialize)]
pub(crate) struct GenerateChunk {
    model: String,
    created_at: String,
    response: String,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Vec<u32>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
}

struct GenerateResponder {
    model: String,
    /// Raw answers carry no `context`.
    with_context: bool,
}

impl Responder for GenerateResponder {
    type Chunk = GenerateChunk;
    type Whole = GenerateChunk;

    fn text(&mut self, text: String) -> Vec<GenerateChunk> {
        vec![GenerateChunk {
            model: self.model.clone(),
            created_at: wire::now_utc(),
            response: text,
            done: false,
            done_reason: None,
            context: None,
            metrics: None,
        }]
    }

    fn done(
        &mut self,
        reason: DoneReason,
        metrics: Metrics,
        context: Vec<u32>,
    ) -> Vec<GenerateChunk> {
        vec![GenerateChunk {
            model: self.model.clone(),
            created_at: wire::now_utc(),
            response: String::new(),
            done: true,
            done_reason: Some(reason.as_str()),
            context: self.with_context.then_some(context),
            metrics: Some(metrics),
        }]
    }

    fn merge(chunks: Vec<GenerateChunk>) -> Option<GenerateChunk> {
        let text: String = chunks.iter().map(|c| c.response.as_str()).collect();
        let mut last = chunks.into_iter().last()?;
        last.response = text;
        Some(last)
    }
}

/// What generate and chat have once their model is found and held.
pub(crate) struct Ready {
    pub resolved: ResolvedModel,
    pub held: Held,
    /// Request options over the model's PARAMETERs over the defaults.
    pub opts: RunOptions,
}

pub(crate) enum Prepared {
    /// Empty input: the model was loaded or unloaded, nothing more to do.
    Loaded(LoadReply),
    Ready(Box<Ready>),
}

/// The steps generate and chat share: find the model, check it can `capability`,
/// answer an empty input with a load/unload, else hold the model and resolve options.
pub(crate) async fn prepare(
    state: &AppState,
    c: &Common,
    capability: &str,
    empty_input: bool,
) -> Result<Prepared> {
    let started = Instant::now();
    let resolved = models::resolve(state, &c.name).await?;
    let spec = models::spec(&resolved)?;
    models::require_completion(&resolved, capability)?;
    if empty_input {
        let reply = run::load_or_unload(state, &spec, c.keep_alive).await?;
        return Ok(Prepared::Loaded(reply));
    }
    let params = models::params(&resolved)?;
    let held = run::acquire(state, &spec, c.keep_alive, started).await?;
    let opts = params
        .overlay(&c.options)
        .resolve(held.lease.default_num_ctx());
    Ok(Prepared::Ready(Box::new(Ready {
        resolved,
        held,
        opts,
    })))
}

/// Load the model, render and tokenize the prompt, and submit the generation.
pub(crate) async fn start(state: &AppState, req: &ValidGenerateRequest) -> Result<Start<()>> {
    let c = &req.common;
    let (resolved, held, opts) = match prepare(state, c, "generate", req.prompt.is_empty()).await? {
        Prepared::Loaded(reply) => return Ok(Start::Loaded(reply)),
        Prepared::Ready(r) => (r.resolved, r.held, r.opts),
    };
    let model = held.lease.model();

    let text = if !req.suffix.is_empty() {
        let Some((pre, suf, mid)) = &model.tokenizer.fim_tokens else {
            return Err(ApiError::bad(format!(
                "\"{}\" does not support insert",
                c.model
            )));
        };
        format!("{pre}{}{suf}{}{mid}", req.prompt, req.suffix)
    } else if req.raw {
        req.prompt.clone()
    } else {
        let template = prompt::choose(
            &state.templates,
            req.template.as_deref(),
            resolved.template.as_deref(),
            model.facts.chat_template.as_deref(),
        )?;
        // Without a template the prompt is used as is (Ollama's `{{ .Prompt }}`).
        let rendered = match template {
            None => req.prompt.clone(),
            Some(t) => {
                let mut messages = Vec::new();
                if let Some(system) = req.system.clone().or(resolved.system.clone()) {
                    messages.push(Message::new("system", system));
                }
                if req.context.is_none() {
                    messages.extend(models::messages(&resolved));
                }
                messages.push(Message::new("user", req.prompt.clone()));
                prompt::render(Some(&t), model, &messages, None)?
            }
        };
        match &req.context {
            Some(ids) => {
                tracing::warn!("the context field is deprecated");
                model.tokenizer.decode(ids) + &rendered
            }
            None => rendered,
        }
    };
    if c.debug_render_only {
        return Ok(Start::Rendered(text));
    }

    let tokens = prompt::tokenize(model, &text)?;
    let ctx = prompt::effective_ctx(model, opts.num_ctx);
    if tokens.len() >= ctx && !c.truncate {
        return Err(prompt::too_long(tokens.len(), ctx));
    }
    let gen = Generation::submit(held, c.request(tokens, opts))?;
    Ok(Start::Running(gen, ()))
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
        Start::Running(gen, ()) => {
            let responder = GenerateResponder {
                model: c.model.clone(),
                with_context: !req.raw,
            };
            run::respond(gen, responder, c.stream, Framing::Ndjson).await
        }
    }
}
