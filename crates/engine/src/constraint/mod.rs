//! Structured outputs: a generation constrained to a JSON schema by llguidance.
//!
//! A model's [`ConstraintEnv`] (its vocabulary as llguidance's token trie plus a parser
//! factory) is built on first use and kept in the [`Model`](crate::Model). Formats are
//! compiled into grammars once and cached by their text, so that checking a request's
//! format before it is queued ([`Model::check_format`](crate::Model::check_format)) and
//! starting its sequence compile it only once.
//!
//! Control and user-defined tokens enter the trie behind llguidance's special-token
//! marker byte (0xFF, never part of valid UTF-8), so no grammar can produce them as
//! text; the end-of-generation tokens are the grammar's EOS set, allowed only where
//! the grammar accepts. JSON is compiled with fixed separators (`", "`, `": "`) and
//! no free whitespace, so a small model cannot ramble whitespace forever.
//!
//! The per-sequence part, which computes each step's token mask while the next forward
//! pass runs, is in [`guide`].

pub(crate) mod guide;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{ParserFactory, TokenParser};
use serde_json::{json, Value};

use crate::error::{EngineError, Result};
use crate::tokenizer::GgufTokenizer;

/// How many compiled formats a model keeps for reuse.
const COMPILED_CACHE: usize = 32;

/// What shape a generation's answer must have.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Ollama's `format: "json"`: one JSON object, any keys and values (as Ollama's
    /// JSON grammar, whose root is an object).
    Json,
    /// A JSON Schema the answer must validate against (Ollama's `format: {...}`,
    /// OpenAI's `response_format: {"type": "json_schema", ...}`).
    JsonSchema(Value),
    /// A tool call in the model's own syntax: the literal `prefix` (the model's
    /// tool-call tag, e.g. `<tool_call>\n`; may be empty), one JSON value matching
    /// `schema` (the call's `{"name", "arguments"}`), then the literal `suffix`.
    /// OpenAI's `tool_choice: "required"` or a named function.
    Wrapped {
        prefix: String,
        schema: Value,
        suffix: String,
    },
}

impl OutputFormat {
    /// The schema llguidance compiles, with wick's JSON layout options.
    fn schema(&self) -> Result<Value> {
        let mut schema = match self {
            OutputFormat::Json => json!({ "type": "object" }),
            OutputFormat::Wrapped { schema, .. } => {
                return OutputFormat::JsonSchema(schema.clone()).schema()
            }
            OutputFormat::JsonSchema(Value::Bool(true)) => json!({}),
            OutputFormat::JsonSchema(Value::Bool(false)) => {
                return Err(EngineError::InvalidFormat(
                    "the schema `false` accepts no value".into(),
                ))
            }
            OutputFormat::JsonSchema(v @ Value::Object(_)) => {
                let mut v = v.clone();
                close_objects(&mut v, false);
                v
            }
            OutputFormat::JsonSchema(other) => {
                return Err(EngineError::InvalidFormat(format!(
                    "a JSON schema must be an object, not {}",
                    json_kind(other)
                )))
            }
        };
        if let Value::Object(map) = &mut schema {
            // Replaces any options the caller put in the schema.
            map.insert(
                "x-guidance".into(),
                json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": ",
                    "lenient": false,
                }),
            );
        }
        Ok(schema)
    }

    /// The cache key: the schema's text.
    fn key(&self) -> String {
        match self {
            OutputFormat::Json => "\"json\"".into(),
            OutputFormat::JsonSchema(v) => v.to_string(),
            OutputFormat::Wrapped {
                prefix,
                schema,
                suffix,
            } => json!([prefix, schema, suffix]).to_string(),
        }
    }

    /// A Lark grammar: the literals around the JSON value (`%json` embeds a schema).
    fn wrapped_lark(&self) -> Result<Option<String>> {
        let OutputFormat::Wrapped { prefix, suffix, .. } = self else {
            return Ok(None);
        };
        let literal = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                // A JSON string is a valid Lark string literal.
                Value::String(s.to_string()).to_string()
            }
        };
        Ok(Some(format!(
            "start: {} value {}\nvalue: %json {}\n",
            literal(prefix),
            literal(suffix),
            self.schema()?
        )))
    }
}

/// Objects with `properties` and no `additionalProperties` take no other members, as
/// llama.cpp's schema grammars (and so Ollama's structured outputs) read them:
/// otherwise a model may keep inventing members (pydantic's schemas never say
/// `additionalProperties`). The direct branches of an `allOf` are left open, since
/// each names only part of the members.
fn close_objects(schema: &mut Value, in_all_of: bool) {
    let Value::Object(map) = schema else {
        return;
    };
    if !in_all_of
        && map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && !map.contains_key("patternProperties")
        && !map.contains_key("unevaluatedProperties")
    {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, sub) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                if let Value::Object(children) = sub {
                    children.values_mut().for_each(|c| close_objects(c, false));
                }
            }
            "anyOf" | "oneOf" | "prefixItems" | "allOf" => {
                let all_of = key == "allOf";
                if let Value::Array(children) = sub {
                    children.iter_mut().for_each(|c| close_objects(c, all_of));
                }
            }
            "items" | "additionalProperties" | "not" | "contains" => close_objects(sub, false),
            _ => {}
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A model's vocabulary as llguidance sees it, and its compiled formats.
pub(crate) struct ConstraintEnv {
    factory: ParserFactory,
    /// Fresh parsers of recently compiled formats, least recently used first.
    compiled: Mutex<VecDeque<(String, TokenParser)>>,
}

impl ConstraintEnv {
    /// Build the token trie from every token's bytes (special tokens marked) and the
    /// end-of-generation set.
    pub(crate) fn new(tokenizer: &GgufTokenizer) -> Result<Self> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id);
                if tokenizer.is_special(id) && !bytes.is_empty() {
                    let mut w = Vec::with_capacity(bytes.len() + 1);
                    w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    w.extend_from_slice(bytes);
                    w
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let eos: Vec<u32> = tokenizer.end_of_generation.iter().copied().collect();
        Self::from_vocab(words, eos, tokenizer.eos_token_id, tokenizer.bos_token_id)
    }

    /// From every token's bytes (special tokens behind the marker byte) and the
    /// end-of-generation ids, `eos` preferred as the primary one.
    fn from_vocab(
        words: Vec<Vec<u8>>,
        mut end_of_generation: Vec<u32>,
        eos: Option<u32>,
        bos: Option<u32>,
    ) -> Result<Self> {
        let n = words.len();
        end_of_generation.retain(|&t| (t as usize) < n);
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        let primary = eos
            .filter(|t| end_of_generation.contains(t))
            .or_else(|| end_of_generation.first().copied())
            .ok_or_else(|| {
                EngineError::InvalidFormat(
                    "the model has no end-of-generation token to end a structured answer".into(),
                )
            })?;
        let info = TokRxInfo {
            vocab_size: n as u32,
            tok_eos: primary,
            tok_bos: bos.filter(|&t| (t as usize) < n),
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&end_of_generation);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| EngineError::Tokenizer(format!("structured outputs: {e:#}")))?;
        factory.quiet();
        Ok(Self {
            factory,
            compiled: Mutex::new(VecDeque::new()),
        })
    }

    /// A fresh parser for `format`, compiled now or taken from the cache.
    pub(crate) fn parser(&self, format: &OutputFormat) -> Result<TokenParser> {
        let key = format.key();
        {
            let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
                if let Some(entry) = cache.remove(i) {
                    let parser = entry.1.clone();
                    cache.push_back(entry);
                    return Ok(parser);
                }
            }
        }
        let grammar = match format {
            OutputFormat::Json => TopLevelGrammar::from_lark(JSON_OBJECT_LARK.to_string()),
            OutputFormat::JsonSchema(_) => TopLevelGrammar::from_json_schema(format.schema()?),
            OutputFormat::Wrapped { .. } => {
                TopLevelGrammar::from_lark(format.wrapped_lark()?.unwrap_or_default())
            }
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| EngineError::InvalidFormat(format!("{e:#}")))?;
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        cache.push_back((key, parser.clone()));
        while cache.len() > COMPILED_CACHE {
            cache.pop_front();
        }
        Ok(parser)
    }

    /// Compile `format`, keeping it for the sequence that will use it.
    pub(crate) fn check(&self, format: &OutputFormat) -> Result<()> {
        self.parser(format).map(drop)
    }
}

#[cfg(test)]
mod tests;

mod json_object;
use json_object::JSON_OBJECT_LARK;
