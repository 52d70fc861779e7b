//! Choosing and rendering a model's prompt template, and tokenizing the result.
//!
//! Templates come from, in order: the request's `template` field, the manifest's
//! TEMPLATE layer, the GGUF `tokenizer.chat_template`. Only Jinja templates can be
//! rendered: a Go TEMPLATE layer (Ollama's `{{ .Prompt }}` style) gives way to the
//! GGUF's Jinja template when there is one; otherwise it is a 400 naming `template`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wick_engine::Model;
use wick_templating::{ChatContext, ChatTemplate, Message, Tool};

use crate::error::{ApiError, Result};

/// Compiled templates by source, so a chat does not recompile its template each turn.
#[derive(Clone, Default)]
pub(crate) struct TemplateCache(Arc<Mutex<HashMap<String, Arc<ChatTemplate>>>>);

const CACHE_CAPACITY: usize = 32;

impl TemplateCache {
    fn get(&self, source: &str) -> Result<Arc<ChatTemplate>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(source) {
            return Ok(t.clone());
        }
        let t = Arc::new(
            ChatTemplate::new(source).map_err(|e| ApiError::bad(format!("\"template\": {e}")))?,
        );
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(source.to_string(), t.clone());
        Ok(t)
    }
}

/// Whether `source` is a Go `text/template` (Ollama's TEMPLATE syntax) rather than
/// Jinja: it has Go actions such as `{{ .Prompt }}`, `{{ if .System }}`, `{{ end }}`
/// and no Jinja statements.
pub(crate) fn is_go_template(source: &str) -> bool {
    if source.contains("{%") {
        return false;
    }
    source.match_indices("{{").any(|(i, _)| {
        let rest = source[i + 2..].trim_start_matches('-').trim_start();
        rest.starts_with('.')
            || rest.starts_with('$')
            || [
                "end",
                "else",
                "range ",
                "if ",
                "with ",
                "template ",
                "block ",
                "define ",
            ]
            .iter()
            .any(|kw| rest.starts_with(kw))
    })
}

fn go_template_error(origin: &str) -> ApiError {
    ApiError::bad(format!(
        "\"template\" is not supported yet: the {origin} is a Go template; wick renders \
         Jinja chat templates only"
    ))
}

/// The template to render with: the request's, the model's TEMPLATE layer, or the GGUF
/// chat template. `None` when the model has none (the prompt is used as is).
pub(crate) fn choose(
    cache: &TemplateCache,
    request: Option<&str>,
    layer: Option<&str>,
    gguf: Option<&str>,
) -> Result<Option<Arc<ChatTemplate>>> {
    if let Some(src) = request.filter(|s| !s.is_empty()) {
        if is_go_template(src) {
            return Err(go_template_error("request's template"));
        }
        return cache.get(src).map(Some);
    }
    let gguf = gguf.filter(|s| !s.is_empty());
    if let Some(src) = layer.filter(|s| !s.is_empty()) {
        if !is_go_template(src) {
            return cache.get(src).map(Some);
        }
        // Models from an Ollama store carry a Go TEMPLATE layer; their GGUF usually has
        // the Jinja chat template it was written from, which llama.cpp renders too.
        if gguf.is_none() {
            return Err(go_template_error("model's TEMPLATE"));
        }
        tracing::debug!("Go TEMPLATE layer; rendering the GGUF's chat template instead");
    }
    match gguf {
        Some(src) => cache.get(src).map(Some),
        None => Ok(None),
    }
}

fn token_text(model: &Model, id: Option<u32>) -> String {
    id.map(|id| String::from_utf8_lossy(model.tokenizer.token_bytes(id)).into_owned())
        .unwrap_or_default()
}

/// Render a conversation, ending with the opening of the assistant's turn. Without a
/// template the message contents are joined by newlines.
pub(crate) fn render(
    template: Option<&ChatTemplate>,
    model: &Model,
    messages: &[Message],
    tools: Option<&[Tool]>,
) -> Result<String> {
    let Some(t) = template else {
        let parts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        return Ok(parts.join("\n"));
    };
    t.render(&ChatContext {
        messages,
        tools,
        add_generation_prompt: true,
        bos_token: token_text(model, model.tokenizer.bos_token_id),
        eos_token: token_text(model, model.tokenizer.eos_token_id),
        enable_thinking: None,
    })
    .map_err(|e| ApiError::bad(e.to_string()))
}

/// Tokenize a prompt, adding BOS when the model wants it and the text does not already
/// start with it (templates that write `{{ bos_token }}` would get two).
pub(crate) fn tokenize(model: &Model, text: &str) -> Result<Vec<u32>> {
    let bos = token_text(model, model.tokenizer.bos_token_id);
    let add_bos = bos.is_empty() || !text.starts_with(&bos);
    model
        .tokenizer
        .encode(text, add_bos)
        .map_err(|e| ApiError::internal(format!("tokenizing the prompt: {e}")))
}

/// The context window a sequence really gets (the engine caps it the same way).
pub(crate) fn effective_ctx(model: &Model, num_ctx: usize) -> usize {
    num_ctx.min(model.context_length()).max(2)
}

/// The error of a prompt that does not fit when truncation is off.
pub(crate) fn too_long(tokens: usize, num_ctx: usize) -> ApiError {
    ApiError::bad(format!(
        "the input length exceeds the context length ({tokens} tokens, num_ctx {num_ctx})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_or_jinja() {
        assert!(is_go_template("{{ .Prompt }}"));
        assert!(is_go_template(
            "{{- if .System }}<|system|>{{ .System }}{{ end }}{{ .Prompt }}"
        ));
        assert!(is_go_template(
            "{{ range .Messages }}{{ .Content }}{{ end }}"
        ));
        assert!(!is_go_template(
            "{% for m in messages %}{{ m.content }}{% endfor %}"
        ));
        assert!(!is_go_template("{{ messages[0].content }}"));
        assert!(!is_go_template("plain text"));
    }

    #[test]
    fn choosing() {
        let cache = TemplateCache::default();
        let t = choose(&cache, None, None, Some("{{ messages[0].content }}")).unwrap();
        assert!(t.is_some());
        assert!(choose(&cache, None, None, None).unwrap().is_none());
        // A Go TEMPLATE layer gives way to the GGUF's Jinja template...
        let t = choose(&cache, None, Some("{{ .Prompt }}"), Some("{{ messages }}")).unwrap();
        assert_eq!(
            t.map(|t| t.source().to_string()).as_deref(),
            Some("{{ messages }}")
        );
        // ...and is a 400 naming the field when there is none.
        let e = choose(&cache, None, Some("{{ .Prompt }}"), None).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("\"template\" is not supported yet"));
        let e = choose(&cache, Some("{% for %}"), None, None).unwrap_err();
        assert!(e.to_string().starts_with("\"template\": "), "{e}");
    }
}
