//! Unit tests of the Ollama rendering rules: capabilities, think values, generate,
//! errors, and limits that stop hostile templates.

use super::*;
use crate::ThinkingParser;

const QWEN3: &str = include_str!("../../tests/golden/go/qwen3-think/template.gotmpl");

#[test]
fn templates_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<GoTemplate>();
}

#[test]
fn capabilities_come_from_the_template() {
    let t = GoTemplate::parse(QWEN3).unwrap();
    assert!(t.supports_tools() && !t.supports_insert());
    assert_eq!(t.thinking_tags(), Some(("<think>", "</think>")));
    for v in [
        "messages",
        "tools",
        "thinking",
        "think",
        "isthinkset",
        "$lastuser",
    ] {
        assert!(t.vars().iter().any(|x| x == v), "{v} in {:?}", t.vars());
    }
    let plain = GoTemplate::parse("{{ .System }} {{ .Prompt }}").unwrap();
    assert!(!plain.supports_tools() && plain.thinking_tags().is_none());
    // Like Ollama, the appended `{{ .Response }}` counts.
    assert_eq!(plain.vars(), ["prompt", "response", "system"]);
    assert_eq!(plain.tool_call_format().tag(), "{");
}

#[test]
fn think_values() {
    assert!(Think::Bool(true).enabled() && !Think::Bool(false).enabled());
    assert!(Think::Level("high".into()).enabled() && !Think::Level("huge".into()).enabled());
    assert_eq!(Think::Bool(true).level(), "medium");
    assert_eq!(Think::Bool(false).level(), "");
    let t = GoTemplate::parse("{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }} {{ .Prompt }}")
        .unwrap();
    let render = |think: Option<&Think>| {
        t.render_generate(&GoGenerate {
            prompt: "p",
            think,
            ..GoGenerate::default()
        })
        .unwrap()
    };
    assert_eq!(render(None), "false  false p");
    assert_eq!(render(Some(&Think::Bool(true))), "true medium true p");
    assert_eq!(render(Some(&Think::Level("low".into()))), "true low true p");
}

#[test]
fn generate_with_a_suffix_fills_in_the_middle() {
    let t = GoTemplate::parse("{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}{{ .System }}|{{ .Prompt }}{{ end }}").unwrap();
    assert!(t.supports_insert());
    let fim = GoGenerate {
        prompt: "def f():",
        suffix: "return 1",
        system: "ignored",
        ..GoGenerate::default()
    };
    assert_eq!(
        t.render_generate(&fim).unwrap(),
        "<PRE> def f(): <SUF>return 1 <MID>"
    );
    let plain = GoGenerate {
        prompt: "hi",
        system: "sys",
        ..GoGenerate::default()
    };
    assert_eq!(t.render_generate(&plain).unwrap(), "sys|hi");
}

#[test]
fn errors_are_typed() {
    assert!(matches!(
        GoTemplate::parse("{{ if .A }}"),
        Err(TemplateError::Syntax(_))
    ));
    let t = GoTemplate::parse("{{ range .Messages }}{{ .Nope }}{{ end }}").unwrap();
    let err = t
        .render_chat(&GoChat {
            messages: &[Message::new("user", "x")],
            ..GoChat::default()
        })
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::Render(m) if m.contains("can't evaluate field Nope")),
        "{err}"
    );
}

#[test]
fn hostile_templates_end_with_an_error() {
    let hostile = [
        "{{ define \"a\" }}{{ template \"a\" . }}{{ end }}{{ template \"a\" . }}",
        "{{ range 1000000000000 }}x{{ end }}{{ .Messages }}",
        "{{ range 100000 }}{{ range 100000 }}xxxxxxxxxxxxxxxx{{ end }}{{ end }}{{ .Messages }}",
        "{{ range 10000 }}{{ printf \"%*d\" 100000 1 }}{{ end }}{{ .Messages }}",
    ];
    // A small stack: the limits must hold long before it runs out.
    let handle = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            hostile.map(|src| {
                GoTemplate::parse(src)
                    .and_then(|t| t.render_chat(&GoChat::default()))
                    .is_err()
            })
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), [true; 4]);
}

#[test]
fn a_prompt_that_opens_thinking_starts_the_parser_inside() {
    // A template that opens `<think>` for the model when thinking is on.
    let t = GoTemplate::parse("{{ range .Messages }}{{ .Content }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}\nassistant: {{ if .Think }}<think>\n{{ end }}").unwrap();
    let (open, close) = t.thinking_tags().unwrap();
    let think = Think::Bool(true);
    let prompt = t
        .render_chat(&GoChat {
            messages: &[Message::new("user", "2+2?")],
            think: Some(&think),
            ..GoChat::default()
        })
        .unwrap();
    let mut p = ThinkingParser::for_prompt(open, close, &prompt);
    assert_eq!(p.push("Easy.</think>4"), ("Easy.".into(), "4".into()));
}

#[test]
fn legacy_templates_render_each_turn_and_cut_the_last() {
    let t = GoTemplate::parse(
        "{{ if .System }}S:{{ .System }}\n{{ end }}U:{{ .Prompt }}\nA:{{ .Response }}\n",
    )
    .unwrap();
    let messages = [
        Message::new("system", "sys"),
        Message::new("user", "one"),
        Message::new("assistant", "1"),
        Message::new("user", "two"),
    ];
    let out = t
        .render_chat(&GoChat {
            messages: &messages,
            ..GoChat::default()
        })
        .unwrap();
    assert_eq!(out, "S:sys\nU:one\nA:1\nU:two\nA:");
}

#[test]
fn random_templates_never_panic() {
    const PIECES: &[&str] = &[
        "{{",
        "}}",
        "{{- ",
        " -}}",
        "{{/*",
        "*/}}",
        " ",
        "\n",
        ".",
        ".Messages",
        ".Role",
        ".Content",
        ".Tools",
        ".Function",
        ".Arguments",
        "$",
        "$i",
        "$m",
        ":=",
        "=",
        ",",
        "|",
        "(",
        ")",
        "if",
        "else",
        "end",
        "range",
        "with",
        "break",
        "continue",
        "define",
        "template",
        "block",
        "\"a\"",
        "`r`",
        "'c'",
        "1",
        "-2",
        "0x1f",
        "1.5e3",
        "nil",
        "true",
        "len",
        "index",
        "slice",
        "printf",
        "\"%v %d %q %*d\"",
        "eq",
        "and",
        "or",
        "not",
        "json",
        "print",
        "html",
        "js",
        "urlquery",
        "toTypeScriptType",
        "call",
        "é",
        "-",
        "\\",
    ];
    let tools: Vec<Tool> = vec![
        serde_json::json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}),
    ];
    let messages = [Message::new("user", "hi"), Message::new("assistant", "yo")];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let n = 1 + next() % 24;
        let src: String = (0..n)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        if let Ok(t) = GoTemplate::parse(&src) {
            let _ = t.render_chat(&GoChat {
                messages: &messages,
                tools: Some(&tools),
                think: None,
            });
            let _ = t.render_generate(&GoGenerate {
                prompt: "p",
                suffix: "s",
                ..GoGenerate::default()
            });
        }
    }
}
