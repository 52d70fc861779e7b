//! `POST /v1/embeddings`, OpenAI's shape over [`crate::embed`] as Ollama's middleware
//! translates it: `input` as a string (`""` embeds the empty string), a list of strings,
//! token ids (a list of integers, or a list of such lists), `dimensions`,
//! `encoding_format` `float` or `base64` (little-endian f32 bytes), `usage`; errors in
//! OpenAI's shape. `user` is accepted and has no effect (as with OpenAI, it only labels
//! the caller); `keep_alive` and `options` are accepted as on the other `/v1` routes.

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::embed::{embed_inputs, embed_model_name, finish, EmbedCall, Input};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::openai::OpenAiError;
use crate::options::OptionsPatch;
use crate::wire;
use crate::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct OaEmbedRequest {
    model: Option<String>,
    input: Option<Value>,
    dimensions: Option<i64>,
    encoding_format: Option<String>,
    #[allow(dead_code)]
    user: Option<String>,
    keep_alive: Option<Value>,
    options: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

fn parse_encoding(v: Option<&str>) -> Result<Encoding, ApiError> {
    match v {
        None | Some("") => Ok(Encoding::Float),
        Some(f) if f.eq_ignore_ascii_case("float") => Ok(Encoding::Float),
        Some(f) if f.eq_ignore_ascii_case("base64") => Ok(Encoding::Base64),
        Some(other) => Err(ApiError::bad(format!(
            "Invalid value for 'encoding_format' = {other}. Supported values: ['float', 'base64']."
        ))),
    }
}

/// A token id of a token-id input.
fn token_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// OpenAI's `input`: a string, a list of strings, a list of token ids, or a list of
/// lists of token ids. Missing or an empty list: `invalid input` (Ollama's message).
fn parse_input(v: Option<&Value>) -> Result<Vec<Input>, ApiError> {
    let invalid = || ApiError::bad("invalid input");
    let bad_type = || ApiError::bad("invalid input type");
    match v {
        None | Some(Value::Null) => Err(invalid()),
        Some(Value::String(s)) => Ok(vec![Input::Text(s.clone())]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            let ids = items.iter().map(token_id).collect::<Option<Vec<u32>>>();
            Ok(vec![Input::Tokens(ids.ok_or_else(bad_type)?)])
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Input::Text(s.clone())),
                Value::Array(ids) if !ids.is_empty() => ids
                    .iter()
                    .map(token_id)
                    .collect::<Option<Vec<u32>>>()
                    .map(Input::Tokens)
                    .ok_or_else(bad_type),
                Value::Array(_) => Err(invalid()),
                _ => Err(bad_type()),
            })
            .collect(),
        Some(_) => Err(bad_type()),
    }
}

/// Little-endian f32 bytes, base64 (Ollama's `floatsToBase64`).
fn floats_to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OaEmbedRequest>,
) -> Result<Json<Value>, OpenAiError> {
    let started = Instant::now();
    let encoding = parse_encoding(req.encoding_format.as_deref())?;
    let inputs = parse_input(req.input.as_ref())?;
    let model = req.model.clone().unwrap_or_default();
    let call = EmbedCall {
        name: embed_model_name(req.model.as_deref())?,
        keep_alive: wire::parse_keep_alive(req.keep_alive.as_ref())?,
        options: match &req.options {
            Some(m) => OptionsPatch::from_map(m)?,
            None => OptionsPatch::default(),
        },
        inputs,
        truncate: true,
        started,
    };
    let mut out = embed_inputs(&state, call).await?;
    finish(&mut out.vectors, req.dimensions.unwrap_or(0))?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => json!(floats_to_base64(v)),
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_of_every_openai_form() {
        let p = |v: Value| parse_input(Some(&v)).map_err(|e| e.to_string());
        assert_eq!(p(json!("")).unwrap(), vec![Input::Text(String::new())]);
        assert_eq!(
            p(json!(["a", "b"])).unwrap(),
            vec![Input::Text("a".into()), Input::Text("b".into())]
        );
        assert_eq!(p(json!([1, 2])).unwrap(), vec![Input::Tokens(vec![1, 2])]);
        assert_eq!(
            p(json!([[1], [2, 3]])).unwrap(),
            vec![Input::Tokens(vec![1]), Input::Tokens(vec![2, 3])]
        );
        assert_eq!(p(json!([])).unwrap_err(), "invalid input");
        assert_eq!(parse_input(None).unwrap_err().to_string(), "invalid input");
        assert_eq!(p(json!([-1])).unwrap_err(), "invalid input type");
        assert_eq!(p(json!([1.5])).unwrap_err(), "invalid input type");
        assert_eq!(p(json!([{"a": 1}])).unwrap_err(), "invalid input type");
        assert_eq!(p(json!(7)).unwrap_err(), "invalid input type");
    }

    #[test]
    fn encodings() {
        assert_eq!(parse_encoding(None).unwrap(), Encoding::Float);
        assert_eq!(parse_encoding(Some("BASE64")).unwrap(), Encoding::Base64);
        assert_eq!(
            parse_encoding(Some("int8")).unwrap_err().to_string(),
            "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."
        );
        // 1.0f32 is 00 00 80 3f.
        assert_eq!(floats_to_base64(&[1.0]), "AACAPw==");
    }
}
