//! `wick run <model> [prompt]`: answer one prompt (from the arguments or piped stdin),
//! or chat interactively.

use std::io::{BufRead, IsTerminal, Read, Write};

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{chat_turn, Client};
use crate::CliError;

pub struct RunOptions {
    pub model: String,
    pub prompt: Vec<String>,
    pub verbose: bool,
    pub keep_alive: Option<String>,
    /// Pull a missing model over plain http.
    pub insecure: bool,
}

fn request(opts: &RunOptions, messages: &[Value]) -> Value {
    let mut body = json!({ "model": opts.model, "messages": messages, "stream": true });
    if let Some(ka) = &opts.keep_alive {
        body["keep_alive"] = json!(ka);
    }
    body
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

    if !prompt.trim().is_empty() {
        let messages = [json!({ "role": "user", "content": prompt })];
        chat_turn(c, request(&opts, &messages), opts.verbose).await?;
        return Ok(());
    }
    if !stdin.is_terminal() {
        return Ok(());
    }
    interactive(c, &opts).await
}

async fn interactive(c: &Client, opts: &RunOptions) -> Result<(), CliError> {
    eprintln!("Send a message (/? for help, /bye to leave)");
    let mut history: Vec<Value> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!(">>> ");
        let _ = std::io::stdout().flush();
        let Some(line) = lines.next() else {
            println!();
            return Ok(());
        };
        let mut line = line.map_err(|e| CliError::Other(format!("reading stdin: {e}")))?;
        if let Some(rest) = line.strip_prefix("\"\"\"") {
            // Multi-line input until a closing """.
            let mut text = rest.to_string();
            while !text.trim_end().ends_with("\"\"\"") {
                print!("... ");
                let _ = std::io::stdout().flush();
                match lines.next() {
                    Some(Ok(more)) => {
                        text.push('\n');
                        text.push_str(&more);
                    }
                    _ => break,
                }
            }
            line = text.trim_end().trim_end_matches("\"\"\"").to_string();
        }
        match line.trim() {
            "" => continue,
            "/bye" | "/exit" => return Ok(()),
            "/clear" => {
                history.clear();
                eprintln!("Cleared session context");
                continue;
            }
            "/?" | "/help" => {
                eprintln!("  /clear   forget the conversation\n  /bye     exit\n  \"\"\"      begin or end a multi-line message");
                continue;
            }
            _ => {}
        }
        history.push(json!({ "role": "user", "content": line }));
        match chat_turn(c, request(opts, &history), opts.verbose).await {
            Ok(answer) => {
                history.push(json!({ "role": "assistant", "content": answer }));
                println!();
            }
            Err(e) => {
                history.pop();
                eprintln!("Error: {e}");
            }
        }
    }
}
