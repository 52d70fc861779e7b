//! Golden tests: the real chat templates of SmolLM2-135M-Instruct and
//! Qwen2.5-Coder-0.5B-Instruct (from their GGUF files' `tokenizer.chat_template`,
//! `tests/templates/`) rendered over the conversations in `tests/conversations/` must
//! equal, byte for byte, what Python jinja2 renders with transformers' settings
//! (`tests/golden/<template>/<shape>.txt`, written by `tests/reference/render_golden.py`).

use std::path::PathBuf;

use serde::Deserialize;
use wick_templating::{render_generate, ChatContext, ChatTemplate, Message, Tool};

/// The real templates: file stem, bos_token, eos_token (as in render_golden.py).
const TEMPLATES: &[(&str, &str, &str)] = &[
    ("smollm2", "<|im_start|>", "<|im_end|>"),
    ("qwen2.5-coder", "<|endoftext|>", "<|im_end|>"),
];
/// Not a model's template: tojson's options and the Python methods templates use.
const PROBE: (&str, &str, &str) = ("probe", "<s>", "</s>");
const SHAPES: &[&str] = &[
    "single_user",
    "system_user",
    "multi_turn",
    "generate",
    "tools_offered",
    "tool_call_history",
];

#[derive(Deserialize)]
struct Conversation {
    add_generation_prompt: bool,
    messages: Vec<Message>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    generate: Option<Generate>,
}

#[derive(Deserialize)]
struct Generate {
    system: Option<String>,
    prompt: String,
}

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn template(name: &str) -> ChatTemplate {
    ChatTemplate::new(&read(tests_dir().join(format!("templates/{name}.jinja")))).unwrap()
}

fn conversation(shape: &str) -> Conversation {
    let text = read(tests_dir().join(format!("conversations/{shape}.json")));
    let conv: Conversation = serde_json::from_str(&text).unwrap();
    // Python renders the fixture's JSON; make sure our types carry exactly that data.
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::to_value(&conv.messages).unwrap(),
        raw["messages"],
        "{shape}: messages must round-trip through Message unchanged"
    );
    conv
}

fn render(template: &ChatTemplate, conv: &Conversation, bos: &str, eos: &str) -> String {
    match &conv.generate {
        Some(g) => render_generate(template, g.system.as_deref(), &g.prompt, bos, eos).unwrap(),
        None => template
            .render(&ChatContext {
                messages: &conv.messages,
                tools: conv.tools.as_deref(),
                add_generation_prompt: conv.add_generation_prompt,
                bos_token: bos.into(),
                eos_token: eos.into(),
                enable_thinking: None,
            })
            .unwrap(),
    }
}

#[test]
fn renders_match_python_reference() {
    let probe = [(PROBE, &["probe"][..])];
    let cases = TEMPLATES.iter().map(|&t| (t, SHAPES)).chain(probe);
    let mut failures = Vec::new();
    for ((name, bos, eos), shapes) in cases {
        let template = template(name);
        for &shape in shapes {
            let got = render(&template, &conversation(shape), bos, eos);
            let want = read(tests_dir().join(format!("golden/{name}/{shape}.txt")));
            if got != want {
                failures.push(format!(
                    "{name}/{shape}:\n--- want\n{want:?}\n--- got\n{got:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn generate_shape_equals_chat_rendering_of_its_messages() {
    let conv = conversation("generate");
    for &(name, bos, eos) in TEMPLATES {
        let template = template(name);
        let chat = template
            .render(&ChatContext {
                messages: &conv.messages,
                add_generation_prompt: true,
                bos_token: bos.into(),
                eos_token: eos.into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(render(&template, &conv, bos, eos), chat, "{name}");
    }
}

#[test]
fn capabilities_of_the_real_templates() {
    let smollm2 = template("smollm2");
    assert!(!smollm2.supports_tools());
    assert!(!smollm2.supports_insert());
    let qwen = template("qwen2.5-coder");
    assert!(qwen.supports_tools());
    assert!(!qwen.supports_insert());
}

#[test]
fn golden_files_cover_every_template_and_shape() {
    for &(name, _, _) in TEMPLATES {
        for &shape in SHAPES {
            assert!(tests_dir()
                .join(format!("golden/{name}/{shape}.txt"))
                .is_file());
        }
    }
}
