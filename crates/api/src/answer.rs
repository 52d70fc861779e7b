//! Generated text as a client sees it: thinking, content and tool calls, split as the
//! text streams in. Chat, generate and the OpenAI routes all read their answers through
//! one [`AnswerParser`], so a streamed answer always equals the non-streamed one.

use wick_templating::{
    calls_use_offered_tools, random_call_id, StreamChunk, ThinkingParser, Tool, ToolCall,
    ToolCallFormat, ToolCallParser,
};

/// One piece of an answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Answer {
    pub thinking: String,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

impl Answer {
    pub fn is_empty(&self) -> bool {
        self.thinking.is_empty() && self.content.is_empty() && self.tool_calls.is_empty()
    }
}

fn new_call_id() -> String {
    random_call_id(&mut rand::rng())
}

type IdFn = fn() -> String;

/// Tool calls out of generated text in the template's syntax. A model whose template
/// tags its calls (Qwen's `<tool_call>`) may still answer with a bare JSON call naming
/// an offered tool, or such a call in a Markdown code fence (small models often leave
/// out the tags): an answer that starts with `{` or a fence is held back until it
/// ends, then read as bare calls if it is one.
#[derive(Clone)]
pub(crate) struct ToolCalls {
    parser: ToolCallParser<IdFn>,
    names: Vec<String>,
    /// The answer so far, while it may still be an untagged JSON call.
    held: Option<String>,
}

impl ToolCalls {
    pub fn new(format: ToolCallFormat, tools: &[Tool]) -> Self {
        let names = wick_templating::tool_names(tools);
        let held = (!format.is_bare_json()).then(String::new);
        ToolCalls {
            parser: ToolCallParser::new(format, names.clone(), new_call_id as IdFn),
            names,
            held,
        }
    }

    pub fn push(&mut self, text: &str) -> StreamChunk {
        let Some(held) = &mut self.held else {
            return self.parser.push(text);
        };
        held.push_str(text);
        if may_be_bare_call(held) {
            return StreamChunk::default();
        }
        let held = self.held.take().unwrap_or_default();
        self.parser.push(&held)
    }

    pub fn finish(&mut self) -> StreamChunk {
        let Some(held) = self.held.take() else {
            return self.parser.finish();
        };
        if let Some(json) = unfenced(&held) {
            let mut bare = ToolCallParser::new(
                ToolCallFormat::new("{"),
                self.names.clone(),
                new_call_id as IdFn,
            );
            let mut out = bare.push(json);
            let rest = bare.finish();
            out.content.push_str(&rest.content);
            out.tool_calls.extend(rest.tool_calls);
            if !out.tool_calls.is_empty()
                && out.content.trim().is_empty()
                && calls_use_offered_tools(&out.tool_calls, &self.names)
            {
                out.content.clear();
                return out;
            }
        }
        let mut out = self.parser.push(&held);
        let rest = self.parser.finish();
        out.content.push_str(&rest.content);
        out.tool_calls.extend(rest.tool_calls);
        out
    }
}

const FENCES: [&str; 2] = ["```json", "```"];

/// Whether an answer that starts like this may still turn out to be an untagged call:
/// `{`, or a code fence (plain or `json`) whose code may start with `{`.
fn may_be_bare_call(held: &str) -> bool {
    let start = held.trim_start();
    if start.is_empty() || start.starts_with('{') || "```".starts_with(start) {
        return true;
    }
    let Some(rest) = start.strip_prefix("```") else {
        return false;
    };
    if "json".starts_with(rest) {
        return true;
    }
    let code = rest.strip_prefix("json").unwrap_or(rest).trim_start();
    code.is_empty() || code.starts_with('{')
}

/// The JSON of an answer that is a bare call, with or without a code fence around it.
fn unfenced(held: &str) -> Option<&str> {
    let text = held.trim();
    if text.starts_with('{') {
        return Some(text);
    }
    let inner = FENCES.iter().find_map(|f| text.strip_prefix(f))?;
    let inner = inner.strip_suffix("```").unwrap_or(inner).trim();
    inner.starts_with('{').then_some(inner)
}

/// Splits a generation's text into thinking (when the model thinks), content, and
/// tool calls (when tools were offered).
#[derive(Default, Clone)]
pub(crate) struct AnswerParser {
    thinking: Option<ThinkingParser>,
    tools: Option<ToolCalls>,
    /// Calls still to be read when they are limited (OpenAI's
    /// `parallel_tool_calls: false` reads one).
    calls_left: Option<usize>,
}

impl AnswerParser {
    pub fn new(thinking: Option<ThinkingParser>, tools: Option<ToolCalls>) -> Self {
        AnswerParser {
            thinking,
            tools,
            calls_left: None,
        }
    }

    /// Read at most one tool call when `one` (later calls are not reported).
    pub fn at_most_one_call(mut self, one: bool) -> Self {
        self.calls_left = one.then_some(1);
        self
    }

    pub fn push(&mut self, text: &str) -> Answer {
        let (thinking, content) = match &mut self.thinking {
            Some(p) => p.push(text),
            None => (String::new(), text.to_string()),
        };
        self.content(thinking, content, false)
    }

    pub fn finish(&mut self) -> Answer {
        let (thinking, content) = match &mut self.thinking {
            Some(p) => p.finish(),
            None => (String::new(), String::new()),
        };
        self.content(thinking, content, true)
    }

    fn content(&mut self, thinking: String, content: String, last: bool) -> Answer {
        let Some(tools) = &mut self.tools else {
            return Answer {
                thinking,
                content,
                tool_calls: Vec::new(),
            };
        };
        let mut chunk = tools.push(&content);
        if last {
            let rest = tools.finish();
            chunk.content.push_str(&rest.content);
            chunk.tool_calls.extend(rest.tool_calls);
        }
        if let Some(left) = &mut self.calls_left {
            chunk.tool_calls.truncate(*left);
            *left -= chunk.tool_calls.len();
        }
        Answer {
            thinking,
            content: chunk.content,
            tool_calls: chunk.tool_calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<Tool> {
        vec![json!({"type": "function", "function": {"name": "get_weather", "parameters": {}}})]
    }

    fn run(parser: &mut AnswerParser, pieces: &[&str]) -> Answer {
        let mut all = Answer::default();
        let mut add = |a: Answer| {
            all.thinking.push_str(&a.thinking);
            all.content.push_str(&a.content);
            all.tool_calls.extend(a.tool_calls);
        };
        for p in pieces {
            add(parser.push(p));
        }
        add(parser.finish());
        all
    }

    fn qwen_tools() -> AnswerParser {
        AnswerParser::new(
            None,
            Some(ToolCalls::new(ToolCallFormat::new("<tool_call>"), &tools())),
        )
    }

    #[test]
    fn tagged_and_bare_calls_and_plain_text() {
        let a = run(
            &mut qwen_tools(),
            &[
                "{\"name\": \"get_",
                "weather\", \"arguments\": {\"city\": \"Paris\"}}",
            ],
        );
        assert_eq!(a.content, "");
        assert_eq!(a.tool_calls.len(), 1);
        assert_eq!(a.tool_calls[0].function.arguments["city"], "Paris");

        let a = run(
            &mut qwen_tools(),
            &["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"],
        );
        assert_eq!((a.content.as_str(), a.tool_calls.len()), ("", 1));

        let a = run(&mut qwen_tools(), &["Hello", " there"]);
        assert_eq!((a.content.as_str(), a.tool_calls.len()), ("Hello there", 0));

        // JSON that is not a call of an offered tool stays content.
        let a = run(
            &mut qwen_tools(),
            &["{\"name\": \"other\", \"arguments\": {}}"],
        );
        assert_eq!(a.tool_calls.len(), 0);
        assert_eq!(a.content, "{\"name\": \"other\", \"arguments\": {}}");
        let a = run(&mut qwen_tools(), &["{\"a\": 1}"]);
        assert_eq!(a.content, "{\"a\": 1}");

        // A bare call in a Markdown fence.
        let a = run(
            &mut qwen_tools(),
            &[
                "``",
                "`json\n{\"name\": \"get_weather\", ",
                "\"arguments\": {}}\n``",
                "`",
            ],
        );
        assert_eq!((a.content.as_str(), a.tool_calls.len()), ("", 1));
        // Other fenced code is content, and streams at once.
        let mut p = qwen_tools();
        assert_eq!(p.push("```py").content, "```py");
        let a = run(&mut qwen_tools(), &["```python\n", "print(1)\n```"]);
        assert_eq!(
            (a.content.as_str(), a.tool_calls.len()),
            ("```python\nprint(1)\n```", 0)
        );
    }

    #[test]
    fn one_call_when_parallel_calls_are_off() {
        let two = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>";
        assert_eq!(run(&mut qwen_tools(), &[two]).tool_calls.len(), 2);
        let mut p = qwen_tools().at_most_one_call(true);
        assert_eq!(run(&mut p, &[two]).tool_calls.len(), 1);
    }

    #[test]
    fn thinking_then_a_call() {
        let mut p = AnswerParser::new(
            Some(ThinkingParser::new("<think>", "</think>")),
            Some(ToolCalls::new(ToolCallFormat::new("<tool_call>"), &tools())),
        );
        let a = run(
            &mut p,
            &[
                "<think>I should",
                " check</th",
                "ink>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>",
            ],
        );
        assert_eq!(a.thinking, "I should check");
        assert_eq!(a.content, "");
        assert_eq!(a.tool_calls.len(), 1);
    }
}
