//! Unit tests of the tool-call formats and parser: each family's output, streamed
//! split at every boundary, gives the same calls and content.

use super::*;
use crate::GoTemplate;

fn counter() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("call_{n}")
    }
}

fn names() -> Vec<String> {
    vec!["get_weather".into(), "search".into()]
}

/// (name, arguments JSON) of each call, and the content.
type Outcome = (Vec<(String, String)>, String);

fn collect(parser: &mut ToolCallParser<impl FnMut() -> String>, chunks: &[&str]) -> Outcome {
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut take = |c: StreamChunk, calls: &mut Vec<ToolCall>| {
        content.push_str(&c.content);
        calls.extend(c.tool_calls);
    };
    let mut all = Vec::new();
    for chunk in chunks {
        let c = parser.push(chunk);
        take(c, &mut all);
    }
    let c = parser.finish();
    take(c, &mut all);
    for (i, call) in all.iter().enumerate() {
        assert_eq!(call.function.index, Some(i));
        assert_eq!(call.id.as_deref(), Some(format!("call_{}", i + 1).as_str()));
        calls.push((
            call.function.name.clone(),
            serde_json::to_string(&call.function.arguments).unwrap_or_default(),
        ));
    }
    (calls, content)
}

/// The outcome for `text` whole, split in two at every boundary, and char by char
/// must all be `expect`.
fn check(format: &ToolCallFormat, text: &str, expect: (&[(&str, &str)], &str)) {
    let expect: Outcome = (
        expect
            .0
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
        expect.1.to_string(),
    );
    let new = || ToolCallParser::new(format.clone(), names(), counter());
    assert_eq!(collect(&mut new(), &[text]), expect, "whole");
    for at in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        let got = collect(&mut new(), &[&text[..at], &text[at..]]);
        assert_eq!(got, expect, "split at byte {at}");
    }
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(collect(&mut new(), &chars), expect, "char by char");
}

fn go_format(src: &str) -> ToolCallFormat {
    GoTemplate::parse(src)
        .map(|t| t.tool_call_format())
        .unwrap_or_else(|e| panic!("{e}"))
}

const WEATHER: (&str, &str) = ("get_weather", r#"{"city":"Paris"}"#);
const SEARCH: (&str, &str) = ("search", r#"{"query":"a } { \" b"}"#);

#[test]
fn qwen_tool_call_blocks() {
    let f = go_format(include_str!(
        "../../tests/golden/go/qwen25-tools/template.gotmpl"
    ));
    assert_eq!(f.tag(), "<tool_call>");
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"a } { \\\" b\"}}\n</tool_call>";
    check(&f, text, (&[WEATHER, SEARCH], "Let me check.\n"));
    let f3 = go_format(include_str!(
        "../../tests/golden/go/qwen3-think/template.gotmpl"
    ));
    assert_eq!(f3, f);
}

#[test]
fn mistral_tool_call_list() {
    let f = go_format(include_str!(
        "../../tests/golden/go/mistral-tools/template.gotmpl"
    ));
    assert_eq!(f.tag(), "[TOOL_CALLS]");
    let text = "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"search\", \"arguments\": {\"query\": \"a } { \\\" b\"}}]";
    check(&f, text, (&[WEATHER, SEARCH], ""));
    // The tag a Jinja template gives (without the list's bracket) reads the same.
    check(
        &ToolCallFormat::new("[TOOL_CALLS]"),
        text,
        (&[WEATHER, SEARCH], ""),
    );
}

#[test]
fn llama3_bare_json() {
    let f = go_format(include_str!(
        "../../tests/golden/go/llama3-tools/template.gotmpl"
    ));
    assert_eq!(f.tag(), "{");
    assert!(f.is_bare_json());
    check(
        &f,
        " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        (&[WEATHER], ""),
    );
    check(
        &f,
        "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}, {\"name\": \"search\", \"parameters\": {\"query\": \"a } { \\\" b\"}}]",
        (&[WEATHER, SEARCH], ""),
    );
    // Text first: no calls, nothing held back or lost.
    let prose = "The answer is {\"name\": \"get_weather\"} maybe.";
    check(&f, prose, (&[], prose));
    // JSON that is not a call is content.
    check(
        &f,
        "{\"answer\": 4}\nDone.",
        (&[], "{\"answer\": 4}\nDone."),
    );
    // Text after a call is content again.
    check(
        &f,
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}} ok",
        (&[WEATHER], " ok"),
    );
}

#[test]
fn command_r_action_block() {
    let f = go_format(include_str!(
        "../../tests/golden/go/command-r-tools/template.gotmpl"
    ));
    assert_eq!(f.tag(), "Action: ```json");
    let text = "Action: ```json\n[\n    {\n        \"tool_name\": \"get_weather\",\n        \"parameters\": {\"city\": \"Paris\"}\n    }\n]```";
    check(&f, text, (&[WEATHER], ""));
}

#[test]
fn granite_tool_call_token() {
    let f = go_format(include_str!(
        "../../tests/golden/go/granite-tools/template.gotmpl"
    ));
    assert_eq!(f.tag(), "<|tool_call|>");
    let text = "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]";
    check(&f, text, (&[WEATHER], ""));
}

#[test]
fn deepseek_names_outside_the_json() {
    let f = go_format(include_str!(
        "../../tests/golden/go/deepseek-r1/template.gotmpl"
    ));
    // Ollama's rule takes the first text in the `.ToolCalls` branch.
    assert_eq!(f.tag(), "<｜tool▁calls▁begin｜>");
    let text = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>search\n```json\n{\"query\": \"a } { \\\" b\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    check(&f, text, (&[WEATHER, SEARCH], ""));
}

#[test]
fn argument_variants() {
    let f = ToolCallFormat::new("<tool_call>");
    check(
        &f,
        "<tool_call>{\"name\": \"search\", \"arguments\": \"{\\\"query\\\": \\\"a } { \\\\\\\" b\\\"}\"}</tool_call>",
        (&[SEARCH], ""),
    );
    check(
        &f,
        "<tool_call>{\"name\": \"f\"}</tool_call>",
        (&[("f", "{}")], ""),
    );
    check(
        &f,
        "<tool_call>{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}</tool_call>",
        (&[WEATHER], ""),
    );
    check(
        &f,
        "<tool_call>{\"get_weather\": {\"city\": \"Paris\"}}",
        (&[WEATHER], ""),
    );
}

#[test]
fn a_tag_without_a_call_is_given_back() {
    let f = ToolCallFormat::new("<tool_call>");
    let text = "Hi <tool_call>oops, {not json}</tool_call> bye";
    check(&f, text, (&[], text));
    check(
        &f,
        "a <tool_call>{\"name\": \"unterminated\"",
        (&[], "a <tool_call>{\"name\": \"unterminated\""),
    );
    check(&f, "no tag here <tool_", (&[], "no tag here <tool_"));
}

#[test]
fn jinja_templates_give_their_family_tag() {
    let qwen = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}{%- if m.tool_calls %}{%- for tc in m.tool_calls %}\n<tool_call>\n{\"name\": \"{{ tc.function.name }}\", \"arguments\": {{ tc.function.arguments | tojson }}}\n</tool_call>{%- endfor %}{%- endif %}<|im_end|>\n{%- endfor %}";
    let llama = "{%- for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{%- if m.tool_calls %}{%- for tc in m.tool_calls %}{\"name\": \"{{ tc.function.name }}\", \"parameters\": {{ tc.function.arguments | tojson }}}{%- endfor %}{%- else %}{{ m.content }}{%- endif %}<|eot_id|>{%- endfor %}";
    let mistral = "{%- for m in messages %}{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]{%- elif m.tool_calls %}[TOOL_CALLS][{%- for tc in m.tool_calls %}{\"name\": \"{{ tc.function.name }}\", \"arguments\": {{ tc.function.arguments | tojson }}}{%- endfor %}]</s>{%- else %}{{ m.content }}</s>{%- endif %}{%- endfor %}";
    let deepseek = "{%- for m in messages %}{%- if m.role == 'user' %}<｜User｜>{{ m.content }}{%- elif m.tool_calls %}<｜Assistant｜><｜tool▁calls▁begin｜>{%- for tc in m.tool_calls %}<｜tool▁call▁begin｜>function<｜tool▁sep｜>{{ tc.function.name }}\n```json\n{{ tc.function.arguments | tojson }}\n```<｜tool▁call▁end｜>{%- endfor %}<｜tool▁calls▁end｜>{%- else %}<｜Assistant｜>{{ m.content }}{%- endif %}{%- endfor %}";
    let plain = "{%- for m in messages %}{{ m.role }}: {{ m.content }}\n{%- endfor %}";
    let tag = |src: &str| {
        ChatTemplate::new(src)
            .ok()
            .and_then(|t| ToolCallFormat::from_jinja(&t))
            .map(|f| f.tag().to_string())
    };
    assert_eq!(tag(qwen).as_deref(), Some("<tool_call>"));
    assert_eq!(tag(llama).as_deref(), Some("{"));
    assert_eq!(tag(mistral).as_deref(), Some("[TOOL_CALLS]"));
    assert_eq!(
        tag(deepseek).as_deref(),
        Some("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>")
    );
    assert_eq!(tag(plain), None);
}

#[test]
fn untagged_calls_at_the_start_count_when_they_name_offered_tools() {
    let f = ToolCallFormat::new("<tool_call>");
    check(
        &f,
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n<tool_call>{\"name\": \"search\", \"arguments\": {\"query\": \"a } { \\\" b\"}}</tool_call>",
        (&[WEATHER, SEARCH], ""),
    );
    // JSON that is not a call to an offered tool stays content.
    let answer = "{\"name\": \"Ada\", \"age\": 36}";
    check(&f, answer, (&[], answer));
    let later = "Sure: {\"name\": \"get_weather\", \"arguments\": {}}";
    check(&f, later, (&[], later));
    // Text before a tag is content; the calls after it are read.
    check(
        &f,
        "First, <tool_call> [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}] </tool_call>",
        (&[WEATHER], "First, "),
    );
}

#[test]
fn wrapped_call_lists_are_read() {
    let f = ToolCallFormat::new("{");
    check(
        &f,
        "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"search\", \"arguments\": {\"query\": \"a } { \\\" b\"}}]}",
        (&[WEATHER, SEARCH], ""),
    );
}

#[test]
fn multi_line_tags_of_real_templates() {
    let f = ToolCallFormat::new("functools[");
    assert_eq!(f.tag(), "functools");
    check(
        &f,
        " functools[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
        (&[WEATHER], " "),
    );
}
