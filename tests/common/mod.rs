//! Shared end-to-end test harness: a real `wick serve` on a free loopback port with its
//! own model store, and the real model files fetched by `scripts/fetch-models.sh`.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const SMOLLM2: &str = "smollm2:135m";
/// Qwen2.5-Coder-0.5B-Instruct Q4_K_M under its Ollama name.
pub const QWEN_05B: &str = "qwen2.5-coder:0.5b";

/// Where the fetched models live (`WICK_MODEL_CACHE` or `<repo>/models-cache`).
pub fn model_cache() -> PathBuf {
    std::env::var_os("WICK_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models-cache"))
}

pub fn smollm2_gguf() -> PathBuf {
    fetched("smollm2-135m-instruct-q4_1.gguf")
}

pub fn qwen_05b_gguf() -> PathBuf {
    fetched("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

pub fn gemma3_gguf() -> PathBuf {
    fetched("gemma-3-270m-q4_k_m.gguf")
}

pub fn fetched(file: &str) -> PathBuf {
    let p = model_cache().join(file);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh first (the README's test command does)",
        p.display()
    );
    p
}

/// A running `wick serve`, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub store: tempfile::TempDir,
    pub client: reqwest::blocking::Client,
}

/// A loopback port nothing listens on, never one this test process handed out before: the
/// kernel may offer a port again once its probe socket closes, and two servers started by
/// parallel tests must not race for it.
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

impl Server {
    /// Start a server on an empty store.
    pub fn start() -> Server {
        Self::start_with_env(&[])
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        Self::start_in(tempfile::tempdir().expect("temp store"), env)
    }

    /// Start a server on the store in `store` (a store another server used).
    pub fn start_in(store: tempfile::TempDir, env: &[(&str, &str)]) -> Server {
        // Another process may take the probed port before wick binds it; then wick exits
        // and the server is started again on a new port.
        let mut store = store;
        for _ in 0..5 {
            match Self::try_start_in(store, env) {
                Ok(server) => return server,
                Err(returned) => store = returned,
            }
        }
        panic!("wick serve could not bind a loopback port in 5 tries");
    }

    fn try_start_in(
        store: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Result<Server, tempfile::TempDir> {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wick"));
        cmd.arg("serve")
            .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
            .env("OLLAMA_MODELS", store.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start wick serve");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .expect("http client");
        let mut exited = || matches!(child.try_wait(), Ok(Some(_)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // Our child exiting means its bind failed; whatever answers on the port then
            // is someone else's server.
            if exited() {
                return Err(store);
            }
            if let Ok(r) = client.get(&base).send() {
                if r.status().is_success() && !exited() {
                    return Ok(Server {
                        child,
                        base,
                        store,
                        client,
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("wick serve did not come up on {base}");
    }

    /// Start a server whose store holds the real SmolLM2 as `smollm2:135m`, imported
    /// through the API (`/api/blobs` then `/api/create`).
    pub fn with_smollm2() -> Server {
        Self::with_smollm2_env(&[])
    }

    /// As [`with_smollm2`](Self::with_smollm2), with extra environment for `wick serve`.
    pub fn with_smollm2_env(env: &[(&str, &str)]) -> Server {
        let s = Self::start_with_env(env);
        s.import_gguf(SMOLLM2, &smollm2_gguf());
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Upload a GGUF as a blob and create a model from it.
    pub fn import_gguf(&self, name: &str, path: &Path) {
        let digest = upload_blob(self, path);
        let r = self
            .post(
                "/api/create",
                &json!({"model": name, "files": {"model.gguf": digest}, "stream": false}),
            )
            .expect("create");
        assert_eq!(r.0, 200, "create failed: {}", r.1);
    }

    /// POST JSON; returns (status, parsed body or the raw text as a JSON string).
    pub fn post(&self, path: &str, body: &Value) -> reqwest::Result<(u16, Value)> {
        let r = self.client.post(self.url(path)).json(body).send()?;
        Ok(into_pair(r))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("request");
        into_pair(r)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        into_pair(self.client.get(self.url(path)).send().expect("request"))
    }

    pub fn delete(&self, body: &Value) -> (u16, Value) {
        into_pair(
            self.client
                .delete(self.url("/api/delete"))
                .json(body)
                .send()
                .expect("request"),
        )
    }

    /// POST a streaming request and collect every NDJSON line.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let mut r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .expect("request");
        assert_eq!(r.status().as_u16(), 200);
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("application/x-ndjson"), "content-type {ct}");
        let mut text = String::new();
        r.read_to_string(&mut text).expect("body");
        assert!(text.ends_with('\n'), "stream must end with a newline");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    /// Send SIGTERM and wait (up to `within`) for the process to exit; its status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "could not signal wick");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for wick") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wick did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the server (no chance to clean up) and start a new one on the same store.
    #[allow(dead_code)]
    pub fn kill_and_restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let store = std::mem::replace(&mut self.store, tempfile::tempdir().expect("temp"));
        drop(self);
        Self::start_in(store, &[])
    }

    /// The server still answers.
    pub fn assert_alive(&self) {
        let (status, _) = self.get("/api/version");
        assert_eq!(status, 200, "server stopped answering");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn into_pair(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

pub fn upload_blob(s: &Server, path: &Path) -> String {
    let digest = sha256_file(path);
    let bytes = std::fs::read(path).expect("read model");
    let r = s
        .client
        .post(s.url(&format!("/api/blobs/{digest}")))
        .body(bytes)
        .send()
        .expect("upload");
    assert!(
        r.status().as_u16() == 201 || r.status().as_u16() == 200,
        "blob upload: {}",
        r.status()
    );
    digest
}

/// Greedy options with a fixed budget.
pub fn greedy(num_predict: i64) -> Value {
    json!({"temperature": 0, "num_predict": num_predict, "seed": 1})
}

/// Concatenate the `response` (generate) or `message.content` (chat) of stream lines.
pub fn joined_text(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| {
            l.get("response")
                .and_then(Value::as_str)
                .or_else(|| l.pointer("/message/content").and_then(Value::as_str))
                .unwrap_or("")
                .to_string()
        })
        .collect()
}
