//! Renders Ollama's own template folder and compares with its recorded outputs.
//!
//! Ollama's templates are not part of this repository. Point
//! `WICK_OLLAMA_TEMPLATES` at a checkout's `template/` directory (the one holding
//! `*.gotmpl` and `testdata/`) to run this; it is skipped when unset:
//!
//! ```text
//! mkdir -p /tmp/ollama-tmpl
//! git -C <ollama repo> archive HEAD template | tar -x -C /tmp/ollama-tmpl
//! WICK_OLLAMA_TEMPLATES=/tmp/ollama-tmpl/template cargo test --release -p wick-templating --test ollama_templates -- --nocapture
//! ```

use std::path::Path;

use wick_templating::{GoChat, GoTemplate, Message};

/// The conversations Ollama's template tests record, by file name.
fn cases() -> Vec<(&'static str, Vec<Message>)> {
    let user = Message::new("user", "Hello, how are you?");
    let assistant = Message::new("assistant", "I'm doing great. How can I help you today?");
    let user2 = Message::new("user", "I'd like to show off how chat templating works!");
    let system = Message::new("system", "You are a helpful assistant.");
    vec![
        ("user", vec![user.clone()]),
        (
            "user-assistant-user",
            vec![user.clone(), assistant.clone(), user2.clone()],
        ),
        (
            "system-user-assistant-user",
            vec![system, user, assistant, user2],
        ),
    ]
}

/// Templates whose recorded outputs lack the trailing space the template writes
/// (Ollama's own test strips it for these).
const TRAILING_SPACE_STRIPPED: &[&str] = &[
    "chatqa.gotmpl",
    "llama2-chat.gotmpl",
    "mistral-instruct.gotmpl",
    "openchat.gotmpl",
    "vicuna.gotmpl",
];

#[test]
fn ollama_templates_match_their_recorded_renders() {
    let Ok(dir) = std::env::var("WICK_OLLAMA_TEMPLATES") else {
        eprintln!("WICK_OLLAMA_TEMPLATES not set: skipping");
        return;
    };
    let dir = Path::new(&dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read template dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gotmpl"))
        .collect();
    names.sort();
    let (mut templates_ok, mut cases_ok, mut cases_total) = (0, 0, 0);
    let mut failures = Vec::new();
    for name in &names {
        let src = std::fs::read_to_string(dir.join(name)).expect("read template");
        let tmpl = match GoTemplate::parse(&src) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: parse: {e}"));
                continue;
            }
        };
        eprintln!(
            "{name}: tools={} insert={} thinking={:?} tool tag={:?}",
            tmpl.supports_tools(),
            tmpl.supports_insert(),
            tmpl.thinking_tags(),
            tmpl.tool_call_format().tag()
        );
        let mut all = true;
        for (case, messages) in cases() {
            let Ok(expect) = std::fs::read(dir.join("testdata").join(name).join(case)) else {
                continue;
            };
            cases_total += 1;
            let got = tmpl.render_chat(&GoChat {
                messages: &messages,
                ..GoChat::default()
            });
            let mut got = match got {
                Ok(g) => g.into_bytes(),
                Err(e) => {
                    all = false;
                    failures.push(format!("{name}/{case}: {e}"));
                    continue;
                }
            };
            if TRAILING_SPACE_STRIPPED.contains(&name.as_str()) && got.last() == Some(&b' ') {
                got.pop();
            }
            if got == expect {
                cases_ok += 1;
            } else {
                all = false;
                failures.push(format!(
                    "{name}/{case}:\n--- got\n{}\n--- want\n{}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&expect)
                ));
            }
        }
        if all {
            templates_ok += 1;
        }
    }
    eprintln!(
        "Ollama templates: {templates_ok}/{} templates, {cases_ok}/{cases_total} cases byte-identical",
        names.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
