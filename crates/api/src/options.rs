//! Ollama's `options` (and Modelfile `PARAMETER`s): parsed from a JSON map the way
//! `api.Options.FromMap` does, then layered `request > model params > defaults`.
//!
//! - Unknown keys are accepted with a warning (clients still send removed ones).
//! - `null` values are skipped.
//! - Integers accept any JSON number (floats are truncated); floats accept integers.
//! - A wrong type is a 400 naming the key: `option "top_k" must be of type integer`.
//! - `stop` is an array of strings; a single string is accepted too.

use serde_json::{Map, Value};
use wick_engine::SamplingOptions;

use crate::error::ApiError;

pub use wick_store::{option_kind, OptionKind, KNOWN_OPTIONS};

/// Options as given (request `options` or the model's params layer): every field is
/// `None` unless set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptionsPatch {
    pub num_keep: Option<i64>,
    pub seed: Option<i64>,
    pub num_predict: Option<i64>,
    pub top_k: Option<i64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub typical_p: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub temperature: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub stop: Option<Vec<String>>,
    pub num_ctx: Option<i64>,
    pub num_thread: Option<i64>,
}

/// A typed option value.
enum Typed {
    Int(i64),
    Float(f64),
    Bool,
    List(Vec<String>),
}

fn typed(key: &str, kind: OptionKind, value: &Value) -> Result<Typed, ApiError> {
    let err = |what: &str| ApiError::bad(format!("option \"{key}\" must be of type {what}"));
    match kind {
        OptionKind::Int => match value {
            Value::Number(n) => Ok(Typed::Int(match n.as_i64() {
                Some(i) => i,
                // Go converts float64 to int by truncation (saturating here).
                None => n.as_f64().map_or(0, |f| f as i64),
            })),
            _ => Err(err("integer")),
        },
        OptionKind::Float => match value.as_f64() {
            Some(f) => Ok(Typed::Float(f)),
            None => Err(err("float32")),
        },
        OptionKind::Bool => match value {
            Value::Bool(_) => Ok(Typed::Bool),
            _ => Err(err("boolean")),
        },
        OptionKind::StringList => match value {
            Value::String(s) => Ok(Typed::List(vec![s.clone()])),
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ApiError::bad(format!(
                        "option \"{key}\" must be of an array of strings"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Typed::List),
            _ => Err(err("array")),
        },
    }
}

impl OptionsPatch {
    /// Parse an options map. Unknown keys are logged and skipped.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut p = OptionsPatch::default();
        for (key, value) in map {
            if value.is_null() {
                continue;
            }
            let Some(kind) = option_kind(key) else {
                tracing::warn!(option = %key, "invalid option provided");
                continue;
            };
            let v = typed(key, kind, value)?;
            let int = |v: &Typed| match v {
                Typed::Int(i) => Some(*i),
                _ => None,
            };
            let float = |v: &Typed| match v {
                Typed::Float(f) => Some(*f),
                _ => None,
            };
            match key.as_str() {
                "num_keep" => p.num_keep = int(&v),
                "seed" => p.seed = int(&v),
                "num_predict" => p.num_predict = int(&v),
                "top_k" => p.top_k = int(&v),
                "top_p" => p.top_p = float(&v),
                "min_p" => p.min_p = float(&v),
                "typical_p" => p.typical_p = float(&v),
                "repeat_last_n" => p.repeat_last_n = int(&v),
                "temperature" => p.temperature = float(&v),
                "repeat_penalty" => p.repeat_penalty = float(&v),
                "presence_penalty" => p.presence_penalty = float(&v),
                "frequency_penalty" => p.frequency_penalty = float(&v),
                "stop" => {
                    if let Typed::List(l) = v {
                        p.stop = Some(l)
                    }
                }
                "num_ctx" => p.num_ctx = int(&v),
                "num_thread" => p.num_thread = int(&v),
                // Runner options: type-checked above, nothing to apply on the CPU.
                other => {
                    tracing::debug!(
                        option = other,
                        "runner option checked; no effect on the CPU"
                    )
                }
            }
        }
        Ok(p)
    }

    /// `self` with every field set in `over` replaced (request options over model
    /// params).
    pub fn overlay(&self, over: &OptionsPatch) -> OptionsPatch {
        macro_rules! pick {
            ($($f:ident),*) => {
                OptionsPatch { $($f: over.$f.clone().or_else(|| self.$f.clone()),)* }
            };
        }
        pick!(
            num_keep,
            seed,
            num_predict,
            top_k,
            top_p,
            min_p,
            typical_p,
            repeat_last_n,
            temperature,
            repeat_penalty,
            presence_penalty,
            frequency_penalty,
            stop,
            num_ctx,
            num_thread
        )
    }

    /// The settings of one generation. `default_num_ctx` is the loaded model's default.
    pub fn resolve(&self, default_num_ctx: usize) -> RunOptions {
        let d = SamplingOptions::default();
        let f32_or = |v: Option<f64>, default: f32| v.map_or(default, |f| f as f32);
        let i32_of = |v: i64| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        RunOptions {
            sampling: SamplingOptions {
                temperature: f32_or(self.temperature, d.temperature),
                top_k: self.top_k.map_or(d.top_k, i32_of),
                top_p: f32_or(self.top_p, d.top_p),
                min_p: f32_or(self.min_p, d.min_p),
                typical_p: f32_or(self.typical_p, d.typical_p),
                repeat_last_n: self.repeat_last_n.map_or(d.repeat_last_n, i32_of),
                repeat_penalty: f32_or(self.repeat_penalty, d.repeat_penalty),
                presence_penalty: f32_or(self.presence_penalty, d.presence_penalty),
                frequency_penalty: f32_or(self.frequency_penalty, d.frequency_penalty),
                // Negative (Ollama's default -1) draws a random seed.
                seed: self.seed.and_then(|s| u64::try_from(s).ok()),
            },
            stop: self
                .stop
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            // Like Ollama's runner, only a positive limit limits.
            num_predict: self
                .num_predict
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0),
            num_ctx: self
                .num_ctx
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default_num_ctx),
            // Zero or negative: every core, as Ollama's default.
            num_thread: self
                .num_thread
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0),
            // Negative keeps as much of the prompt as possible.
            num_keep: match self.num_keep {
                None => 4,
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            },
        }
    }
}

/// Resolved settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub sampling: SamplingOptions,
    pub stop: Vec<String>,
    pub num_predict: Option<usize>,
    pub num_ctx: usize,
    pub num_keep: usize,
    pub num_thread: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<OptionsPatch, ApiError> {
        match v {
            Value::Object(m) => OptionsPatch::from_map(&m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn types_are_checked_and_named() {
        let e = parse(json!({"top_k": "40"})).unwrap_err();
        assert_eq!(e.to_string(), "option \"top_k\" must be of type integer");
        let e = parse(json!({"temperature": "hot"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "option \"temperature\" must be of type float32"
        );
        let e = parse(json!({"use_mmap": 1})).unwrap_err();
        assert_eq!(e.to_string(), "option \"use_mmap\" must be of type boolean");
        let e = parse(json!({"stop": 3})).unwrap_err();
        assert_eq!(e.to_string(), "option \"stop\" must be of type array");
        let e = parse(json!({"stop": ["a", 1]})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "option \"stop\" must be of an array of strings"
        );
    }

    #[test]
    fn lenient_where_ollama_is() {
        let p = parse(json!({
            "top_k": 12.9, "temperature": 1, "stop": "END", "mirostat": 2,
            "tfs_z": "x", "seed": null, "num_thread": 4, "use_mmap": true
        }))
        .unwrap();
        assert_eq!(p.top_k, Some(12));
        assert_eq!(p.temperature, Some(1.0));
        assert_eq!(p.stop, Some(vec!["END".to_string()]));
        assert_eq!(p.seed, None);
    }

    #[test]
    fn defaults_and_layering() {
        let r = OptionsPatch::default().resolve(8192);
        assert_eq!(r.sampling, SamplingOptions::default());
        assert_eq!(r.num_ctx, 8192);
        assert_eq!(r.num_keep, 4);
        assert_eq!(r.num_predict, None);
        let model = parse(json!({"temperature": 0.2, "stop": ["<a>"], "num_ctx": 1024})).unwrap();
        let req = parse(json!({"temperature": 0.0, "seed": 42, "num_predict": -1})).unwrap();
        let r = model.overlay(&req).resolve(8192);
        assert_eq!(r.sampling.temperature, 0.0);
        assert_eq!(r.sampling.seed, Some(42));
        assert_eq!(r.stop, vec!["<a>".to_string()]);
        assert_eq!(r.num_ctx, 1024);
        assert_eq!(r.num_predict, None);
        let r = parse(json!({"seed": -1, "num_predict": 5, "num_keep": -1}))
            .unwrap()
            .resolve(100);
        assert_eq!(r.sampling.seed, None);
        assert_eq!(r.num_predict, Some(5));
        assert_eq!(r.num_keep, usize::MAX);
    }
}
