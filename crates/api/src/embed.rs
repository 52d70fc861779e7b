//! Embeddings: `POST /api/embed` (inputs as a string or a list; L2-normalized vectors,
//! `truncate`, `dimensions`) and the legacy `POST /api/embeddings` (one `prompt`; the
//! model's own output, as Ollama returns it). `/v1/embeddings` ([`crate::embed_openai`])
//! runs through [`embed_inputs`] too.
//!
//! As Ollama: an empty input loads the model and answers with no vectors; every input is
//! cut to the context (`num_ctx` capped by the model's trained length) unless `truncate`
//! is false, which makes a longer input a 400; each vector is normalized, then cut to
//! `dimensions` and normalized again. Unlike Ollama, which embeds the inputs of a
//! request one by one, all of them run in one batched forward pass on the scheduler's
//! thread for the model. Options other than `num_ctx` and `num_thread` are type-checked
//! and have no effect on an embedding. A decoder model embeds too, as in Ollama: its
//! vector is the last token's final-normed hidden state.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wick_scheduler::{EmbedRequest as Job, KeepAlive};
use wick_store::ModelName;

use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models;
use crate::options::OptionsPatch;
use crate::run::{self, Held};
use crate::wire;
use crate::AppState;

/// Ollama's message when an input is longer than the context and `truncate` is false.
pub(crate) const TOO_LONG: &str = "the input length exceeds the context length";

/// One input: text to tokenize, or token ids as given (`/v1/embeddings`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

/// What the three routes share once checked.
pub(crate) struct EmbedCall {
    pub name: ModelName,
    pub keep_alive: Option<KeepAlive>,
    pub options: OptionsPatch,
    pub inputs: Vec<Input>,
    pub truncate: bool,
    pub started: Instant,
}

/// Vectors as the model gives them, and what it cost.
pub(crate) struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
    pub load_duration: Duration,
}

/// Find and hold the model, tokenize, and embed every input in one job. An empty
/// `inputs` only loads the model (Ollama answers an empty input after loading).
pub(crate) async fn embed_inputs(state: &AppState, call: EmbedCall) -> Result<Embedded> {
    let resolved = models::resolve(state, &call.name).await?;
    let spec = models::spec(&resolved)?;
    let params = models::params(&resolved)?;
    let held: Held = run::acquire(state, &spec, call.keep_alive, call.started).await?;
    let load_duration = held.load_duration;
    if call.inputs.is_empty() {
        return Ok(Embedded {
            vectors: Vec::new(),
            prompt_tokens: 0,
            load_duration,
        });
    }
    let opts = params
        .overlay(&call.options)
        .resolve(held.lease.default_num_ctx());
    let model = held.lease.shared_model();
    let limit = opts.num_ctx.min(model.context_length()).max(1);
    let (inputs, truncate) = (call.inputs, call.truncate);
    let tokens = models::blocking(move || {
        inputs
            .iter()
            .map(|input| tokens_of(&model, input, limit, truncate))
            .collect::<Result<Vec<Vec<u32>>>>()
    })
    .await?;
    let prompt_tokens = tokens.iter().map(Vec::len).sum();
    let out = held
        .lease
        .embed(Job {
            inputs: tokens,
            num_thread: opts.num_thread,
        })
        .await?;
    Ok(Embedded {
        vectors: out.embeddings,
        prompt_tokens,
        load_duration,
    })
}

/// An input's tokens within `limit`: text with the model's special tokens around it.
fn tokens_of(
    model: &wick_engine::Model,
    input: &Input,
    limit: usize,
    truncate: bool,
) -> Result<Vec<u32>> {
    match input {
        Input::Text(text) => model
            .tokenizer
            .encode_for_embedding(text, limit, truncate)
            .map_err(ApiError::internal)?
            .map(|(ids, _)| ids)
            .ok_or_else(|| ApiError::bad(TOO_LONG)),
        Input::Tokens(ids) => cut_tokens(ids, limit, truncate),
    }
}

/// Token ids as given, cut to `limit` (or refused when `truncate` is false).
fn cut_tokens(ids: &[u32], limit: usize, truncate: bool) -> Result<Vec<u32>> {
    if ids.len() > limit && !truncate {
        return Err(ApiError::bad(TOO_LONG));
    }
    Ok(ids[..ids.len().min(limit)].to_vec())
}

/// Ollama's `normalize`: unit length; NaN or Inf is an error.
pub(crate) fn normalize(v: &mut [f32]) -> Result<()> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(ApiError::bad("embedding contains NaN or Inf values"));
    }
    wick_engine::model::bert::l2_normalize(v);
    Ok(())
}

/// `/api/embed`'s vectors: normalized, then cut to `dimensions` (when positive and
/// shorter) and normalized again.
pub(crate) fn finish(vectors: &mut [Vec<f32>], dimensions: i64) -> Result<()> {
    for v in vectors.iter_mut() {
        normalize(v)?;
        if dimensions > 0 && (dimensions as usize) < v.len() {
            v.truncate(dimensions as usize);
            normalize(v)?;
        }
    }
    Ok(())
}

/// Ollama's rule for `input`: a string (none when empty) or a list of strings.
fn parse_input(v: Option<&Value>) -> Result<Vec<Input>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Input::Text(s.clone())]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(Input::Text(s.clone())),
                _ => Err(ApiError::bad("invalid input type")),
            })
            .collect(),
        Some(_) => Err(ApiError::bad("invalid input type")),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbedRequest {
    model: Option<String>,
    input: Option<Value>,
    keep_alive: Option<Value>,
    truncate: Option<bool>,
    dimensions: Option<i64>,
    options: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EmbedResponse {
    model: String,
    embeddings: Vec<Vec<f32>>,
    #[serde(skip_serializing_if = "is_zero")]
    total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    load_duration: u64,
    #[serde(skip_serializing_if = "is_zero_usize")]
    prompt_eval_count: usize,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn options(map: Option<&Map<String, Value>>) -> Result<OptionsPatch> {
    map.map_or(Ok(OptionsPatch::default()), OptionsPatch::from_map)
}

/// The model of `/api/embed` and `/v1/embeddings`: when missing, Ollama's 404
/// `model '' not found` (the legacy route says `model is required`).
pub(crate) fn embed_model_name(model: Option<&str>) -> Result<ModelName> {
    match model.map(str::trim) {
        None | Some("") => Err(ApiError::NotFound("model '' not found".into())),
        Some(_) => wire::model_name(model, None),
    }
}

/// `POST /api/embed`.
pub(crate) async fn embed(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Json<EmbedResponse>> {
    let started = Instant::now();
    let model = req.model.clone().unwrap_or_default();
    let call = EmbedCall {
        name: embed_model_name(req.model.as_deref())?,
        keep_alive: wire::parse_keep_alive(req.keep_alive.as_ref())?,
        options: options(req.options.as_ref())?,
        inputs: parse_input(req.input.as_ref())?,
        truncate: req.truncate.unwrap_or(true),
        started,
    };
    let empty = call.inputs.is_empty();
    let mut out = embed_inputs(&state, call).await?;
    if empty {
        // Ollama's empty answer carries no durations.
        return Ok(Json(EmbedResponse {
            model,
            embeddings: Vec::new(),
            total_duration: 0,
            load_duration: 0,
            prompt_eval_count: 0,
        }));
    }
    finish(&mut out.vectors, req.dimensions.unwrap_or(0))?;
    Ok(Json(EmbedResponse {
        model,
        embeddings: out.vectors,
        total_duration: nanos(started.elapsed()),
        load_duration: nanos(out.load_duration),
        prompt_eval_count: out.prompt_tokens,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsRequest {
    model: Option<String>,
    prompt: Option<String>,
    keep_alive: Option<Value>,
    options: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingsResponse {
    embedding: Vec<f64>,
}

/// `POST /api/embeddings` (deprecated): one prompt, the model's own vector (as Ollama:
/// unit length for `bert` models, which normalize their output; raw for `nomic-bert`),
/// not truncated.
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>> {
    let prompt = req.prompt.unwrap_or_default();
    let call = EmbedCall {
        name: wire::model_name(req.model.as_deref(), None)?,
        keep_alive: wire::parse_keep_alive(req.keep_alive.as_ref())?,
        options: options(req.options.as_ref())?,
        inputs: if prompt.is_empty() {
            Vec::new()
        } else {
            vec![Input::Text(prompt)]
        },
        truncate: false,
        started: Instant::now(),
    };
    let out = embed_inputs(&state, call).await?;
    let embedding = out
        .vectors
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect();
    Ok(Json(EmbeddingsResponse { embedding }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_follow_ollama() {
        assert_eq!(parse_input(None).unwrap(), vec![]);
        assert_eq!(parse_input(Some(&json!(""))).unwrap(), vec![]);
        assert_eq!(
            parse_input(Some(&json!("a"))).unwrap(),
            vec![Input::Text("a".into())]
        );
        assert_eq!(
            parse_input(Some(&json!(["a", ""]))).unwrap(),
            vec![Input::Text("a".into()), Input::Text("".into())]
        );
        for bad in [json!([1, 2]), json!(3), json!({"a": 1}), json!(["a", null])] {
            let e = parse_input(Some(&bad)).unwrap_err();
            assert_eq!(e.to_string(), "invalid input type");
        }
    }

    #[test]
    fn dimensions_cut_and_renormalize() {
        let mut v = vec![vec![3.0f32, 4.0, 12.0]];
        finish(&mut v, 0).unwrap();
        let n: f32 = v[0].iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-6);
        assert_eq!(v[0].len(), 3);
        finish(&mut v, 2).unwrap();
        assert_eq!(v[0].len(), 2);
        assert!((v[0][0] - 0.6).abs() < 1e-6 && (v[0][1] - 0.8).abs() < 1e-6);
        // Zero, negative or too many dimensions keep the whole vector.
        for d in [0, -3, 7] {
            let mut w = vec![vec![1.0f32, 0.0, 0.0]];
            finish(&mut w, d).unwrap();
            assert_eq!(w[0].len(), 3);
        }
        let mut bad = vec![vec![f32::NAN, 1.0]];
        assert_eq!(
            finish(&mut bad, 0).unwrap_err().to_string(),
            "embedding contains NaN or Inf values"
        );
    }

    #[test]
    fn token_inputs_truncate_or_refuse() {
        assert_eq!(cut_tokens(&[1, 2, 3, 4], 3, true).unwrap(), vec![1, 2, 3]);
        assert_eq!(cut_tokens(&[1, 2], 3, false).unwrap(), vec![1, 2]);
        let e = cut_tokens(&[1, 2, 3, 4], 3, false).unwrap_err();
        assert_eq!(e.to_string(), TOO_LONG);
    }
}
