//! `wick pull` and `wick push`: ask the server to move a model and draw Ollama's
//! progress: a status line per step, one bar per layer
//! (`pulling 1a2b3c4d5e6f: 100% ▕███▏ 138 MB`).

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::client::Client;
use crate::CliError;

/// Pull `model` through the server, with bars on a terminal and plain lines otherwise.
pub async fn pull(c: &Client, model: &str, insecure: bool) -> Result<(), CliError> {
    transfer(c, "/api/pull", model, insecure).await
}

/// Push `model` (named for its destination) through the server.
pub async fn push(c: &Client, model: &str, insecure: bool) -> Result<(), CliError> {
    transfer(c, "/api/push", model, insecure).await
}

async fn transfer(c: &Client, path: &str, model: &str, insecure: bool) -> Result<(), CliError> {
    if !std::io::stderr().is_terminal() {
        return transfer_plain(c, path, model, insecure).await;
    }
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut layers: HashMap<String, ProgressBar> = HashMap::new();
    let mut last_status: Option<ProgressBar> = None;
    let style = ProgressStyle::with_template(
        "{msg}: {percent:>3}% ▕{bar:20}▏ {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
    )
    .map_err(|e| CliError::Other(format!("progress style: {e}")))?
    .progress_chars("██ ");
    let body = json!({"model": model, "insecure": insecure, "stream": true});
    let result = c
        .stream(path, body, |v: &Value| {
            let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
            match (
                v.get("digest").and_then(Value::as_str),
                v.get("total").and_then(Value::as_u64),
            ) {
                (Some(digest), Some(total)) => {
                    let bar = layers.entry(digest.to_string()).or_insert_with(|| {
                        let b = bars.add(ProgressBar::new(total));
                        b.set_style(style.clone());
                        b.set_message(status.to_string());
                        b
                    });
                    bar.set_position(v.get("completed").and_then(Value::as_u64).unwrap_or(0));
                }
                _ => {
                    if let Some(done) = last_status.take() {
                        done.finish();
                    }
                    let line = bars.add(ProgressBar::new_spinner());
                    line.set_message(status.to_string());
                    line.tick();
                    last_status = Some(line);
                }
            }
            Ok(())
        })
        .await;
    for bar in layers.values() {
        bar.finish();
    }
    if let Some(line) = last_status {
        line.finish();
    }
    result
}

/// Without a terminal: each status once, a layer's line when it completes.
async fn transfer_plain(
    c: &Client,
    path: &str,
    model: &str,
    insecure: bool,
) -> Result<(), CliError> {
    let mut last = String::new();
    let body = json!({"model": model, "insecure": insecure, "stream": true});
    c.stream(path, body, |v: &Value| {
        let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
        let total = v.get("total").and_then(Value::as_u64);
        let completed = v.get("completed").and_then(Value::as_u64);
        match (total, completed) {
            (Some(t), Some(d)) if d == t => {
                eprintln!("{status}: 100% {}", crate::client::human_bytes(t))
            }
            (Some(_), _) => {}
            _ if status != last => eprintln!("{status}"),
            _ => {}
        }
        last = status.to_string();
        Ok(())
    })
    .await
}
