//! The client verbs: talk to a running server at `OLLAMA_HOST` over HTTP, like
//! Ollama's CLI.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde_json::{json, Value};

use crate::host::Host;
use crate::CliError;

/// `Authorization: Bearer <key>` for a server started with `WICK_API_KEY` (the same
/// variable); nothing when it is unset or empty.
fn auth_headers(key: Option<&str>) -> Result<HeaderMap, CliError> {
    let mut headers = HeaderMap::new();
    let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
        return Ok(headers);
    };
    let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| CliError::Other("WICK_API_KEY holds characters a header cannot".into()))?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    Ok(headers)
}

/// An HTTP client bound to one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(host: &Host) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("wick/", env!("CARGO_PKG_VERSION")))
            .default_headers(auth_headers(std::env::var("WICK_API_KEY").ok().as_deref())?)
            .build()
            .map_err(|e| CliError::Other(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: host.base_url(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Send, turning connection failures and `{"error"}` replies into errors.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                CliError::Other(format!(
                    "could not connect to wick at {}: is `wick serve` running?",
                    self.base
                ))
            } else {
                CliError::Http(e)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(server_error(resp).await)
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(CliError::Http)?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| CliError::Other(format!("invalid reply: {e}")))
    }

    /// POST and call `each` for every NDJSON line of the reply; a line with `error`
    /// ends it with that error.
    pub async fn stream(
        &self,
        path: &str,
        body: Value,
        mut each: impl FnMut(&Value) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        let resp = self
            .send(self.request(Method::POST, path).json(&body))
            .await?;
        let mut bytes = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut handle = |line: &[u8]| -> Result<(), CliError> {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let v: Value = serde_json::from_slice(line)
                .map_err(|e| CliError::Other(format!("invalid stream line: {e}")))?;
            if let Some(err) = v.get("error").and_then(Value::as_str) {
                return Err(CliError::Server {
                    message: err.to_string(),
                });
            }
            each(&v)
        };
        while let Some(chunk) = bytes.next().await {
            buf.extend_from_slice(&chunk.map_err(CliError::Http)?);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                handle(&line)?;
            }
        }
        handle(&buf)
    }
}

async fn server_error(resp: reqwest::Response) -> CliError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| {
            if text.trim().is_empty() {
                status.to_string()
            } else {
                text.trim().to_string()
            }
        });
    CliError::Server { message }
}

/// `1.2 GB`, `98 MB` (decimal units, like Ollama).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)];
    for (unit, size) in UNITS {
        if n as f64 >= size {
            let v = n as f64 / size;
            return if v < 10.0 {
                format!("{v:.1} {unit}")
            } else {
                format!("{v:.0} {unit}")
            };
        }
    }
    format!("{n} B")
}

/// `3 minutes ago`, `4 minutes from now`.
pub fn human_time(t: &str) -> String {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) else {
        return t.to_string();
    };
    let delta = at.signed_duration_since(chrono::Utc::now());
    if delta.num_days() > 365 * 100 {
        return "Forever".into();
    }
    let (future, d) = if delta.num_milliseconds() >= 0 {
        (true, delta)
    } else {
        (false, -delta)
    };
    let secs = d.num_seconds();
    let amount = match secs {
        0..=1 => {
            return if future {
                "Now".into()
            } else {
                "Just now".into()
            }
        }
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    };
    if future {
        format!("{amount} from now")
    } else {
        format!("{amount} ago")
    }
}

fn table(rows: Vec<Vec<String>>) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i] + 4))
            .collect();
        println!("{}", line.concat().trim_end());
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

pub async fn list(c: &Client) -> Result<(), CliError> {
    let v = c.json(Method::GET, "/api/tags", None).await?;
    let mut rows = vec![vec![
        "NAME".into(),
        "ID".into(),
        "SIZE".into(),
        "MODIFIED".into(),
    ]];
    for m in v["models"].as_array().into_iter().flatten() {
        rows.push(vec![
            str_of(m, "name").to_string(),
            str_of(m, "digest").chars().take(12).collect(),
            human_bytes(m["size"].as_u64().unwrap_or(0)),
            human_time(str_of(m, "modified_at")),
        ]);
    }
    table(rows);
    Ok(())
}

pub async fn ps(c: &Client) -> Result<(), CliError> {
    let v = c.json(Method::GET, "/api/ps", None).await?;
    let mut rows = vec![["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
        .map(String::from)
        .to_vec()];
    for m in v["models"].as_array().into_iter().flatten() {
        rows.push(vec![
            str_of(m, "name").to_string(),
            str_of(m, "digest").chars().take(12).collect(),
            human_bytes(m["size"].as_u64().unwrap_or(0)),
            processor(
                m["size"].as_u64().unwrap_or(0),
                m["size_vram"].as_u64().unwrap_or(0),
            ),
            m["context_length"].as_u64().unwrap_or(0).to_string(),
            human_time(str_of(m, "expires_at")),
        ]);
    }
    table(rows);
    Ok(())
}

/// Ollama's PROCESSOR column: where a loaded model's bytes are (`size_vram` of `size`
/// on the GPU).
fn processor(size: u64, size_vram: u64) -> String {
    if size_vram == 0 {
        return "100% CPU".into();
    }
    if size_vram >= size {
        return "100% GPU".into();
    }
    let gpu = (size_vram as f64 * 100.0 / size as f64).round() as u64;
    format!("{}%/{}% CPU/GPU", 100 - gpu, gpu)
}

/// What `wick show` prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShowWhat {
    pub modelfile: bool,
    pub template: bool,
    pub parameters: bool,
    pub system: bool,
    pub license: bool,
    /// Every metadata key and tensor too (`show -v`).
    pub verbose: bool,
}

pub async fn show(c: &Client, model: &str, what: ShowWhat) -> Result<(), CliError> {
    let v = c
        .json(
            Method::POST,
            "/api/show",
            Some(json!({ "model": model, "verbose": what.verbose })),
        )
        .await?;
    let field = |k: &str| str_of(&v, k).to_string();
    let printed = [
        (what.modelfile, "modelfile"),
        (what.template, "template"),
        (what.parameters, "parameters"),
        (what.system, "system"),
        (what.license, "license"),
    ];
    if printed.iter().any(|(on, _)| *on) {
        for (on, k) in printed {
            if on {
                println!("{}", field(k));
            }
        }
        return Ok(());
    }
    let info = &v["model_info"];
    let arch = str_of(info, "general.architecture");
    let key = |k: &str| {
        info.get(format!("{arch}.{k}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let d = &v["details"];
    println!("  Model");
    let rows = [
        ("architecture", arch.to_string()),
        ("parameters", str_of(d, "parameter_size").to_string()),
        ("context length", key("context_length").to_string()),
        ("embedding length", key("embedding_length").to_string()),
        ("quantization", str_of(d, "quantization_level").to_string()),
    ];
    for (k, val) in rows {
        if !val.is_empty() && val != "null" {
            println!("    {k:<20}{val}");
        }
    }
    println!("\n  Capabilities");
    for cap in v["capabilities"].as_array().into_iter().flatten() {
        println!("    {}", cap.as_str().unwrap_or_default());
    }
    let params = field("parameters");
    if !params.is_empty() {
        println!("\n  Parameters");
        for l in params.lines() {
            println!("    {l}");
        }
    }
    for (title, k) in [("System", "system"), ("License", "license")] {
        let text = field(k);
        if !text.is_empty() {
            println!("\n  {title}");
            for l in text.lines().take(4) {
                println!("    {l}");
            }
        }
    }
    if what.verbose {
        println!("\n  Metadata");
        if let Some(meta) = info.as_object() {
            let mut keys: Vec<&String> = meta.keys().collect();
            keys.sort();
            for k in keys {
                println!("    {k:<40}{}", metadata_value(&meta[k.as_str()]));
            }
        }
        let tensors = v["tensors"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !tensors.is_empty() {
            println!("\n  Tensors");
            for t in tensors {
                let shape: Vec<String> = t["shape"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect();
                println!(
                    "    {:<40}{:<8}[{}]",
                    str_of(t, "name"),
                    str_of(t, "type"),
                    shape.join(" ")
                );
            }
        }
    }
    println!();
    Ok(())
}

/// A metadata value as `show -v` prints it: arrays shortened to their first items.
fn metadata_value(v: &Value) -> String {
    const SHOWN: usize = 5;
    let one = |x: &Value| match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match v {
        Value::Array(items) if items.len() > SHOWN => {
            let head: Vec<String> = items.iter().take(SHOWN).map(one).collect();
            format!("[{} ...+{} more]", head.join(" "), items.len() - SHOWN)
        }
        Value::Array(items) => {
            format!("[{}]", items.iter().map(one).collect::<Vec<_>>().join(" "))
        }
        other => one(other),
    }
}

pub async fn copy(c: &Client, source: &str, destination: &str) -> Result<(), CliError> {
    c.json(
        Method::POST,
        "/api/copy",
        Some(json!({ "source": source, "destination": destination })),
    )
    .await?;
    println!("copied '{source}' to '{destination}'");
    Ok(())
}

pub async fn remove(c: &Client, models: &[String]) -> Result<(), CliError> {
    for m in models {
        c.json(Method::DELETE, "/api/delete", Some(json!({ "model": m })))
            .await?;
        println!("deleted '{m}'");
    }
    Ok(())
}

pub async fn stop(c: &Client, model: &str) -> Result<(), CliError> {
    c.json(
        Method::POST,
        "/api/generate",
        Some(json!({ "model": model, "keep_alive": 0 })),
    )
    .await?;
    Ok(())
}

/// Stream one chat turn, printing the answer as it arrives (wrapped at the terminal's
/// width when `word_wrap`); returns the answer.
pub async fn chat_turn(
    c: &Client,
    body: Value,
    verbose: bool,
    word_wrap: bool,
) -> Result<String, CliError> {
    use std::io::Write;
    let mut answer = String::new();
    let mut last = Value::Null;
    let mut thinking = false;
    let mut wrap = crate::wrap::WordWrap::for_stdout(word_wrap);
    c.stream("/api/chat", body, |v| {
        // Thinking first, set apart as Ollama's CLI shows it.
        let thought = str_of(&v["message"], "thinking");
        if !thought.is_empty() {
            if !thinking {
                print!("{}", wrap.push("Thinking...\n"));
                thinking = true;
            }
            print!("{}", wrap.push(thought));
        }
        let piece = str_of(&v["message"], "content");
        if thinking && !piece.is_empty() {
            print!("{}", wrap.push("\n...done thinking.\n\n"));
            thinking = false;
        }
        print!("{}", wrap.push(piece));
        let _ = std::io::stdout().flush();
        answer.push_str(piece);
        if v["done"] == true {
            last = v.clone();
        }
        Ok(())
    })
    .await?;
    println!();
    if verbose {
        print_stats(&last);
    }
    Ok(answer)
}

fn print_stats(v: &Value) {
    let ns = |k: &str| v[k].as_u64().unwrap_or(0);
    let d = |k: &str| Duration::from_nanos(ns(k));
    let rate = |count: &str, dur: &str| {
        let s = d(dur).as_secs_f64();
        if s > 0.0 {
            ns(count) as f64 / s
        } else {
            0.0
        }
    };
    eprintln!("total duration:       {:?}", d("total_duration"));
    eprintln!("load duration:        {:?}", d("load_duration"));
    eprintln!("prompt eval count:    {} token(s)", ns("prompt_eval_count"));
    eprintln!("prompt eval duration: {:?}", d("prompt_eval_duration"));
    eprintln!(
        "prompt eval rate:     {:.2} tokens/s",
        rate("prompt_eval_count", "prompt_eval_duration")
    );
    eprintln!("eval count:           {} token(s)", ns("eval_count"));
    eprintln!("eval duration:        {:?}", d("eval_duration"));
    eprintln!(
        "eval rate:            {:.2} tokens/s",
        rate("eval_count", "eval_duration")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_goes_in_a_bearer_header() {
        assert!(auth_headers(None).unwrap().is_empty());
        assert!(auth_headers(Some("  ")).unwrap().is_empty());
        let h = auth_headers(Some(" k3y ")).unwrap();
        assert_eq!(h[AUTHORIZATION], "Bearer k3y");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert!(auth_headers(Some("bad\nkey")).is_err());
    }

    #[test]
    fn processor_says_where_the_bytes_are_as_ollama_does() {
        assert_eq!(processor(1000, 0), "100% CPU");
        assert_eq!(processor(1000, 1000), "100% GPU");
        assert_eq!(processor(1000, 520), "48%/52% CPU/GPU");
    }
}
