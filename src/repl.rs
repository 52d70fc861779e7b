//! `wick run <model> [prompt]`: answer one prompt (from the arguments or piped stdin),
//! or chat interactively.

use std::io::{IsTerminal, Read};

use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{chat_turn, show, Client, ShowWhat};
use crate::CliError;

pub struct RunOptions {
    pub model: String,
    pub prompt: Vec<String>,
    pub verbose: bool,
    pub keep_alive: Option<String>,
    /// Pull a missing model over plain http.
    pub insecure: bool,
    /// `--format`: `json` or a JSON schema.
    pub format: Option<String>,
    /// `--think`: `true`, `false`, or a level (`high`, `medium`, `low`).
    pub think: Option<String>,
    /// Wrap answers at the terminal's width (`--nowordwrap` turns it off).
    pub word_wrap: bool,
}

/// What one conversation carries between turns: the model, the settings `/set` changed
/// and the messages so far.
struct Session {
    model: String,
    keep_alive: Option<String>,
    options: Map<String, Value>,
    system: Option<String>,
    format: Option<Value>,
    think: Option<Value>,
    verbose: bool,
    word_wrap: bool,
    history: Vec<Value>,
}

impl Session {
    fn new(opts: &RunOptions) -> Result<Session, CliError> {
        Ok(Session {
            model: opts.model.clone(),
            keep_alive: opts.keep_alive.clone(),
            options: Map::new(),
            system: None,
            format: opts.format.as_deref().map(format_value).transpose()?,
            think: opts.think.as_deref().map(think_value).transpose()?,
            verbose: opts.verbose,
            word_wrap: opts.word_wrap,
            history: Vec::new(),
        })
    }

    /// The chat request for the conversation so far.
    fn request(&self) -> Value {
        let mut messages = Vec::with_capacity(self.history.len() + 1);
        if let Some(system) = &self.system {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.extend(self.history.iter().cloned());
        let mut body = json!({ "model": self.model, "messages": messages, "stream": true });
        if let Some(ka) = &self.keep_alive {
            body["keep_alive"] = json!(ka);
        }
        if !self.options.is_empty() {
            body["options"] = Value::Object(self.options.clone());
        }
        if let Some(f) = &self.format {
            body["format"] = f.clone();
        }
        if let Some(t) = &self.think {
            body["think"] = t.clone();
        }
        body
    }
}

/// `--format json` or a JSON schema given inline.
fn format_value(s: &str) -> Result<Value, CliError> {
    match s.trim() {
        "json" => Ok(json!("json")),
        other => serde_json::from_str::<Value>(other)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                CliError::Other(format!(
                    "invalid format '{other}': use 'json' or a JSON schema"
                ))
            }),
    }
}

/// `--think true|false|high|medium|low`.
fn think_value(s: &str) -> Result<Value, CliError> {
    match s.trim() {
        "" | "true" => Ok(json!(true)),
        "false" => Ok(json!(false)),
        level @ ("high" | "medium" | "low") => Ok(json!(level)),
        other => Err(CliError::Other(format!(
            "invalid think value '{other}': use true, false, high, medium or low"
        ))),
    }
}

/// A `/set parameter` value as the JSON the server expects: a number or a boolean when
/// it reads as one, else the text.
fn parameter_value(raw: &str) -> Value {
    if let Ok(i) = raw.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        return json!(f);
    }
    match raw {
        "true" => json!(true),
        "false" => json!(false),
        _ => json!(raw),
    }
}

pub async fn run(c: &Client, opts: RunOptions) -> Result<(), CliError> {
    let mut prompt = opts.prompt.join(" ");
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut piped = String::new();
        stdin
            .lock()
            .read_to_string(&mut piped)
            .map_err(|e| CliError::Other(format!("reading stdin: {e}")))?;
        if !piped.trim().is_empty() {
            prompt = if prompt.is_empty() {
                piped
            } else {
                format!("{prompt}\n\n{piped}")
            };
        }
    }

    // A model the server does not have is pulled first, as Ollama's `run` does.
    let show = c
        .json(
            Method::POST,
            "/api/show",
            Some(json!({ "model": opts.model })),
        )
        .await;
    if let Err(CliError::Server { message }) = &show {
        if message.contains("not found") {
            crate::pull::pull(c, &opts.model, opts.insecure).await?;
        }
    }

    // Load the model first: a missing model fails here, before any prompt.
    let mut load = json!({ "model": opts.model, "messages": [] });
    if let Some(ka) = &opts.keep_alive {
        load["keep_alive"] = json!(ka);
    }
    c.json(Method::POST, "/api/chat", Some(load)).await?;

    let mut session = Session::new(&opts)?;
    if !prompt.trim().is_empty() {
        session
            .history
            .push(json!({ "role": "user", "content": prompt }));
        chat_turn(c, session.request(), session.verbose, session.word_wrap).await?;
        return Ok(());
    }
    if !stdin.is_terminal() && std::env::var_os("WICK_REPL_FORCE").is_none() {
        return Ok(());
    }
    interactive(c, &mut session).await
}

const HELP: &str = "Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.";

const SET_HELP: &str = "Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set think             Enable thinking
  /set nothink           Disable thinking
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting";

const SHOW_HELP: &str = "Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template";

/// What a line typed at the prompt asks for.
enum Line {
    /// A message for the model.
    Message(String),
    /// Handled here (a `/set`, `/clear`, help...).
    Done,
    Show(String),
    Load(String),
    Save(String),
    Quit,
}

impl Session {
    /// Apply a command line that needs no server; anything else is returned.
    fn command(&mut self, line: &str) -> Line {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => Line::Done,
            ["/bye"] | ["/exit"] => Line::Quit,
            ["/clear"] => {
                self.history.clear();
                eprintln!("Cleared session context");
                Line::Done
            }
            ["/?"] | ["/help"] => {
                eprintln!("{HELP}");
                Line::Done
            }
            ["/?" | "/help", "set"] | ["/set"] => {
                eprintln!("{SET_HELP}");
                Line::Done
            }
            ["/?" | "/help", "show"] | ["/show"] => {
                eprintln!("{SHOW_HELP}");
                Line::Done
            }
            ["/set", "parameter", name, value @ ..] if !value.is_empty() => {
                let raw = value.join(" ");
                if *name == "stop" {
                    let list = self.options.entry("stop").or_insert_with(|| json!([]));
                    if let Some(a) = list.as_array_mut() {
                        a.extend(value.iter().map(|v| json!(v)));
                    }
                } else {
                    self.options.insert(name.to_string(), parameter_value(&raw));
                }
                eprintln!("Set parameter '{name}' to '{raw}'");
                Line::Done
            }
            ["/set", "parameter", ..] => {
                eprintln!("Usage: /set parameter <name> <value>");
                Line::Done
            }
            ["/set", "system", rest @ ..] if !rest.is_empty() => {
                let text = line.trim_start()["/set".len()..].trim_start()["system".len()..]
                    .trim()
                    .trim_matches('"')
                    .to_string();
                self.system = Some(text);
                eprintln!("Set system message.");
                Line::Done
            }
            ["/set", "think"] => {
                self.think = Some(json!(true));
                eprintln!("Set 'think' mode.");
                Line::Done
            }
            ["/set", "think", level] => match think_value(level) {
                Ok(v) => {
                    self.think = Some(v);
                    eprintln!("Set 'think' mode to '{level}'.");
                    Line::Done
                }
                Err(e) => {
                    eprintln!("{e}");
                    Line::Done
                }
            },
            ["/set", "nothink"] => {
                self.think = Some(json!(false));
                eprintln!("Set 'nothink' mode.");
                Line::Done
            }
            ["/set", "verbose"] => {
                self.verbose = true;
                eprintln!("Set 'verbose' mode.");
                Line::Done
            }
            ["/set", "quiet"] => {
                self.verbose = false;
                eprintln!("Set 'quiet' mode.");
                Line::Done
            }
            ["/set", "wordwrap"] => {
                self.word_wrap = true;
                eprintln!("Set 'wordwrap' mode.");
                Line::Done
            }
            ["/set", "nowordwrap"] => {
                self.word_wrap = false;
                eprintln!("Set 'nowordwrap' mode.");
                Line::Done
            }
            ["/set", "format", "json"] => {
                self.format = Some(json!("json"));
                eprintln!("Set format to 'json' mode.");
                Line::Done
            }
            ["/set", "noformat"] => {
                self.format = None;
                eprintln!("Disabled format.");
                Line::Done
            }
            ["/set", other, ..] => {
                eprintln!("Unknown command '/set {other}'. Type /? for help");
                Line::Done
            }
            ["/show", what] => Line::Show(what.to_string()),
            ["/load", model] => Line::Load(model.to_string()),
            ["/save", model] => Line::Save(model.to_string()),
            ["/load" | "/save"] => {
                eprintln!("Usage:\n  {} <modelname>", words[0]);
                Line::Done
            }
            [cmd, ..] if cmd.starts_with('/') => {
                eprintln!("Unknown command '{cmd}'. Type /? for help");
                Line::Done
            }
            _ => Line::Message(line.to_string()),
        }
    }

    /// `/show <what>`.
    async fn show(&self, c: &Client, what: &str) -> Result<(), CliError> {
        let mut w = ShowWhat::default();
        match what {
            "info" => {}
            "license" => w.license = true,
            "modelfile" => w.modelfile = true,
            "template" => w.template = true,
            "system" => {
                if let Some(s) = &self.system {
                    println!("{s}");
                    return Ok(());
                }
                w.system = true;
            }
            "parameters" => {
                println!("Model defined parameters:");
                w.parameters = true;
                show(c, &self.model, w).await?;
                if !self.options.is_empty() {
                    println!("User defined parameters:");
                    for (k, v) in &self.options {
                        println!("{k:<30} {v}");
                    }
                }
                return Ok(());
            }
            other => {
                eprintln!("Unknown command '/show {other}'. Type /? for help");
                return Ok(());
            }
        }
        show(c, &self.model, w).await
    }

    /// `/load <model>`: another model, a fresh conversation.
    async fn load(&mut self, c: &Client, model: &str) -> Result<(), CliError> {
        eprintln!("Loading model '{model}'");
        c.json(
            Method::POST,
            "/api/chat",
            Some(json!({ "model": model, "messages": [] })),
        )
        .await?;
        self.model = model.to_string();
        self.history.clear();
        Ok(())
    }

    /// `/save <model>`: the conversation and its settings as a new model.
    async fn save(&self, c: &Client, name: &str) -> Result<(), CliError> {
        let mut body = json!({ "model": name, "from": self.model, "stream": false });
        if let Some(s) = &self.system {
            body["system"] = json!(s);
        }
        if !self.options.is_empty() {
            body["parameters"] = Value::Object(self.options.clone());
        }
        if !self.history.is_empty() {
            body["messages"] = json!(self.history);
        }
        c.json(Method::POST, "/api/create", Some(body)).await?;
        eprintln!("Created new model '{name}'");
        Ok(())
    }
}

/// The prompt's line editor: rustyline (arrow keys, line editing) with Ollama's
/// history file, `~/.ollama/history`. History is a convenience: a home without one
/// or an unwritable file only means no history.
struct Input {
    editor: rustyline::DefaultEditor,
    history: Option<std::path::PathBuf>,
}

/// What one read at the prompt gave.
enum Prompted {
    Line(String),
    /// Ctrl-C: the line is dropped.
    Interrupted,
    /// Ctrl-D or the end of input.
    End,
}

impl Input {
    fn new() -> Result<Input, CliError> {
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| CliError::Other(format!("starting the line editor: {e}")))?;
        let history = std::env::var_os("HOME").map(|home| {
            std::path::PathBuf::from(home)
                .join(".ollama")
                .join("history")
        });
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        Ok(Input { editor, history })
    }

    fn read(&mut self, prompt: &str) -> Result<Prompted, CliError> {
        use rustyline::error::ReadlineError;
        match self.editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = self.editor.add_history_entry(line.as_str());
                    if let Some(path) = &self.history {
                        if let Some(dir) = path.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        let _ = self.editor.save_history(path);
                    }
                }
                Ok(Prompted::Line(line))
            }
            Err(ReadlineError::Interrupted) => Ok(Prompted::Interrupted),
            Err(ReadlineError::Eof) => Ok(Prompted::End),
            Err(e) => Err(CliError::Other(format!("reading input: {e}"))),
        }
    }
}

async fn interactive(c: &Client, session: &mut Session) -> Result<(), CliError> {
    eprintln!("Send a message (/? for help, /bye to leave)");
    let mut input = Input::new()?;
    loop {
        let mut line = match input.read(">>> ")? {
            Prompted::Line(line) => line,
            Prompted::Interrupted => {
                println!("\nUse Ctrl + d or /bye to exit.");
                continue;
            }
            Prompted::End => {
                println!();
                return Ok(());
            }
        };
        if let Some(rest) = line.trim_start().strip_prefix("\"\"\"") {
            // Multi-line input until a closing """; Ctrl-C drops it.
            let mut text = rest.to_string();
            let mut dropped = false;
            while !text.trim_end().ends_with("\"\"\"") {
                match input.read("... ")? {
                    Prompted::Line(more) => {
                        text.push('\n');
                        text.push_str(&more);
                    }
                    Prompted::Interrupted => {
                        dropped = true;
                        break;
                    }
                    Prompted::End => break,
                }
            }
            let text = text
                .trim_end()
                .trim_end_matches("\"\"\"")
                .trim()
                .to_string();
            line = text;
            if dropped || line.is_empty() {
                continue;
            }
            if let Err(e) = send(c, session, line).await {
                eprintln!("Error: {e}");
            }
            continue;
        }
        let outcome = match session.command(line.trim()) {
            Line::Quit => return Ok(()),
            Line::Done => Ok(()),
            Line::Show(what) => session.show(c, &what).await,
            Line::Load(model) => session.load(c, &model).await,
            Line::Save(model) => session.save(c, &model).await,
            Line::Message(text) => send(c, session, text).await,
        };
        if let Err(e) = outcome {
            eprintln!("Error: {e}");
        }
    }
}

/// One user message and the model's streamed answer, kept in the history.
async fn send(c: &Client, session: &mut Session, text: String) -> Result<(), CliError> {
    session
        .history
        .push(json!({ "role": "user", "content": text }));
    match chat_turn(c, session.request(), session.verbose, session.word_wrap).await {
        Ok(answer) => {
            session
                .history
                .push(json!({ "role": "assistant", "content": answer }));
            println!();
            Ok(())
        }
        Err(e) => {
            session.history.pop();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(&RunOptions {
            model: "m".into(),
            prompt: vec![],
            verbose: false,
            keep_alive: None,
            insecure: false,
            format: None,
            think: None,
            word_wrap: true,
        })
        .unwrap()
    }

    #[test]
    fn set_commands_shape_the_request() {
        let mut s = session();
        assert!(matches!(
            s.command("/set parameter temperature 0"),
            Line::Done
        ));
        assert!(matches!(
            s.command("/set parameter stop <end> ###"),
            Line::Done
        ));
        assert!(matches!(
            s.command("/set system You are terse."),
            Line::Done
        ));
        assert!(matches!(s.command("/set format json"), Line::Done));
        assert!(matches!(s.command("/set think"), Line::Done));
        s.history.push(json!({"role": "user", "content": "hi"}));
        let r = s.request();
        assert_eq!(
            r["options"],
            json!({"temperature": 0, "stop": ["<end>", "###"]})
        );
        assert_eq!(
            r["messages"][0],
            json!({"role": "system", "content": "You are terse."})
        );
        assert_eq!(r["format"], "json");
        assert_eq!(r["think"], true);
        assert!(matches!(s.command("/set noformat"), Line::Done));
        assert!(s.request().get("format").is_none());
        assert!(matches!(s.command("/clear"), Line::Done));
        assert!(s.history.is_empty());
    }

    #[test]
    fn other_lines() {
        let mut s = session();
        assert!(matches!(s.command("/bye"), Line::Quit));
        assert!(matches!(s.command("/show info"), Line::Show(w) if w == "info"));
        assert!(matches!(s.command("/load other"), Line::Load(m) if m == "other"));
        assert!(matches!(s.command("/save mine"), Line::Save(m) if m == "mine"));
        assert!(matches!(s.command("hello there"), Line::Message(m) if m == "hello there"));
        assert!(matches!(s.command("/nope"), Line::Done));
        assert_eq!(parameter_value("0.5"), json!(0.5));
        assert_eq!(parameter_value("42"), json!(42));
        assert_eq!(parameter_value("yes"), json!("yes"));
        assert!(format_value("{\"type\": \"object\"}").is_ok());
        assert!(format_value("xml").is_err());
        assert!(think_value("maybe").is_err());
    }
}
