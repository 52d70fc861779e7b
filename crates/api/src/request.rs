//! What `/api/generate` and `/api/chat` share: their common fields, checked once into
//! [`Common`]; the `prepare` step (find the model, check what it can do, hold it, resolve
//! options); and the engine request built from them.
//!
//! The OpenAI routes translate onto generate and chat, so their requests pass through
//! here too and get the same 400s.

use std::time::Instant;

use serde_json::{Map, Value};
use wick_engine::{GenerationRequest, OutputFormat, MAX_TOP_LOGPROBS};
use wick_scheduler::KeepAlive;
use wick_store::{ModelName, ResolvedModel};
use wick_templating::Think;

use crate::error::{ApiError, Result};
use crate::models;
use crate::options::{OptionsPatch, RunOptions};
use crate::run::{self, Held, LoadReply};
use crate::wire;
use crate::AppState;

/// Ollama's `ThinkValue`: `true`, `false`, or one of its levels.
fn parse_think(v: &Value) -> Result<Option<Think>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(Think::Bool(*b))),
        Value::String(s) if ["high", "medium", "low", "max"].contains(&s.as_str()) => {
            Ok(Some(Think::Level(s.clone())))
        }
        Value::String(s) => Err(ApiError::bad(format!(
            "invalid think value: {s:?} (must be \"high\", \"medium\", \"low\", \"max\", \
             true, or false)"
        ))),
        other => Err(ApiError::bad(format!(
            "think must be a boolean or string (\"high\", \"medium\", \"low\", \"max\", \
             true, or false), got {}",
            wire::json_type(other)
        ))),
    }
}

/// Ollama's rule for `format`: `null` and `""` are no format, `"json"` is a JSON
/// object, an object is a JSON schema, anything else is a 400.
fn parse_format(v: &Value) -> Result<Option<OutputFormat>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s == "json" => Ok(Some(OutputFormat::Json)),
        Value::Object(_) => Ok(Some(OutputFormat::JsonSchema(v.clone()))),
        other => Err(ApiError::bad(format!(
            "invalid format: {}; expected \"json\" or a valid JSON Schema object",
            serde_json::to_string(other).unwrap_or_default()
        ))),
    }
}

/// Images need a vision model, and wick serves none yet: Ollama's capability error.
pub(crate) fn no_vision(model: &str) -> ApiError {
    ApiError::bad(format!("\"{model}\" does not support vision"))
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

/// The checked common fields of a generate or chat request.
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
    /// `think` as sent; what it means depends on the model's template (see
    /// [`Common::resolve_think`]).
    pub think: Option<Think>,
    pub format: Option<OutputFormat>,
    /// `Some(k)`: report each token's log probability with `k` alternatives.
    pub logprobs: Option<usize>,
}

impl CommonFields<'_> {
    pub fn validate(self) -> Result<Common> {
        let name = wire::model_name(self.model, None)?;
        let model = self.model.unwrap_or_default().to_string();
        let format = match self.format {
            Some(v) => parse_format(v)?,
            None => None,
        };
        let think = match self.think {
            Some(v) => parse_think(v)?,
            None => None,
        };
        let top = self.top_logprobs.unwrap_or(0);
        if !(0..=MAX_TOP_LOGPROBS as i64).contains(&top) {
            return Err(ApiError::bad("top_logprobs must be between 0 and 20"));
        }
        let logprobs = match self.logprobs {
            Some(true) => Some(top as usize),
            _ if top > 0 => {
                return Err(ApiError::bad(
                    "\"top_logprobs\" requires \"logprobs\" to be true",
                ))
            }
            _ => None,
        };
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
            think,
            format,
            logprobs,
        })
    }
}

impl Common {
    /// What `think` means for a model whose template gives these thinking tags, as
    /// Ollama decides it: a thinking model thinks unless told not to; asking a model
    /// without thinking to think is a 400.
    pub(crate) fn resolve_think(&self, tags: Option<&(String, String)>) -> Result<Option<Think>> {
        match (&self.think, tags) {
            (None, Some(_)) => Ok(Some(Think::Bool(true))),
            (Some(t), None) if t.enabled() => Err(ApiError::bad(format!(
                "\"{}\" does not support thinking",
                self.model
            ))),
            (t, _) => Ok(t.clone()),
        }
    }

    /// The engine's request for `prompt` with the resolved options. `thinking_ends`:
    /// the tag that closes the model's thinking, when it thinks (a `format` applies to
    /// the answer after it).
    pub(crate) fn request(
        &self,
        prompt: Vec<u32>,
        opts: RunOptions,
        thinking_ends: Option<String>,
    ) -> GenerationRequest {
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
            format: self.format.clone(),
            format_after: thinking_ends.filter(|_| self.format.is_some()),
            logprobs: self.logprobs,
        }
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
    if let Some(format) = c.format.clone() {
        // Compile the grammar before anything runs: a bad schema is a 400 naming it.
        let model = held.lease.shared_model();
        models::blocking(move || {
            model
                .check_format(&format)
                .map_err(|e| ApiError::bad(e.to_string()))
        })
        .await?;
    }
    let opts = params
        .overlay(&c.options)
        .resolve(held.lease.default_num_ctx());
    Ok(Prepared::Ready(Box::new(Ready {
        resolved,
        held,
        opts,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: &Value) -> CommonFields<'_> {
        CommonFields {
            model: Some("m"),
            stream: None,
            format: v.get("format"),
            keep_alive: None,
            options: None,
            think: v.get("think"),
            truncate: None,
            shift: None,
            logprobs: v.get("logprobs").and_then(Value::as_bool),
            top_logprobs: v.get("top_logprobs").and_then(Value::as_i64),
            debug_render_only: None,
        }
    }

    fn check(v: Value) -> std::result::Result<Common, String> {
        fields(&v).validate().map_err(|e| e.to_string())
    }

    #[test]
    fn format_values() {
        assert_eq!(check(json!({"format": ""})).unwrap().format, None);
        assert_eq!(check(json!({"format": null})).unwrap().format, None);
        assert_eq!(
            check(json!({"format": "json"})).unwrap().format,
            Some(OutputFormat::Json)
        );
        let schema = json!({"type": "object"});
        assert_eq!(
            check(json!({ "format": schema })).unwrap().format,
            Some(OutputFormat::JsonSchema(schema))
        );
        let e = check(json!({"format": "yaml"})).err().unwrap();
        assert_eq!(
            e,
            "invalid format: \"yaml\"; expected \"json\" or a valid JSON Schema object"
        );
        assert!(check(json!({"format": 3})).is_err());
    }

    #[test]
    fn think_values() {
        assert_eq!(check(json!({})).unwrap().think, None);
        let t = check(json!({"think": true})).unwrap().think.unwrap();
        assert!(t.enabled());
        let t = check(json!({"think": "low"})).unwrap().think.unwrap();
        assert_eq!((t.enabled(), t.level()), (true, "low"));
        assert!(!check(json!({"think": false}))
            .unwrap()
            .think
            .unwrap()
            .enabled());
        let e = check(json!({"think": "hard"})).err().unwrap();
        assert!(e.starts_with("invalid think value: \"hard\""), "{e}");
        assert!(check(json!({"think": 1})).is_err());
    }

    #[test]
    fn logprob_values() {
        assert_eq!(check(json!({})).unwrap().logprobs, None);
        assert_eq!(check(json!({"logprobs": true})).unwrap().logprobs, Some(0));
        assert_eq!(
            check(json!({"logprobs": true, "top_logprobs": 5}))
                .unwrap()
                .logprobs,
            Some(5)
        );
        for bad in [21, -1] {
            let e = check(json!({"logprobs": true, "top_logprobs": bad}))
                .err()
                .unwrap();
            assert_eq!(e, "top_logprobs must be between 0 and 20");
        }
        assert!(check(json!({"top_logprobs": 3})).is_err());
    }
}
