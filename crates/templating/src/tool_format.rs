//! Tool calls for every template family: [`ToolCallFormat`] says how a model writes
//! its calls (the text before the JSON: `<tool_call>` for Qwen/Hermes,
//! `[TOOL_CALLS]` for Mistral, `<|tool_call|>` for Granite, `{` for bare JSON as
//! Llama 3.x writes it, ...), and [`ToolCallParser`] reads them out of a stream.
//!
//! A Go template's format comes from its `.ToolCalls` branch (as Ollama reads it);
//! a Jinja template's from rendering one sample call through it. Unlike Ollama, a
//! `[` ending the tag is left to the JSON list it opens, so spacing around it does
//! not matter; and a response that *starts* with a call to an offered tool is read
//! as calls even without the tag (models drop it at times).
//!
//! The parser, like Ollama's, passes text through until the tag. After a tag every
//! JSON value is read as one call (`{"name", "arguments"|"parameters"}`, also
//! `tool_name`, `{"function": {...}}` and `{"<tool name>": {args}}`) or a list of
//! them; a JSON object without a name takes the offered tool name written just
//! before it (DeepSeek's `function<sep>name ```json {args}```` style). Other text
//! after the tag (closing tags, fences) is dropped. If the tagged part held no call
//! at all, [`ToolCallParser::finish`] gives it back as content. With a bare-JSON
//! format only output that starts with `{` or `[` is read as calls.

use serde_json::{Map, Value};

use crate::template::{ChatContext, ChatTemplate};
use crate::tool_calls::StreamChunk;
use crate::types::{Message, ToolCall, ToolCallFunction};

/// How a model's tool calls begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallFormat {
    tag: String,
}

const PROBE_NAME: &str = "wick_probe_function";

impl ToolCallFormat {
    /// A format from its tag; an empty tag means bare JSON (`{`). A `[` that ends
    /// the tag opens the JSON list of calls and is left to the JSON (so
    /// `[TOOL_CALLS] [` and `[TOOL_CALLS][` both read as `[TOOL_CALLS]`).
    pub fn new(tag: &str) -> ToolCallFormat {
        let mut tag = tag.trim();
        if tag != "[" {
            if let Some(rest) = tag.strip_suffix('[') {
                tag = rest.trim_end();
                if tag.is_empty() {
                    tag = "[";
                }
            }
        }
        ToolCallFormat {
            tag: if tag.is_empty() {
                "{".into()
            } else {
                tag.into()
            },
        }
    }

    /// The text that starts a tool call (`{` or `[` for bare JSON).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether calls are bare JSON, recognised only at the start of the output.
    pub fn is_bare_json(&self) -> bool {
        self.tag == "{" || self.tag == "["
    }

    /// The format of a Jinja chat template: renders a conversation whose assistant
    /// turn is one tool call, and takes the text between where that render departs
    /// from the same turn without the call and the call's JSON. `None` when the
    /// template does not render tool calls.
    pub fn from_jinja(template: &ChatTemplate) -> Option<ToolCallFormat> {
        let tools: Vec<Value> = vec![serde_json::json!({
            "type": "function",
            "function": {
                "name": PROBE_NAME,
                "description": "probe",
                "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
            }
        })];
        let mut arguments = Map::new();
        arguments.insert("x".into(), Value::from("wick_probe_value"));
        let call = ToolCall {
            id: Some("call_wickprob".into()),
            function: ToolCallFunction {
                index: Some(0),
                name: PROBE_NAME.into(),
                arguments,
            },
        };
        let with_call = Message {
            tool_calls: Some(vec![call]),
            ..Message::new("assistant", "")
        };
        let render = |assistant: Message| {
            let messages = [
                Message::new("user", "What is x?"),
                assistant,
                Message::new("user", "Thanks."),
            ];
            template.render(&ChatContext {
                messages: &messages,
                tools: Some(&tools),
                add_generation_prompt: false,
                ..ChatContext::default()
            })
        };
        let with = render(with_call).ok()?;
        let without = render(Message::new("assistant", "")).ok()?;
        let mut start = with
            .bytes()
            .zip(without.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        while !with.is_char_boundary(start) {
            start -= 1;
        }
        // Both turns may go on with the same opening of a special token (`<` of
        // `<tool_call>` and of `<|im_end|>`): that opening belongs to the tag.
        while let Some(c) = with[..start].chars().next_back() {
            if !matches!(c, '<' | '[' | '|' | '｜') {
                break;
            }
            start -= c.len_utf8();
        }
        let name_at = start + with[start..].find(PROBE_NAME)?;
        let before = &with[start..name_at];
        // The tag ends where the JSON object begins (or where the name is written,
        // outside any JSON); a `[` opening a list of calls is not part of it.
        Some(ToolCallFormat::new(before.split('{').next().unwrap_or("")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Passing text through, watching for the tag.
    Looking,
    /// After the tag: reading calls.
    Calling,
    /// Bare JSON that was not a call, or text after bare calls: all is content.
    Done,
}

/// Splits a streamed response into content and tool calls (see the module docs).
#[derive(Debug, Clone)]
pub struct ToolCallParser<F> {
    format: ToolCallFormat,
    tool_names: Vec<String>,
    new_id: F,
    state: State,
    /// Text not yet released.
    buf: String,
    /// Everything since the tag (the tag included), given back if it holds no call.
    section: String,
    /// Calls read from the current tagged part.
    section_calls: usize,
    /// Calls emitted so far (the next call's `index`).
    calls: usize,
    /// Nothing but blanks seen yet: a tagged format still accepts bare calls here.
    at_start: bool,
}

impl<F: FnMut() -> String> ToolCallParser<F> {
    /// A parser for `format`; `tool_names` are the offered tools' names, used for
    /// calls that write the name outside their JSON. `new_id` names each call.
    pub fn new(format: ToolCallFormat, tool_names: Vec<String>, new_id: F) -> Self {
        ToolCallParser {
            format,
            tool_names,
            new_id,
            state: State::Looking,
            buf: String::new(),
            section: String::new(),
            section_calls: 0,
            calls: 0,
            at_start: true,
        }
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, text: &str) -> StreamChunk {
        let mut chunk = StreamChunk::default();
        self.buf.push_str(text);
        self.advance(&mut chunk, false);
        chunk
    }

    /// Ends the stream, releasing whatever was held back.
    pub fn finish(&mut self) -> StreamChunk {
        let mut chunk = StreamChunk::default();
        self.advance(&mut chunk, true);
        match self.state {
            State::Looking | State::Done => chunk.content.push_str(&std::mem::take(&mut self.buf)),
            State::Calling => {
                let rest = std::mem::take(&mut self.buf);
                if self.section_calls == 0 {
                    chunk.content.push_str(&std::mem::take(&mut self.section));
                    chunk.content.push_str(&rest);
                }
            }
        }
        self.state = State::Done;
        chunk
    }

    fn advance(&mut self, chunk: &mut StreamChunk, at_end: bool) {
        loop {
            match self.state {
                State::Done => {
                    chunk.content.push_str(&std::mem::take(&mut self.buf));
                    return;
                }
                State::Looking if self.format.is_bare_json() => {
                    let trimmed = self.buf.trim_start();
                    if trimmed.is_empty() {
                        return;
                    }
                    if trimmed.starts_with(['{', '[']) {
                        self.section.clear();
                        self.section_calls = 0;
                        self.state = State::Calling;
                    } else {
                        self.state = State::Done;
                    }
                }
                State::Looking if self.at_start => {
                    // Models sometimes leave the tag out: a whole response that opens
                    // with a call to an offered tool is read as calls too.
                    let trimmed = self.buf.trim_start();
                    if trimmed.is_empty() {
                        return;
                    }
                    if !trimmed.starts_with(['{', '[']) {
                        self.at_start = false;
                        continue;
                    }
                    let Some(end) = json_end(trimmed) else {
                        if !at_end {
                            return;
                        }
                        self.at_start = false;
                        continue;
                    };
                    let calls = serde_json::from_str::<Value>(&trimmed[..end])
                        .ok()
                        .map(|v| self.calls_in(&v, "", true))
                        .unwrap_or_default();
                    self.at_start = false;
                    if !calls.is_empty() {
                        let skip = self.buf.len() - trimmed.len() + end;
                        self.buf.drain(..skip);
                        self.section.clear();
                        self.section_calls = 0;
                        self.emit(calls, chunk);
                        self.state = State::Calling;
                    }
                }
                State::Looking => {
                    let tag = self.format.tag.as_str();
                    if let Some(i) = self.buf.find(tag) {
                        chunk.content.push_str(&self.buf[..i]);
                        self.section = tag.to_string();
                        self.section_calls = 0;
                        self.buf.drain(..i + tag.len());
                        self.state = State::Calling;
                    } else {
                        let keep = if at_end {
                            0
                        } else {
                            partial_suffix(&self.buf, tag)
                        };
                        let release = self.buf.len() - keep;
                        chunk.content.push_str(&self.buf[..release]);
                        self.buf.drain(..release);
                        return;
                    }
                }
                State::Calling => {
                    if !self.read_calls(chunk) {
                        return;
                    }
                }
            }
        }
    }

    /// Reads complete JSON values after the tag; true when the state changed.
    fn read_calls(&mut self, chunk: &mut StreamChunk) -> bool {
        loop {
            let Some(start) = self.buf.find(['{', '[']) else {
                if self.format.is_bare_json()
                    && self.section_calls > 0
                    && !self.buf.trim().is_empty()
                {
                    // Text after bare calls is content again.
                    self.state = State::Done;
                    return true;
                }
                return false;
            };
            let bare = self.format.is_bare_json();
            if bare && self.section_calls > 0 && !self.buf[..start].trim().is_empty() {
                self.state = State::Done;
                return true;
            }
            let Some(end) = json_end(&self.buf[start..]) else {
                return false;
            };
            let junk = self.buf[..start].to_string();
            let value_text = self.buf[start..start + end].to_string();
            let calls = serde_json::from_str::<Value>(&value_text)
                .ok()
                .map(|v| self.calls_in(&v, &junk, bare))
                .unwrap_or_default();
            if calls.is_empty() && bare {
                // Not a call: this and what follows is content.
                if self.section_calls == 0 {
                    chunk.content.push_str(&std::mem::take(&mut self.section));
                }
                self.state = State::Done;
                return true;
            }
            self.section.push_str(&self.buf[..start + end]);
            self.buf.drain(..start + end);
            self.emit(calls, chunk);
        }
    }

    fn emit(&mut self, calls: Vec<(String, Map<String, Value>)>, chunk: &mut StreamChunk) {
        for (name, arguments) in calls {
            chunk.tool_calls.push(ToolCall {
                id: Some((self.new_id)()),
                function: ToolCallFunction {
                    index: Some(self.calls),
                    name,
                    arguments,
                },
            });
            self.calls += 1;
            self.section_calls += 1;
        }
    }

    /// The calls in one JSON value: a call, a list of calls, or an object that wraps
    /// them (`{"tool_calls": [...]}`). Untagged JSON (`offered_only`) counts only
    /// when every call names an offered tool (when tools are known).
    fn calls_in(
        &self,
        v: &Value,
        before: &str,
        offered_only: bool,
    ) -> Vec<(String, Map<String, Value>)> {
        let calls: Vec<_> = match v {
            Value::Array(items) => items
                .iter()
                .filter_map(|item| self.call_in(item, ""))
                .collect(),
            Value::Object(obj) => match self.call_in(v, before) {
                Some(call) => vec![call],
                None => obj
                    .values()
                    .filter(|v| v.is_array() || v.is_object())
                    .flat_map(|v| self.calls_in(v, "", false))
                    .collect(),
            },
            _ => Vec::new(),
        };
        let offered = |c: &(String, Map<String, Value>)| {
            self.tool_names.is_empty() || self.tool_names.contains(&c.0)
        };
        if offered_only && !calls.iter().all(offered) {
            return Vec::new();
        }
        calls
    }

    fn call_in(&self, v: &Value, before: &str) -> Option<(String, Map<String, Value>)> {
        let obj = v.as_object()?;
        if let Some(f) = obj.get("function").filter(|f| f.is_object()) {
            if let Some(call) = self.call_in(f, "") {
                return Some(call);
            }
        }
        let name = obj
            .get("name")
            .or_else(|| obj.get("tool_name"))
            .and_then(Value::as_str);
        if let Some(name) = name {
            let args = match obj.get("arguments").or_else(|| obj.get("parameters")) {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(a)) => a.clone(),
                Some(Value::String(s)) => match serde_json::from_str(s).ok()? {
                    Value::Object(a) => a,
                    _ => return None,
                },
                Some(_) => return None,
            };
            return Some((name.to_string(), args));
        }
        // `{"get_weather": {...}}`
        if obj.len() == 1 {
            if let Some((k, Value::Object(args))) = obj.iter().next() {
                if self.tool_names.iter().any(|n| n == k) {
                    return Some((k.clone(), args.clone()));
                }
            }
        }
        // The name written before the JSON: the offered name that appears last.
        let named = self
            .tool_names
            .iter()
            .filter_map(|n| {
                before
                    .rfind(n.as_str())
                    .map(|at| (at + n.len(), n.len(), n))
            })
            .max();
        named.map(|(_, _, n)| (n.clone(), obj.clone()))
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| tag.is_char_boundary(n) && text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

/// The length of the JSON value at the start of `s` (which begins with `{` or `[`),
/// by bracket depth outside strings; `None` while incomplete.
fn json_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let (mut in_str, mut escaped) = (false, false);
    for (i, b) in s.bytes().enumerate() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The names of the offered tools (`function.name`), for [`ToolCallParser::new`].
pub fn tool_names(tools: &[crate::types::Tool]) -> Vec<String> {
    tools
        .iter()
        .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Whether every call name is one of `names` (for callers that want to reject
/// calls to tools that were not offered).
pub fn calls_use_offered_tools(calls: &[ToolCall], names: &[String]) -> bool {
    calls.iter().all(|c| names.contains(&c.function.name))
}

#[cfg(test)]
mod tests;
