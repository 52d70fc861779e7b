//! Tool-call parsing of generated text: the Qwen/Hermes stream and every family's
//! parser, fed the same text whole and in arbitrary chunks. Where a call ends up
//! must not depend on how the text was split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wick_templating::{
    parse_tool_calls, StreamChunk, ToolCall, ToolCallFormat, ToolCallParser, ToolCallStream,
};

/// Tags the families use (as [`ToolCallFormat::new`] takes them).
const TAGS: &[&str] = &[
    "<tool_call>",
    "[TOOL_CALLS]",
    "<|tool_call|>",
    "{",
    "[",
    "<|python_tag|>",
    "<function_calls>",
    "<｜tool▁calls▁begin｜>",
    "functools[",
    "",
];

const TOOLS: &[&str] = &["get_weather", "search", "f"];

/// Cuts `text` into pieces of 1 to 16 chars, as a xorshift seeded by `seed` says.
fn chunks(text: &str, seed: u8) -> Vec<&str> {
    let mut state = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let take = 1 + (state % 16) as usize;
        let end = rest.char_indices().nth(take).map_or(rest.len(), |(i, _)| i);
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("call_{n}")
    }
}

fn collect(parts: impl IntoIterator<Item = StreamChunk>) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    for part in parts {
        content.push_str(&part.content);
        calls.extend(part.tool_calls);
    }
    (content, calls)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let tag = TAGS[usize::from(data[0]) % TAGS.len()];
    let text = String::from_utf8_lossy(&data[2..]);
    let pieces = chunks(&text, data[1]);

    // Qwen/Hermes `<tool_call>` blocks.
    let parsed = parse_tool_calls(&text, ids()).unwrap_or_default();
    let mut one = ToolCallStream::new(ids());
    let whole = collect([one.push(&text), one.finish()]);
    assert_eq!(parsed, whole.1);
    let mut stream = ToolCallStream::new(ids());
    let mut parts: Vec<StreamChunk> = pieces.iter().map(|p| stream.push(p)).collect();
    parts.push(stream.finish());
    let split = collect(parts);
    assert_eq!(whole, split, "stream split as {pieces:?}");

    // Every family's parser.
    let format = ToolCallFormat::new(tag);
    let names: Vec<String> = TOOLS.iter().map(|s| s.to_string()).collect();
    let mut one = ToolCallParser::new(format.clone(), names.clone(), ids());
    let whole = collect([one.push(&text), one.finish()]);
    let mut parser = ToolCallParser::new(format, names, ids());
    let mut parts: Vec<StreamChunk> = pieces.iter().map(|p| parser.push(p)).collect();
    parts.push(parser.finish());
    let split = collect(parts);
    assert_eq!(whole, split, "tag {tag:?}, split as {pieces:?}");
});
