//! Reading tool calls out of generated text, Qwen/Hermes style:
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! [`ToolCallStream`] does it on a stream of text deltas: text that might be the start
//! of `<tool_call>` is held back, a call is emitted once its closing tag arrives, and
//! everything else passes through as content. A block whose body is not a valid call
//! is passed through as content, tags included.

use rand::Rng;
use serde_json::{Map, Value};

use crate::types::{ToolCall, ToolCallFunction};

/// Opening tag of a tool call.
pub const TOOL_CALL_START: &str = "<tool_call>";
/// Closing tag of a tool call.
pub const TOOL_CALL_END: &str = "</tool_call>";

/// A tool-call id as Ollama makes them: `call_` and 8 lowercase alphanumerics.
pub fn random_call_id<R: Rng + ?Sized>(rng: &mut R) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("call_");
    for _ in 0..8 {
        id.push(CHARS[rng.random_range(0..CHARS.len())] as char);
    }
    id
}

/// The tool calls in a complete response, or `None` if it has none. `new_id` names
/// each call (e.g. `|| random_call_id(&mut rand::rng())`).
pub fn parse_tool_calls(text: &str, new_id: impl FnMut() -> String) -> Option<Vec<ToolCall>> {
    let mut stream = ToolCallStream::new(new_id);
    let mut calls = stream.push(text).tool_calls;
    calls.extend(stream.finish().tool_calls);
    (!calls.is_empty()).then_some(calls)
}

/// What one step of a [`ToolCallStream`] releases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamChunk {
    /// Text to show as message content.
    pub content: String,
    /// Tool calls completed in this step.
    pub tool_calls: Vec<ToolCall>,
}

/// Splits streamed text into content and tool calls.
#[derive(Debug)]
pub struct ToolCallStream<F> {
    new_id: F,
    /// Text not yet released: a possible tag prefix, or the body of an open call.
    pending: String,
    in_call: bool,
    /// Calls emitted so far (the next call's `index`).
    calls: usize,
    /// The last thing released was a call: drop whitespace that follows it.
    after_call: bool,
}

impl<F: FnMut() -> String> ToolCallStream<F> {
    pub fn new(new_id: F) -> Self {
        ToolCallStream {
            new_id,
            pending: String::new(),
            in_call: false,
            calls: 0,
            after_call: false,
        }
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, delta: &str) -> StreamChunk {
        self.pending.push_str(delta);
        let mut chunk = StreamChunk::default();
        loop {
            if self.in_call {
                let Some(end) = self.pending.find(TOOL_CALL_END) else {
                    break;
                };
                let body: String = self.pending.drain(..end + TOOL_CALL_END.len()).collect();
                self.in_call = false;
                self.close_call(&body[..end], true, &mut chunk);
            } else if let Some(start) = self.pending.find(TOOL_CALL_START) {
                let text: String = self
                    .pending
                    .drain(..start + TOOL_CALL_START.len())
                    .collect();
                self.emit_text(&text[..start], &mut chunk);
                self.in_call = true;
            } else {
                let keep = partial_tag_len(&self.pending, TOOL_CALL_START);
                let text: String = self.pending.drain(..self.pending.len() - keep).collect();
                self.emit_text(&text, &mut chunk);
                break;
            }
        }
        chunk
    }

    /// Ends the stream, releasing whatever was held back. An unclosed call whose body
    /// is already a complete call (generation stopped before `</tool_call>`) counts.
    pub fn finish(&mut self) -> StreamChunk {
        let mut chunk = StreamChunk::default();
        let rest = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.in_call) {
            self.close_call(&rest, false, &mut chunk);
        } else {
            self.emit_text(&rest, &mut chunk);
        }
        chunk
    }

    fn close_call(&mut self, body: &str, closed: bool, chunk: &mut StreamChunk) {
        match parse_call(body) {
            Some((name, arguments)) => {
                chunk.tool_calls.push(ToolCall {
                    id: Some((self.new_id)()),
                    function: ToolCallFunction {
                        index: Some(self.calls),
                        name,
                        arguments,
                    },
                });
                self.calls += 1;
                self.after_call = true;
            }
            None => {
                let end = if closed { TOOL_CALL_END } else { "" };
                self.emit_text(&format!("{TOOL_CALL_START}{body}{end}"), chunk);
            }
        }
    }

    fn emit_text(&mut self, text: &str, chunk: &mut StreamChunk) {
        let text = if self.after_call {
            text.trim_start()
        } else {
            text
        };
        if !text.is_empty() {
            self.after_call = false;
            chunk.content.push_str(text);
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

/// `{"name": ..., "arguments": {...}}`; arguments may also be a JSON-encoded string,
/// or be called `parameters`.
fn parse_call(body: &str) -> Option<(String, Map<String, Value>)> {
    let Value::Object(mut call) = serde_json::from_str(body.trim()).ok()? else {
        return None;
    };
    let Some(Value::String(name)) = call.remove("name") else {
        return None;
    };
    let arguments = match call
        .remove("arguments")
        .or_else(|| call.remove("parameters"))
    {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args,
        Some(Value::String(s)) => match serde_json::from_str(&s).ok()? {
            Value::Object(args) => args,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some((name, arguments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("call_{n:08}")
        }
    }

    fn call(index: usize, id: &str, name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: Some(id.into()),
            function: ToolCallFunction {
                index: Some(index),
                name: name.into(),
                arguments: serde_json::from_str(args).unwrap(),
            },
        }
    }

    #[test]
    fn call_ids_look_like_ollamas_and_are_deterministic() {
        let id = random_call_id(&mut StdRng::seed_from_u64(7));
        assert_eq!(id.len(), 13);
        assert!(id.starts_with("call_"));
        assert!(
            id[5..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{id}"
        );
        assert_eq!(id, random_call_id(&mut StdRng::seed_from_u64(7)));
    }

    #[test]
    fn parses_one_call() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>";
        let mut rng = StdRng::seed_from_u64(1);
        let calls = parse_tool_calls(text, || random_call_id(&mut rng)).unwrap();
        let id = random_call_id(&mut StdRng::seed_from_u64(1));
        assert_eq!(
            calls,
            vec![call(
                0,
                &id,
                "get_weather",
                r#"{"city": "Paris", "unit": "c"}"#
            )]
        );
        // Key order of the arguments is the model's.
        assert_eq!(
            serde_json::to_string(&calls[0].function.arguments).unwrap(),
            r#"{"city":"Paris","unit":"c"}"#
        );
    }

    #[test]
    fn parses_several_calls_and_argument_variants() {
        let text = "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"y\\\": [2]}\"}\n</tool_call>\n<tool_call>{\"name\": \"c\"}</tool_call>";
        let calls = parse_tool_calls(text, counter()).unwrap();
        assert_eq!(
            calls,
            vec![
                call(0, "call_00000001", "a", r#"{"x": 1}"#),
                call(1, "call_00000002", "b", r#"{"y": [2]}"#),
                call(2, "call_00000003", "c", "{}"),
            ]
        );
    }

    #[test]
    fn no_calls_is_none() {
        assert_eq!(
            parse_tool_calls("just text, <tool_ mentioned", counter()),
            None
        );
        assert_eq!(
            parse_tool_calls("<tool_call>not json</tool_call>", counter()),
            None
        );
        assert_eq!(
            parse_tool_calls("<tool_call>{\"arguments\": {}}</tool_call>", counter()),
            None
        );
    }

    #[test]
    fn stream_holds_back_partial_tags() {
        let mut s = ToolCallStream::new(counter());
        assert_eq!(s.push("Let me check.<to").content, "Let me check.");
        assert_eq!(s.push("ol_c").content, "");
        let chunk = s.push("all>\n{\"name\": \"f\", ");
        assert_eq!(chunk, StreamChunk::default());
        assert_eq!(s.push("\"arguments\": {}}\n</tool").tool_calls, vec![]);
        let chunk = s.push("_call>\n");
        assert_eq!(chunk.tool_calls, vec![call(0, "call_00000001", "f", "{}")]);
        assert_eq!(chunk.content, "");
        assert_eq!(s.finish(), StreamChunk::default());
    }

    #[test]
    fn stream_releases_false_starts_and_trailing_text() {
        let mut s = ToolCallStream::new(counter());
        assert_eq!(s.push("a <tool").content, "a ");
        assert_eq!(s.push("box> b <").content, "<toolbox> b ");
        assert_eq!(s.finish().content, "<");
    }

    #[test]
    fn stream_passes_invalid_calls_through_as_content() {
        let mut s = ToolCallStream::new(counter());
        let chunk = s.push("x<tool_call>{oops}</tool_call>y");
        assert_eq!(chunk.content, "x<tool_call>{oops}</tool_call>y");
        assert!(chunk.tool_calls.is_empty());
        let chunk = s.push("<tool_call>{\"name\": \"unterminated\"");
        assert_eq!(chunk, StreamChunk::default());
        assert_eq!(s.finish().content, "<tool_call>{\"name\": \"unterminated\"");
    }

    #[test]
    fn stream_accepts_an_unclosed_complete_call_at_the_end() {
        let mut s = ToolCallStream::new(counter());
        assert!(s
            .push("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": true}}\n")
            .tool_calls
            .is_empty());
        assert_eq!(
            s.finish().tool_calls,
            vec![call(0, "call_00000001", "f", r#"{"a": true}"#)]
        );
    }

    #[test]
    fn streaming_char_by_char_equals_whole_text() {
        let text = "Sure.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": \"é <tool_call>\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\n";
        let mut whole = ToolCallStream::new(counter());
        let mut expected = whole.push(text);
        let end = whole.finish();
        expected.content.push_str(&end.content);
        expected.tool_calls.extend(end.tool_calls);
        assert_eq!(expected.content, "Sure.\n");
        assert_eq!(expected.tool_calls.len(), 2);

        let mut s = ToolCallStream::new(counter());
        let mut got = StreamChunk::default();
        for c in text.chars() {
            let chunk = s.push(&c.to_string());
            got.content.push_str(&chunk.content);
            got.tool_calls.extend(chunk.tool_calls);
        }
        let end = s.finish();
        got.content.push_str(&end.content);
        got.tool_calls.extend(end.tool_calls);
        assert_eq!(got, expected);
    }
}
