//! `wick create <name> -f <Modelfile>`: parse the Modelfile here, upload the GGUF it
//! names (hashing it first, skipping the upload when the server has it), then ask the
//! server to create the model and print its progress.

use std::io::Read;
use std::path::{Path, PathBuf};

use futures::stream;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use wick_store::modelfile;

use crate::client::Client;
use crate::CliError;

const CHUNK: usize = 1 << 20;

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// `~/x`, and relative paths against the Modelfile's directory.
fn resolve_path(from: &str, base: &Path) -> PathBuf {
    if let Some(rest) = from.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let p = PathBuf::from(from);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn sha256_file(path: &Path) -> Result<String, CliError> {
    let io = |e: std::io::Error| CliError::Other(format!("reading {}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let pb = bar(len, "hashing  ");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

async fn upload(c: &Client, path: &Path, digest: &str) -> Result<(), CliError> {
    let blob = format!("/api/blobs/{digest}");
    let head = c
        .request(Method::HEAD, &blob)
        .send()
        .await
        .map_err(CliError::Http)?;
    if head.status() == StatusCode::OK {
        eprintln!("using existing blob {digest}");
        return Ok(());
    }
    let io = |e: std::io::Error| CliError::Other(format!("reading {}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    let pb = bar(len, "uploading");
    let progress = pb.clone();
    let body = stream::unfold(file, move |mut file| {
        let pb = progress.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    pb.inc(n as u64);
                    Some((Ok::<_, std::io::Error>(buf), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        }
    });
    let req = c
        .request(Method::POST, &blob)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(body));
    let result = c.send(req).await;
    pb.finish_and_clear();
    result.map(|_| ())
}

/// The files of a safetensors model directory, as relative paths: weights, configs and
/// tokenizer files, including those one folder down (`1_Pooling/config.json`).
fn model_dir_files(dir: &Path) -> Result<Vec<String>, CliError> {
    let wanted = |name: &str| {
        name.ends_with(".safetensors")
            || name.ends_with(".json")
            || name == "tokenizer.model"
            || name == "vocab.txt"
            || name == "chat_template.jinja"
    };
    let mut out = Vec::new();
    let read = |d: &Path| {
        std::fs::read_dir(d).map_err(|e| CliError::Other(format!("{}: {e}", d.display())))
    };
    for entry in read(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            for sub in read(&path)?.flatten() {
                let sub_name = sub.file_name().to_string_lossy().into_owned();
                if sub.path().is_file() && wanted(&sub_name) {
                    out.push(format!("{name}/{sub_name}"));
                }
            }
        } else if wanted(&name) {
            out.push(name);
        }
    }
    out.sort();
    if !out.iter().any(|f| f.ends_with(".safetensors")) {
        return Err(CliError::Other(format!(
            "{}: no .safetensors files in this directory",
            dir.display()
        )));
    }
    Ok(out)
}

pub async fn create(
    c: &Client,
    name: &str,
    modelfile_path: &Path,
    quantize: Option<&str>,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(modelfile_path)
        .map_err(|e| CliError::Other(format!("reading {}: {e}", modelfile_path.display())))?;
    let mf = modelfile::parse(&text)
        .map_err(|e| CliError::Other(format!("{}: {e}", modelfile_path.display())))?;
    let base = modelfile_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));

    let mut body = Map::new();
    body.insert("model".into(), json!(name));
    let local = resolve_path(&mf.from, base);
    if local.is_dir() {
        // A safetensors model directory: upload every file Ollama's CLI would.
        eprintln!("gathering model components");
        let mut files = Map::new();
        for rel in model_dir_files(&local)? {
            let path = local.join(&rel);
            let hashed = path.clone();
            let digest = tokio::task::spawn_blocking(move || sha256_file(&hashed))
                .await
                .map_err(|e| CliError::Other(format!("hashing failed: {e}")))??;
            upload(c, &path, &digest).await?;
            files.insert(rel, json!(digest));
        }
        body.insert("files".into(), Value::Object(files));
    } else if local.is_file() {
        eprintln!("gathering model components");
        let path = local.clone();
        let digest = tokio::task::spawn_blocking(move || sha256_file(&path))
            .await
            .map_err(|e| CliError::Other(format!("hashing failed: {e}")))??;
        upload(c, &local, &digest).await?;
        let file_name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model.gguf".into());
        body.insert("files".into(), json!({ file_name: digest }));
    } else if mf.from.contains('/') && (mf.from.starts_with('.') || mf.from.ends_with(".gguf")) {
        return Err(CliError::Other(format!(
            "{}: no such file",
            local.display()
        )));
    } else {
        body.insert("from".into(), json!(mf.from));
    }
    if let Some(t) = mf.template {
        body.insert("template".into(), json!(t));
    }
    if let Some(s) = mf.system {
        body.insert("system".into(), json!(s));
    }
    if !mf.license.is_empty() {
        body.insert("license".into(), json!(mf.license));
    }
    if !mf.parameters.is_empty() {
        body.insert("parameters".into(), Value::Object(mf.parameters));
    }
    if !mf.messages.is_empty() {
        let msgs: Vec<Value> = mf
            .messages
            .iter()
            .map(|(role, content)| json!({ "role": role, "content": content }))
            .collect();
        body.insert("messages".into(), Value::Array(msgs));
    }
    if let Some(r) = mf.requires {
        body.insert("requires".into(), json!(r));
    }
    if let Some(q) = quantize {
        body.insert("quantize".into(), json!(q));
    }
    body.insert("stream".into(), json!(true));

    // Statuses print as lines; one with `total`/`completed` (quantizing) draws a bar.
    let mut progress: Option<ProgressBar> = None;
    let result = c
        .stream("/api/create", Value::Object(body), |v| {
            let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
            match (v["total"].as_u64(), v["completed"].as_u64()) {
                (Some(total), Some(done)) => {
                    let pb = progress.get_or_insert_with(|| bar(total, status));
                    pb.set_position(done);
                }
                _ => {
                    if let Some(pb) = progress.take() {
                        pb.finish();
                    }
                    if !status.is_empty() {
                        eprintln!("{status}");
                    }
                }
            }
            Ok(())
        })
        .await;
    if let Some(pb) = progress.take() {
        pb.abandon();
    }
    result
}
