//! Our Go template engine against Go's own `text/template`: every template under
//! `tests/golden/go/<template>/template.gotmpl` rendered with every conversation in
//! `tests/golden/go/conversations/*.json` must equal the recorded
//! `<template>/<conversation>.txt` byte for byte, and fail where Go failed
//! (`<conversation>.err`). The recordings come from `scripts/render-go-goldens.sh`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use wick_templating::{GoChat, GoGenerate, GoTemplate, Message, Think, Tool};

#[derive(Deserialize)]
struct Generate {
    #[serde(default)]
    system: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    suffix: String,
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    messages: Vec<Message>,
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    think: Option<serde_json::Value>,
    generate: Option<Generate>,
}

fn render(tmpl: &GoTemplate, input: &Input) -> Result<String, wick_templating::TemplateError> {
    let think = match &input.think {
        Some(serde_json::Value::Bool(b)) => Some(Think::Bool(*b)),
        Some(serde_json::Value::String(s)) => Some(Think::Level(s.clone())),
        _ => None,
    };
    match &input.generate {
        Some(g) => tmpl.render_generate(&GoGenerate {
            system: &g.system,
            prompt: &g.prompt,
            suffix: &g.suffix,
            think: think.as_ref(),
        }),
        None => tmpl.render_chat(&GoChat {
            messages: &input.messages,
            tools: input.tools.as_deref(),
            think: think.as_ref(),
        }),
    }
}

/// The golden directory; `WICK_GO_GOLDEN_DIR` points the test at another one laid
/// out the same way (e.g. Ollama's templates rendered by the oracle, kept out of
/// the repository).
fn dir() -> PathBuf {
    match std::env::var_os("WICK_GO_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/go"),
    }
}

fn sorted_entries(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn renders_match_go() {
    let conversations: Vec<(String, Input)> = sorted_entries(&dir().join("conversations"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).expect("read conversation");
            (
                name,
                serde_json::from_str(&text).expect("parse conversation"),
            )
        })
        .collect();
    let (mut passed, mut total, mut templates) = (0, 0, 0);
    let mut failures = Vec::new();
    for tdir in sorted_entries(&dir()) {
        let src_path = tdir.join("template.gotmpl");
        if !src_path.exists() {
            continue;
        }
        templates += 1;
        let name = tdir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let src = std::fs::read_to_string(&src_path).expect("read template");
        let tmpl = GoTemplate::parse(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (case, input) in &conversations {
            total += 1;
            let got = render(&tmpl, input);
            let want = std::fs::read(tdir.join(format!("{case}.txt")));
            match (got, want) {
                (Ok(got), Ok(want)) if got.as_bytes() == want.as_slice() => passed += 1,
                (Ok(got), Ok(want)) => failures.push(format!(
                    "{name}/{case}:\n--- ours\n{got}\n--- go\n{}",
                    String::from_utf8_lossy(&want)
                )),
                (Err(_), Err(_)) => passed += 1,
                (Ok(got), Err(_)) => {
                    failures.push(format!("{name}/{case}: Go failed, we rendered:\n{got}"))
                }
                (Err(e), Ok(_)) => failures.push(format!("{name}/{case}: we failed: {e}")),
            }
        }
    }
    eprintln!("Go goldens: {passed}/{total} renders of {templates} templates match Go");
    assert!(templates >= 12, "only {templates} golden templates");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
