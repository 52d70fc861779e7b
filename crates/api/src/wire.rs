//! Wire helpers shared by the routes: Go-style timestamps, `keep_alive`, model names,
//! `details`, and the metrics of a final chunk.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone};
use serde::Serialize;
use serde_json::Value;
use wick_engine::Stats;
use wick_scheduler::KeepAlive;
use wick_store::{ConfigV2, ModelName};

use crate::error::ApiError;

/// Go's `time.RFC3339Nano` (what `time.Time` marshals to): nanoseconds with trailing
/// zeros trimmed, `Z` for a zero offset.
pub fn go_time<Tz: TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // `2024-01-02T03:04:05.120000000+01:00` -> `2024-01-02T03:04:05.12+01:00`
    let Some(dot) = s.find('.') else {
        return s;
    };
    let frac_end = s[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(s.len(), |i| dot + 1 + i);
    let frac = s[dot + 1..frac_end].trim_end_matches('0');
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..dot]);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out.push_str(&s[frac_end..]);
    out
}

/// Now, in UTC, as generate/chat's `created_at`.
pub fn now_utc() -> String {
    go_time(&chrono::Utc::now())
}

/// `keep_alive`: a number of seconds or a Go duration string; negative is forever.
pub fn parse_keep_alive(v: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(KeepAlive::from_secs_f64(n.as_f64().unwrap_or(0.0)))),
        Some(Value::String(s)) => KeepAlive::parse(s)
            .map(Some)
            .map_err(|e| ApiError::bad(format!("invalid \"keep_alive\": {e}"))),
        Some(other) => Err(ApiError::bad(format!(
            "invalid \"keep_alive\": unsupported type {}, expected a number of seconds or a duration string",
            json_type(other)
        ))),
    }
}

/// The JSON type name of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A required model name (`model`, or its deprecated alias `name`).
pub fn model_name(model: Option<&str>, name: Option<&str>) -> Result<ModelName, ApiError> {
    let given = model
        .filter(|s| !s.is_empty())
        .or(name.filter(|s| !s.is_empty()))
        .ok_or_else(|| ApiError::bad("model is required"))?;
    Ok(ModelName::parse(given)?)
}

/// `details` of tags, show and ps.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Details {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

impl Details {
    pub fn from_config(config: &ConfigV2, parent: Option<&str>) -> Self {
        let families = if config.model_families.is_empty() && !config.model_family.is_empty() {
            vec![config.model_family.clone()]
        } else {
            config.model_families.clone()
        };
        Details {
            parent_model: parent.unwrap_or_default().to_string(),
            format: if config.model_format.is_empty() {
                "gguf".into()
            } else {
                config.model_format.clone()
            },
            family: config.model_family.clone(),
            families,
            parameter_size: config.model_type.clone(),
            quantization_level: config.file_type.clone(),
        }
    }
}

/// One generated token's log probability in Ollama's shape (`logprobs[]` of generate
/// and chat answers), with its most likely alternatives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Logprob {
    pub token: String,
    pub logprob: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative at one position (`top_logprobs[]`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<u8>,
}

impl From<&wick_engine::TokenLogprob> for Logprob {
    fn from(t: &wick_engine::TokenLogprob) -> Self {
        Logprob {
            token: t.token.clone(),
            logprob: f64::from(t.logprob),
            bytes: t.bytes.clone(),
            top_logprobs: t
                .top_logprobs
                .iter()
                .map(|a| TopLogprob {
                    token: a.token.clone(),
                    logprob: f64::from(a.logprob),
                    bytes: a.bytes.clone(),
                })
                .collect(),
        }
    }
}

/// Log probabilities of a chunk: `None` (no field) when there are none.
pub fn logprobs(list: &[wick_engine::TokenLogprob]) -> Option<Vec<Logprob>> {
    (!list.is_empty()).then(|| list.iter().map(Logprob::from).collect())
}

/// The six counts and timings of a final chunk, in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Metrics {
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: u64,
    pub eval_count: usize,
    pub eval_duration: u64,
    /// Prompt tokens served from a cached prefix (OpenAI's `cached_tokens`; not a
    /// field of Ollama's answers).
    #[serde(skip)]
    pub prompt_cached: usize,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Metrics {
    pub fn new(total: Duration, load: Duration, stats: &Stats) -> Self {
        Metrics {
            total_duration: nanos(total),
            load_duration: nanos(load),
            prompt_eval_count: stats.prompt_eval_count,
            prompt_eval_duration: nanos(stats.prompt_eval_duration),
            eval_count: stats.eval_count,
            eval_duration: nanos(stats.eval_duration),
            prompt_cached: stats.prompt_cached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    #[test]
    fn go_timestamps() {
        let t = Utc.with_ymd_and_hms(2023, 8, 4, 19, 22, 45).unwrap()
            + chrono::Duration::nanoseconds(499_127_000);
        assert_eq!(go_time(&t), "2023-08-04T19:22:45.499127Z");
        let t = Utc.with_ymd_and_hms(2023, 8, 4, 19, 22, 45).unwrap();
        assert_eq!(go_time(&t), "2023-08-04T19:22:45Z");
        let tz = FixedOffset::east_opt(3600).unwrap();
        let t = tz.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(120_000_001);
        assert_eq!(go_time(&t), "2024-01-02T03:04:05.120000001+01:00");
    }

    #[test]
    fn keep_alive_values() {
        use serde_json::json;
        let ka = |v: Value| parse_keep_alive(Some(&v));
        assert_eq!(ka(json!(0)).unwrap(), Some(KeepAlive::For(Duration::ZERO)));
        assert_eq!(ka(json!(-1)).unwrap(), Some(KeepAlive::Forever));
        assert_eq!(
            ka(json!("10m")).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(600)))
        );
        assert_eq!(ka(json!(null)).unwrap(), None);
        assert!(ka(json!(true))
            .unwrap_err()
            .to_string()
            .contains("keep_alive"));
        assert!(ka(json!("soon")).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            model_name(None, None).unwrap_err().to_string(),
            "model is required"
        );
        assert!(model_name(Some("../../etc/passwd"), None).is_err());
        let n = model_name(Some(""), Some("smollm2:135m")).unwrap();
        assert_eq!(n.display_shortest(), "smollm2:135m");
    }
}
