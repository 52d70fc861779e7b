//! Choosing and rendering a model's prompt template, and tokenizing the result.
//!
//! Templates come from, in order: the request's `template` field, the manifest's
//! TEMPLATE layer, the GGUF `tokenizer.chat_template`. Each is read as what it is: a Go
//! `text/template` (Ollama's `{{ .Prompt }}` style, rendered with Ollama's rules) or a
//! Jinja template (rendered as transformers does). Nothing is substituted: a template
//! that does not parse is a 400 naming `template`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wick_engine::Model;
use wick_templating::{
    ChatContext, ChatTemplate, GoChat, GoGenerate, GoTemplate, Message, Think, Tool, ToolCallFormat,
};

use crate::error::{ApiError, Result};

/// A compiled prompt template of either syntax.
#[derive(Clone, Debug)]
pub(crate) enum Template {
    Jinja(Arc<ChatTemplate>),
    Go(Arc<GoTemplate>),
}

impl Template {
    /// Compile `source` as Go or Jinja, whichever it is.
    pub fn compile(source: &str) -> std::result::Result<Template, wick_templating::TemplateError> {
        if is_go_template(source) {
            GoTemplate::parse(source).map(|t| Template::Go(Arc::new(t)))
        } else {
            ChatTemplate::new(source).map(|t| Template::Jinja(Arc::new(t)))
        }
    }

    /// Ollama's `tools` capability.
    pub fn supports_tools(&self) -> bool {
        match self {
            Template::Jinja(t) => t.supports_tools(),
            Template::Go(t) => t.supports_tools(),
        }
    }

    /// Ollama's `insert` capability as a template gives it (it uses the suffix);
    /// models with FIM tokens have it too (see `generate`).
    pub fn supports_insert(&self) -> bool {
        match self {
            Template::Jinja(t) => t.supports_insert(),
            Template::Go(t) => t.supports_insert(),
        }
    }

    /// The tags a model's thinking comes between, when the template renders thinking:
    /// Ollama's `thinking` capability (a Jinja template: when it writes `<think>` tags
    /// or splits past reasoning off at `</think>`, as Qwen3 and DeepSeek-R1 do).
    pub fn thinking_tags(&self) -> Option<(String, String)> {
        match self {
            Template::Go(t) => t
                .thinking_tags()
                .map(|(o, c)| (o.to_string(), c.to_string())),
            Template::Jinja(t) => t
                .thinking_tags()
                .map(|(o, c)| (o.to_string(), c.to_string())),
        }
    }

    /// How the model writes tool calls, as read from the template.
    pub fn tool_call_format(&self) -> Option<ToolCallFormat> {
        match self {
            // A Jinja template that renders tools but no sample call: Hermes-style tags.
            Template::Jinja(t) => ToolCallFormat::from_jinja(t).or_else(|| {
                t.supports_tools()
                    .then(|| ToolCallFormat::new("<tool_call>"))
            }),
            Template::Go(t) => Some(t.tool_call_format()),
        }
    }

    /// The template's source.
    #[cfg(test)]
    pub fn source(&self) -> &str {
        match self {
            Template::Jinja(t) => t.source(),
            Template::Go(t) => t.source(),
        }
    }

    /// Render a conversation, ending with the opening of the assistant's turn.
    pub fn render_chat(
        &self,
        model: &Model,
        messages: &[Message],
        tools: Option<&[Tool]>,
        think: Option<&Think>,
    ) -> Result<String> {
        let rendered = match self {
            Template::Jinja(t) => t.render(&ChatContext {
                messages,
                tools,
                add_generation_prompt: true,
                bos_token: token_text(model, model.tokenizer.bos_token_id),
                eos_token: token_text(model, model.tokenizer.eos_token_id),
                enable_thinking: think.map(Think::enabled),
            }),
            Template::Go(t) => t.render_chat(&GoChat {
                messages,
                tools,
                think,
            }),
        };
        rendered.map_err(|e| ApiError::bad(format!("rendering the template: {e}")))
    }

    /// Render `/api/generate`'s fill-in-the-middle request through a Go template that
    /// uses `.Suffix`.
    pub fn render_insert(
        &self,
        prompt: &str,
        suffix: &str,
        think: Option<&Think>,
    ) -> Result<String> {
        match self {
            Template::Go(t) if t.supports_insert() => t
                .render_generate(&GoGenerate {
                    system: "",
                    prompt,
                    suffix,
                    think,
                })
                .map_err(|e| ApiError::bad(format!("rendering the template: {e}"))),
            _ => Err(ApiError::internal("the template has no .Suffix")),
        }
    }
}

/// Compiled templates by source, so a chat does not recompile its template each turn.
#[derive(Clone, Default)]
pub(crate) struct TemplateCache(Arc<Mutex<HashMap<(bool, String), Template>>>);

const CACHE_CAPACITY: usize = 32;

impl TemplateCache {
    /// The compiled template for `source`. `request` marks a request's own `template`
    /// field, which is always Go as in Ollama: Jinja is code that only installed models
    /// bring (minijinja bounds its instructions but not its memory, so a template that
    /// doubles a string in a loop is trusted content, never a request's).
    fn get(&self, source: &str, request: bool) -> Result<Template> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (request, source.to_string());
        if let Some(t) = map.get(&key) {
            return Ok(t.clone());
        }
        let compiled = if request {
            GoTemplate::parse(source).map(|t| Template::Go(Arc::new(t)))
        } else {
            Template::compile(source)
        };
        let t = compiled.map_err(|e| ApiError::bad(format!("\"template\": {e}")))?;
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(key, t.clone());
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
            || rest.starts_with("/*")
            || [
                "end",
                "else",
                "range ",
                "if ",
                "with ",
                "template ",
                "block ",
                "define ",
                "json ",
            ]
            .iter()
            .any(|kw| rest.starts_with(kw))
    })
}

/// The template to render with: the request's, else the model's TEMPLATE layer, else
/// the GGUF chat template. `None` when the model has none (the prompt is used as is).
pub(crate) fn choose(
    cache: &TemplateCache,
    request: Option<&str>,
    layer: Option<&str>,
    gguf: Option<&str>,
) -> Result<Option<Template>> {
    if let Some(src) = request.filter(|s| !s.is_empty()) {
        return cache.get(src, true).map(Some);
    }
    match [layer, gguf].into_iter().flatten().find(|s| !s.is_empty()) {
        Some(src) => cache.get(src, false).map(Some),
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
    template: Option<&Template>,
    model: &Model,
    messages: &[Message],
    tools: Option<&[Tool]>,
    think: Option<&Think>,
) -> Result<String> {
    match template {
        Some(t) => t.render_chat(model, messages, tools, think),
        None => {
            let parts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
            Ok(parts.join("\n"))
        }
    }
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

    fn kind(t: &Template) -> &'static str {
        match t {
            Template::Jinja(_) => "jinja",
            Template::Go(_) => "go",
        }
    }

    #[test]
    fn choosing() {
        let cache = TemplateCache::default();
        let t = choose(&cache, None, None, Some("{{ messages[0].content }}")).unwrap();
        assert_eq!(t.as_ref().map(kind), Some("jinja"));
        assert!(choose(&cache, None, None, None).unwrap().is_none());
        // The request's template wins, then the TEMPLATE layer, then the GGUF's; a Go
        // layer is rendered as Go, never replaced by the GGUF's Jinja.
        let t = choose(&cache, None, Some("{{ .Prompt }}"), Some("{{ messages }}"))
            .unwrap()
            .unwrap();
        assert_eq!((kind(&t), t.source()), ("go", "{{ .Prompt }}"));
        let t = choose(
            &cache,
            Some("[{{ .Prompt }}]"),
            Some("{{ .Prompt }}"),
            Some("x"),
        )
        .unwrap()
        .unwrap();
        assert_eq!((kind(&t), t.source()), ("go", "[{{ .Prompt }}]"));
        // A request's template is always Go: Jinja is refused, Jinja tags are text.
        let e = choose(&cache, Some("{{ messages }}"), None, Some("{{ messages }}")).unwrap_err();
        assert!(e.to_string().starts_with("\"template\": "), "{e}");
        let t = choose(&cache, Some("{% for %}"), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(kind(&t), "go");
        // The same source as a model's Jinja template still renders as Jinja there.
        let t = choose(&cache, None, None, Some("{{ messages }}"))
            .unwrap()
            .unwrap();
        assert_eq!(kind(&t), "jinja");
        let e = choose(&cache, Some("{{ if .System }}"), None, None).unwrap_err();
        assert!(e.to_string().starts_with("\"template\": "), "{e}");
    }
}
