//! `POST /api/show`: a model's details, GGUF metadata (`model_info`), parameters,
//! template, generated Modelfile and capabilities.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wick_engine::gguf::GgufFile;
use wick_engine::GgufFacts;
use wick_store::{go_quote, ResolvedModel};

use crate::error::{ApiError, Result};
use crate::extract::ApiJson;
use crate::models::{self, blocking};
use crate::prompt::Template;
use crate::wire::{self, Details};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
    verbose: Option<bool>,
    system: Option<String>,
    template: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ShowResponse {
    #[serde(skip_serializing_if = "String::is_empty")]
    license: String,
    modelfile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    parameters: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    template: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    system: String,
    details: Details,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    messages: Vec<Value>,
    model_info: Map<String, Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tensors: Vec<TensorInfo>,
    capabilities: Vec<&'static str>,
    modified_at: String,
}

/// One tensor as Ollama's `/api/show` lists it: ggml's type name and the GGUF shape
/// (innermost dimension first).
#[derive(Debug, Serialize)]
struct TensorInfo {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    shape: Vec<u64>,
}

/// What show reads from the GGUF file.
struct GgufView {
    facts: GgufFacts,
    has_fim: bool,
    tensors: Vec<TensorInfo>,
}

/// The file's tensors in file order.
fn tensor_list(gguf: &GgufFile) -> Vec<TensorInfo> {
    gguf.tensor_summaries()
        .into_iter()
        .map(|t| TensorInfo {
            name: t.name,
            kind: t.kind,
            shape: t.shape,
        })
        .collect()
}

fn read_gguf(path: &std::path::Path, verbose: bool) -> Result<GgufView> {
    let gguf = GgufFile::open(path).map_err(|e| ApiError::internal(e.to_string()))?;
    let facts =
        GgufFacts::from_gguf(&gguf, verbose).map_err(|e| ApiError::internal(e.to_string()))?;
    let has = |t: &str| {
        gguf.get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .is_some_and(|tokens| {
                tokens
                    .iter()
                    .any(|x| x.to_string().is_ok_and(|s| s.as_str() == t))
            })
    };
    let has_fim = has("<|fim_prefix|>") && has("<|fim_suffix|>") && has("<|fim_middle|>");
    let tensors = tensor_list(&gguf);
    Ok(GgufView {
        facts,
        has_fim,
        tensors,
    })
}

pub(crate) async fn show(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ShowRequest>,
) -> Result<Json<ShowResponse>> {
    let name = wire::model_name(req.model.as_deref(), req.name.as_deref())?;
    let resolved = models::resolve(&state, &name).await?;
    let verbose = req.verbose.unwrap_or(false);
    let gguf = match resolved.model_path.clone() {
        Some(path) => Some(blocking(move || read_gguf(&path, verbose)).await?),
        None => None,
    };

    let layer_template = resolved.template.clone().filter(|t| !t.is_empty());
    let gguf_template = gguf.as_ref().and_then(|g| g.facts.chat_template.clone());
    // The template requests are rendered with, and what it makes the model capable of.
    let compiled = layer_template
        .as_deref()
        .or(gguf_template.as_deref())
        .and_then(|t| Template::compile(t).ok());

    let mut capabilities = Vec::new();
    match &gguf {
        Some(g) if g.facts.is_embedding => capabilities.push("embedding"),
        _ => capabilities.push("completion"),
    }
    if compiled.as_ref().is_some_and(|t| t.supports_tools()) {
        capabilities.push("tools");
    }
    let fim = gguf.as_ref().is_some_and(|g| g.has_fim);
    if fim || compiled.as_ref().is_some_and(|t| t.supports_insert()) {
        capabilities.push("insert");
    }
    if compiled
        .as_ref()
        .and_then(Template::thinking_tags)
        .is_some()
    {
        capabilities.push("thinking");
    }

    let template = req
        .template
        .clone()
        .filter(|t| !t.is_empty())
        .or(layer_template)
        .or(gguf_template)
        .unwrap_or_default();
    let system = req
        .system
        .clone()
        .filter(|s| !s.is_empty())
        .or(resolved.system.clone())
        .unwrap_or_default();

    Ok(Json(ShowResponse {
        license: resolved.license.join("\n"),
        modelfile: modelfile(&resolved),
        parameters: parameters(resolved.params.as_ref()),
        template,
        system,
        details: Details::from_config(&resolved.config, resolved.parent_model.as_deref()),
        messages: resolved.messages.clone(),
        model_info: gguf
            .as_ref()
            .map(|g| g.facts.model_info.clone())
            .unwrap_or_default(),
        tensors: gguf.map(|g| g.tensors).unwrap_or_default(),
        capabilities,
        modified_at: wire::go_time(&resolved.modified_at),
    }))
}

/// Go's `%v` of a float64 (`strconv`'s shortest `%g`): shortest digits, `%e` form when
/// the decimal exponent is below -4 or at least 6.
pub(crate) fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's `%v` of a JSON value as Ollama holds it (`map[string]any`).
fn go_value(v: &Value, quoted: bool) -> String {
    match v {
        Value::String(s) if quoted => go_quote(s),
        Value::String(s) => s.clone(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or(0.0)),
        Value::Bool(b) => b.to_string(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

/// Each parameter (one line per `stop` value), keys sorted.
fn param_entries(params: Option<&Map<String, Value>>) -> Vec<(&str, &Value)> {
    let mut out = Vec::new();
    let Some(params) = params else {
        return out;
    };
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    for k in keys {
        match &params[k.as_str()] {
            Value::Array(items) => out.extend(items.iter().map(|v| (k.as_str(), v))),
            v => out.push((k.as_str(), v)),
        }
    }
    out
}

/// Ollama's `parameters`: `fmt.Sprintf("%-*s %#v", 30, key, value)` per line.
pub(crate) fn parameters(params: Option<&Map<String, Value>>) -> String {
    param_entries(params)
        .into_iter()
        .map(|(k, v)| format!("{k:<30} {}", go_value(v, true)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Modelfile parser's `quote`: quote values with newlines or edge spaces.
fn quote(s: &str) -> String {
    if s.contains('\n') || s.starts_with(' ') || s.ends_with(' ') {
        if s.contains('"') {
            return format!("\"\"\"{s}\"\"\"");
        }
        return format!("\"{s}\"");
    }
    s.to_string()
}

/// The Modelfile `ollama show --modelfile` prints.
pub(crate) fn modelfile(m: &ResolvedModel) -> String {
    let mut lines = vec![
        "# Modelfile generated by \"ollama show\"".to_string(),
        "# To build a new Modelfile based on this, replace FROM with:".to_string(),
        format!("# FROM {}", m.name.display_shortest()),
        String::new(),
    ];
    if let Some(p) = &m.model_path {
        lines.push(format!("FROM {}", p.display()));
    }
    for p in &m.adapter_paths {
        lines.push(format!("ADAPTER {}", quote(&p.display().to_string())));
    }
    for p in &m.projector_paths {
        lines.push(format!("FROM {}", p.display()));
    }
    if let Some(t) = m.template.as_deref().filter(|t| !t.is_empty()) {
        lines.push(format!("TEMPLATE {}", quote(t)));
    }
    if let Some(s) = m.system.as_deref().filter(|s| !s.is_empty()) {
        lines.push(format!("SYSTEM {}", quote(s)));
    }
    for (k, v) in param_entries(m.params.as_ref()) {
        lines.push(format!("PARAMETER {k} {}", quote(&go_value(v, false))));
    }
    for l in &m.license {
        lines.push(format!("LICENSE {}", quote(l)));
    }
    for msg in &m.messages {
        let role = msg.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = msg
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        lines.push(format!("MESSAGE {role} {}", quote(content)));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_floats() {
        assert_eq!(go_float(0.6), "0.6");
        assert_eq!(go_float(4096.0), "4096");
        assert_eq!(go_float(999999.0), "999999");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(-2.5), "-2.5");
        assert_eq!(go_float(0.0), "0");
    }

    #[test]
    fn parameter_lines() {
        let p = json!({"temperature": 0.6, "stop": ["<|im_end|>", "a\"b"], "num_ctx": 4096});
        let s = parameters(p.as_object());
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], format!("{:<30} {}", "num_ctx", "4096"));
        assert_eq!(lines[1], format!("{:<30} {}", "stop", "\"<|im_end|>\""));
        assert_eq!(lines[2], format!("{:<30} {}", "stop", "\"a\\\"b\""));
        assert_eq!(lines[3], format!("{:<30} {}", "temperature", "0.6"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
        assert_eq!(quote("say \"hi\"\n"), "\"\"\"say \"hi\"\n\"\"\"");
    }
}
