//! Hugging Face / GGUF `tokenizer.chat_template` rendering with minijinja, configured
//! like transformers' `apply_chat_template`: `trim_blocks` and `lstrip_blocks`, loop
//! controls, Python string/dict methods, its `tojson`, `raise_exception` and
//! `strftime_now`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use crate::error::TemplateError;
use crate::json::tojson_filter;
use crate::types::{Message, Tool};

const NAME: &str = "chat_template";

/// The most instructions one render may run: far above what a real chat template
/// needs for a long conversation, and a bound on templates that loop for ever
/// (`{% for a in range(100000) %}{% for b in range(100000) %}...`).
const MAX_FUEL: u64 = 20_000_000;

/// What one render of a chat template sees.
#[derive(Debug, Clone, Default)]
pub struct ChatContext<'a> {
    pub messages: &'a [Message],
    /// Tools offered to the model. `None` and an empty list both render as `tools=None`.
    pub tools: Option<&'a [Tool]>,
    /// End the prompt with the opening of an assistant turn.
    pub add_generation_prompt: bool,
    pub bos_token: String,
    pub eos_token: String,
    /// Ollama's `think`, passed as `enable_thinking` (Qwen3-style templates) when set.
    pub enable_thinking: Option<bool>,
}

/// A compiled chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    supports_tools: bool,
    supports_insert: bool,
}

/// The error `raise_exception` returns, recognised again in [`render_error`].
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

fn strftime_now(format: String) -> Result<String, Error> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        )
    })?;
    Ok(out)
}

fn render_error(err: Error) -> TemplateError {
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(raised) = cause.downcast_ref::<RaisedException>() {
            return TemplateError::Raised(raised.0.clone());
        }
        source = cause.source();
    }
    TemplateError::Render(err.to_string())
}

/// A message as templates see it: Ollama's fields, plus `reasoning_content` (the name
/// Hugging Face templates use for the thinking text).
#[derive(Serialize)]
struct TemplateMessage<'a> {
    #[serde(flatten)]
    message: &'a Message,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template.
    pub fn new(source: &str) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(MAX_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_filter("tojson", tojson_filter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|err| TemplateError::Syntax(err.to_string()))?;
        let undeclared = env
            .get_template(NAME)
            .map_err(|err| TemplateError::Syntax(err.to_string()))?
            .undeclared_variables(false);
        Ok(ChatTemplate {
            supports_tools: undeclared.contains("tools"),
            supports_insert: undeclared.contains("suffix"),
            env,
            source: source.to_string(),
        })
    }

    /// The template source, as given to [`ChatTemplate::new`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template reads `tools` (Ollama's `tools` capability).
    pub fn supports_tools(&self) -> bool {
        self.supports_tools
    }

    /// Whether the template reads `suffix` (fill-in-the-middle; Ollama's `insert`
    /// capability). Chat templates almost never do.
    pub fn supports_insert(&self) -> bool {
        self.supports_insert
    }

    /// `<think>`/`</think>` when the template handles thinking the way Ollama
    /// recognises it in a Jinja template: it writes both tags, or it drops past
    /// reasoning by splitting assistant content at `</think>`.
    pub fn thinking_tags(&self) -> Option<(&'static str, &'static str)> {
        let src = &self.source;
        let writes_tags = src.contains("<think>") && src.contains("</think>");
        let splits = (src.contains("content.split('</think>')")
            || src.contains("content.split(\"</think>\")"))
            && !src.contains("reasoning_content");
        (writes_tags || splits).then_some(("<think>", "</think>"))
    }

    /// Renders the conversation into a prompt.
    pub fn render(&self, ctx: &ChatContext<'_>) -> Result<String, TemplateError> {
        let messages: Vec<TemplateMessage<'_>> = ctx
            .messages
            .iter()
            .map(|message| TemplateMessage {
                message,
                reasoning_content: message.thinking.as_deref(),
            })
            .collect();
        let tools = match ctx.tools {
            Some(tools) if !tools.is_empty() => Value::from_serialize(tools),
            _ => Value::from(()),
        };
        let mut vars: BTreeMap<&str, Value> = BTreeMap::new();
        vars.insert("messages", Value::from_serialize(&messages));
        vars.insert("tools", tools);
        vars.insert(
            "add_generation_prompt",
            Value::from(ctx.add_generation_prompt),
        );
        vars.insert("bos_token", Value::from(ctx.bos_token.as_str()));
        vars.insert("eos_token", Value::from(ctx.eos_token.as_str()));
        if let Some(think) = ctx.enable_thinking {
            vars.insert("enable_thinking", Value::from(think));
        }
        let template = self.env.get_template(NAME).map_err(render_error)?;
        // minijinja 2.24 panics on some templates (`''[::-1]` indexes an empty string,
        // found by the `jinja_template` fuzz target). A template is input: a panic in
        // the engine is this render's error, not a dead request.
        let rendered = std::panic::catch_unwind(AssertUnwindSafe(|| template.render(vars)))
            .map_err(|_| {
                TemplateError::Render("the template engine failed on this template".into())
            })?;
        rendered.map_err(render_error)
    }
}

/// Ollama's `/api/generate` through a chat template: the messages
/// `[system (if any), user prompt]`, ending with the assistant turn's opening.
pub fn render_generate(
    template: &ChatTemplate,
    system: Option<&str>,
    prompt: &str,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, TemplateError> {
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = system {
        messages.push(Message::new("system", system));
    }
    messages.push(Message::new("user", prompt));
    template.render(&ChatContext {
        messages: &messages,
        add_generation_prompt: true,
        bos_token: bos_token.to_string(),
        eos_token: eos_token.to_string(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ToolCall, ToolCallFunction};

    fn render(source: &str, messages: &[Message]) -> Result<String, TemplateError> {
        ChatTemplate::new(source)?.render(&ChatContext {
            messages,
            ..Default::default()
        })
    }

    #[test]
    fn templates_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = ChatTemplate::new("{% for m in messages %}{{ m.content }}").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax(_)), "{err}");
        assert!(
            err.to_string().starts_with("invalid chat template: "),
            "{err}"
        );
    }

    #[test]
    fn raise_exception_is_its_own_error() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}";
        let err = render(src, &[Message::new("assistant", "hi")]).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Raised("Conversation roles must alternate user/assistant".into())
        );
    }

    #[test]
    fn other_failures_are_render_errors() {
        let err = render(
            "{{ messages[0].content.nosuchmethod() }}",
            &[Message::new("user", "x")],
        )
        .unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err}");
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        let src = "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}";
        let err = render(src, &[]).unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err}");
        assert!(err.to_string().contains("fuel"), "{err}");
    }

    /// Found by the `jinja_template` fuzz target: minijinja panicked reversing an empty
    /// string.
    #[test]
    fn engine_panics_are_render_errors() {
        let err = render(
            "{% for m in messages %}{{ m.content[::-1] }}{% endfor %}",
            &[Message::new("user", "")],
        )
        .unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err}");
    }

    #[test]
    fn python_methods_work() {
        let src = "{% for m in messages %}{{ m.content.strip().split(' ')|join('|') }}{{ m.content.startswith(' a') }}{% for k, v in m.items() %}{% if k == 'role' %}[{{ v.upper() }}]{% endif %}{% endfor %}{% endfor %}";
        let out = render(src, &[Message::new("user", " a b c ")]).unwrap();
        assert_eq!(out, "a|b|cTrue[USER]");
    }

    #[test]
    fn loop_controls_and_namespace_work() {
        let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}";
        let msgs = vec![Message::new("user", "a"); 5];
        assert_eq!(render(src, &msgs).unwrap(), "2");
    }

    #[test]
    fn tool_call_arguments_are_objects_in_key_order() {
        let mut arguments = serde_json::Map::new();
        arguments.insert("zeta".into(), "é<b>".into());
        arguments.insert("alpha".into(), 1.5.into());
        let msg = Message {
            tool_calls: Some(vec![ToolCall {
                id: None,
                function: ToolCallFunction {
                    index: None,
                    name: "f".into(),
                    arguments,
                },
            }]),
            ..Message::new("assistant", "")
        };
        let src = "{% for tc in messages[0].tool_calls %}{{ tc.function.arguments | tojson }}|{{ tc.function.arguments.alpha }}|{{ tc.function.arguments | tojson(indent=1) }}{% endfor %}";
        assert_eq!(
            render(src, &[msg]).unwrap(),
            "{\"zeta\": \"é<b>\", \"alpha\": 1.5}|1.5|{\n \"zeta\": \"é<b>\",\n \"alpha\": 1.5\n}"
        );
    }

    #[test]
    fn absent_fields_are_undefined_and_thinking_is_reasoning_content() {
        let msg = Message {
            thinking: Some("hmm".into()),
            ..Message::new("assistant", "ok")
        };
        let src = "{{ messages[0].tool_calls is defined }} {{ messages[0].reasoning_content }} {{ tools is none }}";
        assert_eq!(render(src, &[msg]).unwrap(), "False hmm True");
    }

    #[test]
    fn strftime_now_formats_the_current_date() {
        let out = render("{{ strftime_now('%Y') }}", &[]).unwrap();
        assert_eq!(out, chrono::Local::now().format("%Y").to_string());
        assert!(render("{{ strftime_now('%Q') }}", &[]).is_err());
    }

    #[test]
    fn capabilities_come_from_referenced_variables() {
        let plain =
            ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}").unwrap();
        assert!(!plain.supports_tools() && !plain.supports_insert());
        let tools = ChatTemplate::new("{% if tools %}{{ tools | tojson }}{% endif %}").unwrap();
        assert!(tools.supports_tools() && !tools.supports_insert());
        let fim = ChatTemplate::new("{{ prompt }}{{ suffix }}").unwrap();
        assert!(fim.supports_insert());
    }

    #[test]
    fn thinking_tags_of_jinja_templates() {
        let qwen3 = ChatTemplate::new("{% for m in messages %}{% if m.reasoning_content %}<think>\n{{ m.reasoning_content }}\n</think>\n{% endif %}{{ m.content }}{% endfor %}").unwrap();
        assert_eq!(qwen3.thinking_tags(), Some(("<think>", "</think>")));
        let r1 = ChatTemplate::new(
            "{% for m in messages %}{{ m.content.split('</think>')[-1] }}{% endfor %}",
        )
        .unwrap();
        assert_eq!(r1.thinking_tags(), Some(("<think>", "</think>")));
        let plain =
            ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}").unwrap();
        assert_eq!(plain.thinking_tags(), None);
    }

    #[test]
    fn special_tokens_and_generation_prompt_are_passed() {
        let t = ChatTemplate::new("{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}").unwrap();
        let out = render_generate(&t, Some("be nice"), "hi", "<s>", "</s>").unwrap();
        assert_eq!(out, "<s>system:be nice;user:hi;assistant:");
        assert_eq!(
            render_generate(&t, None, "hi", "", "").unwrap(),
            "user:hi;assistant:"
        );
    }
}
