//! One wick pulls from another over the registry protocol: Ollama's progress objects in
//! order, the pulled model answers, a second pull transfers nothing, a partial download
//! resumes (also after the source was killed mid-pull), concurrent pulls share one
//! download, and a corrupted blob on the source commits nothing at the destination.

mod common;

use std::path::Path;

use common::{greedy, Server, QWEN_05B, SMOLLM2};
use serde_json::{json, Value};

/// The name under which the destination pulls the source's `smollm2:135m`.
fn remote_name(source: &Server) -> String {
    remote(source, SMOLLM2)
}

/// The name under which another server pulls `model` (an Ollama library name) from
/// `source`, e.g. `127.0.0.1:PORT/library/qwen2.5-coder:0.5b`.
fn remote(source: &Server, model: &str) -> String {
    let host = source.base.trim_start_matches("http://");
    format!("{host}/library/{model}")
}

/// A server whose store holds the real Qwen2.5-Coder-0.5B as `qwen2.5-coder:0.5b`.
fn with_qwen(env: &[(&str, &str)]) -> Server {
    let s = Server::start_with_env(env);
    s.import_gguf(QWEN_05B, &common::qwen_05b_gguf());
    s
}

fn statuses(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l["status"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("error: {}", l["error"]))
        })
        .collect()
}

/// The model layer (the GGUF) of a store's manifest for smollm2.
fn model_blob(store: &Path, source: &Server) -> String {
    model_blob_of(store, source, SMOLLM2)
}

/// The model layer (the GGUF) of `model` (`name:tag`) in a store.
fn model_blob_of(store: &Path, source: &Server, model: &str) -> String {
    let (status, show) = source
        .post("/api/show", &json!({"model": model}))
        .expect("show");
    assert_eq!(status, 200, "{show}");
    let (repo, tag) = model.split_once(':').expect("name:tag");
    let manifest = store.join(format!("manifests/registry.ollama.ai/library/{repo}/{tag}"));
    let m: Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("json");
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.ollama.image.model")
        .and_then(|l| l["digest"].as_str())
        .expect("model layer")
        .to_string()
}

fn blob_file(store: &Path, digest: &str) -> std::path::PathBuf {
    store.join("blobs").join(digest.replace(':', "-"))
}

/// The `wick` CLI against `server`, its output once it exits.
fn wick_cli(server: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(args)
        .env("OLLAMA_HOST", &server.base)
        .env_remove("WICK_API_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run wick")
}

#[test]
fn a_wick_pulls_from_a_wick() {
    let source = with_qwen(&[]);
    let dest = Server::start();
    let name = remote(&source, QWEN_05B);

    // The registry side answers the protocol's routes.
    let (status, v) = source.get("/v2/");
    assert_eq!(status, 200, "{v}");
    let (status, tags) = source.get("/v2/library/qwen2.5-coder/tags/list");
    assert_eq!(status, 200, "{tags}");
    assert_eq!(tags["tags"], json!(["0.5b"]));
    let (status, err) = source.get("/v2/library/nothing/manifests/latest");
    assert_eq!(status, 404);
    assert_eq!(err["errors"][0]["code"], "MANIFEST_UNKNOWN");

    let lines = dest.stream("/api/pull", &json!({"model": name, "insecure": true}));
    let s = statuses(&lines);
    assert_eq!(
        s.first().map(String::as_str),
        Some("pulling manifest"),
        "{s:?}"
    );
    let tail: Vec<&str> = s[s.len() - 3..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["verifying sha256 digest", "writing manifest", "success"],
        "{s:?}"
    );
    // Every layer reports digest/total/completed, ending complete.
    let layer_lines: Vec<&Value> = lines.iter().filter(|l| l["digest"].is_string()).collect();
    assert!(layer_lines.len() >= 2, "{s:?}");
    for l in &layer_lines {
        let digest = l["digest"].as_str().unwrap();
        assert_eq!(l["status"], format!("pulling {}", &digest[7..19]));
        assert!(l["completed"].as_u64() <= l["total"].as_u64(), "{l}");
    }
    let last_of_each = layer_lines
        .iter()
        .filter(|l| l["completed"] == l["total"])
        .count();
    assert!(last_of_each >= 2, "{s:?}");
    // The ~470 MB weights came as ranged parts of 16 MiB (several at once): every
    // step short of the end is a whole number of parts.
    let weights: Vec<u64> = layer_lines
        .iter()
        .filter(|l| l["total"].as_u64() > Some(50 << 20))
        .filter_map(|l| l["completed"].as_u64())
        .collect();
    let total = layer_lines
        .iter()
        .filter_map(|l| l["total"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(weights.len() >= 25, "{weights:?}");
    assert!(
        weights.iter().all(|&c| c == total || c % (16 << 20) == 0),
        "{weights:?}"
    );

    // The same bytes: the model digest equals the source's.
    let (_, src_tags) = source.get("/api/tags");
    let (_, dst_tags) = dest.get("/api/tags");
    assert_eq!(
        src_tags["models"][0]["digest"], dst_tags["models"][0]["digest"],
        "{dst_tags}"
    );
    assert_eq!(dst_tags["models"][0]["name"], name);

    // The pulled model answers, as the source's does.
    let ask = |s: &Server, model: &str| {
        let (status, r) = s
            .post(
                "/api/generate",
                &json!({"model": model, "prompt": "Hello", "stream": false, "options": greedy(8)}),
            )
            .expect("generate");
        assert_eq!(status, 200, "{r}");
        r["response"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(ask(&dest, &name), ask(&source, QWEN_05B));

    // Pulling again downloads nothing: every layer is complete from its first line.
    let again = dest.stream("/api/pull", &json!({"model": name, "insecure": true}));
    for l in again.iter().filter(|l| l["digest"].is_string()) {
        assert_eq!(l["completed"], l["total"], "{l}");
    }
    assert_eq!(again.last().unwrap()["status"], "success");

    // Not streamed: one object.
    let (status, r) = dest
        .post(
            "/api/pull",
            &json!({"model": name, "insecure": true, "stream": false}),
        )
        .expect("pull");
    assert_eq!((status, r), (200, json!({"status": "success"})));

    // An unknown model: Ollama's message, nothing written.
    let missing = name.replace("qwen2.5-coder", "nothing");
    let lines = dest.stream("/api/pull", &json!({"model": missing, "insecure": true}));
    assert_eq!(
        lines.last().unwrap()["error"],
        "pull model manifest: file does not exist"
    );
    let (status, r) = dest
        .post(
            "/api/pull",
            &json!({"model": missing, "insecure": true, "stream": false}),
        )
        .expect("pull");
    assert_eq!(status, 500, "{r}");
    let (status, r) = dest
        .post("/api/pull", &json!({"model": "a/../b", "stream": false}))
        .expect("pull");
    assert_eq!(status, 400, "{r}");
    let (status, r) = dest
        .post(
            "/api/pull",
            &json!({"model": name, "insecure": true, "username": "u"}),
        )
        .expect("pull");
    assert_eq!(status, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("username"), "{r}");
}

#[test]
fn an_interrupted_pull_resumes_from_its_partial_file() {
    let source = Server::with_smollm2();
    let dest = Server::start();
    let name = remote_name(&source);
    let digest = model_blob(source.store.path(), &source);
    let bytes = std::fs::read(blob_file(source.store.path(), &digest)).expect("blob");
    // What an interrupted pull leaves: the first part of the blob in its partial file.
    let half = bytes.len() / 2;
    let blobs = dest.store.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!(".wick-tmp-partial-{}", digest.replace(':', "-")));
    std::fs::write(&partial, &bytes[..half]).unwrap();

    let lines = dest.stream("/api/pull", &json!({"model": name, "insecure": true}));
    let first = lines
        .iter()
        .find(|l| l["digest"] == digest)
        .expect("a line for the model layer");
    assert_eq!(
        first["completed"], half as u64,
        "resumes where it stopped: {first}"
    );
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    assert_eq!(
        std::fs::read(blob_file(dest.store.path(), &digest)).expect("pulled blob"),
        bytes
    );
    assert!(!partial.exists());
}

#[test]
fn a_corrupted_blob_on_the_source_commits_nothing() {
    let source = Server::with_smollm2();
    let dest = Server::start();
    let name = remote_name(&source);
    let digest = model_blob(source.store.path(), &source);
    let path = blob_file(source.store.path(), &digest);
    let mut bytes = std::fs::read(&path).expect("blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let lines = dest.stream("/api/pull", &json!({"model": name, "insecure": true}));
    let err = lines.last().unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.starts_with("digest mismatch"), "{lines:?}");
    assert!(!blob_file(dest.store.path(), &digest).exists());
    let (_, tags) = dest.get("/api/tags");
    assert_eq!(tags["models"], json!([]), "{tags}");
    // Nothing of the bad download is kept for a resume either.
    let leftovers: Vec<_> = std::fs::read_dir(dest.store.path().join("blobs"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains(&digest.replace(':', "-"))),
        "{leftovers:?}"
    );
}

#[test]
fn the_cli_pulls_and_run_pulls_a_missing_model() {
    let source = Server::with_smollm2();
    let dest = Server::start();
    // `wick run` has no length flag: the pulled model's own parameters bound the answer.
    let (status, r) = source
        .post(
            "/api/create",
            &json!({"model": "smollm2:short", "from": SMOLLM2, "stream": false,
                    "parameters": {"num_predict": 8, "temperature": 0}}),
        )
        .expect("create");
    assert_eq!(status, 200, "{r}");
    let name = remote_name(&source).replace(":135m", ":short");
    let wick = |args: &[&str]| wick_cli(&dest, args);
    // `run` of a model the server lacks pulls it first, then answers.
    let out = wick(&["run", "--insecure", &name, "Say hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pulling manifest") && stderr.contains("success"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    // `pull` of what is there: exit 0; of what is not: Ollama's message, exit 1.
    let out = wick(&["pull", "--insecure", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wick(&["pull", "--insecure", &name.replace("smollm2", "nothing")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Error: pull model manifest: file does not exist"));
}

#[test]
fn a_wick_pushes_to_a_wick_that_takes_pushes() {
    let source = with_qwen(&[]);
    let dest = Server::start_with_env(&[("WICK_REGISTRY_PUSH", "1")]);
    let closed = Server::start();
    let host = |s: &Server| s.base.trim_start_matches("http://").to_string();
    // As in Ollama, the model is named for its destination first.
    let target = format!("{}/library/pushed:v1", host(&dest));
    let (status, r) = source
        .post(
            "/api/copy",
            &json!({"source": QWEN_05B, "destination": target}),
        )
        .expect("copy");
    assert_eq!(status, 200, "{r}");

    let lines = source.stream("/api/push", &json!({"model": target, "insecure": true}));
    let s = statuses(&lines);
    assert_eq!(
        s.first().map(String::as_str),
        Some("retrieving manifest"),
        "{s:?}"
    );
    let tail: Vec<&str> = s[s.len() - 2..].iter().map(String::as_str).collect();
    assert_eq!(tail, ["pushing manifest", "success"], "{s:?}");
    for l in lines.iter().filter(|l| l["digest"].is_string()) {
        let digest = l["digest"].as_str().unwrap();
        assert_eq!(l["status"], format!("pushing {}", &digest[7..19]));
    }
    // The ~470 MB weights went up as a chunked upload of 32 MiB parts.
    let weights: Vec<u64> = lines
        .iter()
        .filter(|l| l["total"].as_u64() > Some(50 << 20))
        .filter_map(|l| l["completed"].as_u64())
        .filter(|&c| c > 0)
        .collect();
    let total = lines
        .iter()
        .filter_map(|l| l["total"].as_u64())
        .max()
        .unwrap_or(0);
    assert_eq!(
        weights.len(),
        total.div_ceil(32 << 20) as usize,
        "{weights:?}"
    );
    assert!(
        weights.iter().all(|&c| c == total || c % (32 << 20) == 0),
        "{weights:?}"
    );

    // The destination has the same model, and it answers.
    let (_, src_tags) = source.get("/api/tags");
    let (_, dst_tags) = dest.get("/api/tags");
    assert_eq!(dst_tags["models"][0]["name"], "pushed:v1", "{dst_tags}");
    assert_eq!(
        src_tags["models"][0]["digest"],
        dst_tags["models"][0]["digest"]
    );
    let (status, r) = dest
        .post(
            "/api/generate",
            &json!({"model": "pushed:v1", "prompt": "Hello", "stream": false, "options": greedy(4)}),
        )
        .expect("generate");
    assert_eq!(status, 200, "{r}");

    // A second push uploads nothing: every layer is already there.
    let again = source.stream("/api/push", &json!({"model": target, "insecure": true}));
    for l in again.iter().filter(|l| l["digest"].is_string()) {
        assert_eq!(l["completed"], l["total"], "{l}");
    }
    assert_eq!(again.last().unwrap()["status"], "success");

    // A server without WICK_REGISTRY_PUSH refuses, and keeps nothing.
    let refused = format!("{}/library/pushed:v1", host(&closed));
    source
        .post(
            "/api/copy",
            &json!({"source": QWEN_05B, "destination": refused}),
        )
        .expect("copy");
    let lines = source.stream("/api/push", &json!({"model": refused, "insecure": true}));
    let err = lines.last().unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("WICK_REGISTRY_PUSH"), "{lines:?}");
    let (_, tags) = closed.get("/api/tags");
    assert_eq!(tags["models"], json!([]));
    // A model that is not there: 404 before anything streams.
    let (status, r) = source
        .post(
            "/api/push",
            &json!({"model": "nothing:here", "insecure": true}),
        )
        .expect("push");
    assert_eq!(status, 404, "{r}");

    // The CLI pushes too.
    let wick = wick_cli;
    let out = wick(&source, &["push", "--insecure", &target]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("success"),
        "{stderr}"
    );

    // And `wick pull 127.0.0.1:PORT/library/qwen2.5-coder:0.5b --insecure` brings the
    // model from the first wick into a third, where it answers as it does at the source.
    let name = remote(&source, QWEN_05B);
    let out = wick(&closed, &["pull", &name, "--insecure"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("success"),
        "{stderr}"
    );
    let ask = |s: &Server, model: &str| {
        let (status, r) = s
            .post(
                "/api/generate",
                &json!({"model": model, "prompt": "def add(a, b):", "stream": false,
                        "options": greedy(8)}),
            )
            .expect("generate");
        assert_eq!(status, 200, "{r}");
        r["response"].as_str().unwrap_or_default().to_string()
    };
    let answer = ask(&closed, &name);
    assert!(!answer.is_empty());
    assert_eq!(answer, ask(&source, QWEN_05B));
}

#[test]
fn a_key_protected_wick_takes_pushes_and_pulls_only_with_its_key() {
    const KEY: &str = "registry-test-key";
    let dest = Server::start_with_env(&[("WICK_REGISTRY_PUSH", "1"), ("WICK_API_KEY", KEY)]);
    let with_key = Server::start_with_env(&[("WICK_REGISTRY_KEY", KEY)]);
    with_key.import_gguf(SMOLLM2, &common::smollm2_gguf());
    let without_key = Server::start();
    let target = format!(
        "{}/library/keyed:v1",
        dest.base.trim_start_matches("http://")
    );
    without_key.import_gguf(SMOLLM2, &common::smollm2_gguf());
    for s in [&with_key, &without_key] {
        let (status, r) = s
            .post(
                "/api/copy",
                &json!({"source": SMOLLM2, "destination": target}),
            )
            .expect("copy");
        assert_eq!(status, 200, "{r}");
    }
    let lines = without_key.stream("/api/push", &json!({"model": target, "insecure": true}));
    assert!(lines.last().unwrap()["error"].is_string(), "{lines:?}");
    let lines = with_key.stream("/api/push", &json!({"model": target, "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    // Pulling it back needs the key as well.
    let lines = without_key.stream("/api/pull", &json!({"model": target, "insecure": true}));
    assert!(lines.last().unwrap()["error"].is_string(), "{lines:?}");
    let lines = with_key.stream("/api/pull", &json!({"model": target, "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
}

#[test]
fn a_destination_killed_mid_pull_is_unharmed_and_pulls_again() {
    let source = Server::with_smollm2();
    let dest = Server::start();
    let name = remote_name(&source);
    let digest = model_blob(source.store.path(), &source);
    // Read the pull's progress as it streams; SIGKILL the destination once the model
    // layer is under way.
    read_pull_until(&dest, &name, |v| {
        v["digest"] == digest && v["completed"].as_u64() > Some(0)
    });
    let dest = dest.kill_and_restart();
    // Exactly as before or complete: never a model whose blobs are missing or wrong.
    let (_, tags) = dest.get("/api/tags");
    for m in tags["models"].as_array().expect("models") {
        let (status, r) = dest
            .post(
                "/api/generate",
                &json!({"model": m["name"], "prompt": "Hi", "stream": false, "options": greedy(2)}),
            )
            .expect("generate");
        assert_eq!(status, 200, "{r}");
    }
    // A blob in place is whole: only verified blobs are renamed into place.
    let blob = blob_file(dest.store.path(), &digest);
    if blob.exists() {
        assert_eq!(common::sha256_file(&blob), digest);
    }
    let partial = dest
        .store
        .path()
        .join("blobs")
        .join(format!(".wick-tmp-partial-{}", digest.replace(':', "-")));
    eprintln!(
        "after the kill: blob {}, partial {} bytes",
        blob.exists(),
        std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0)
    );
    // Pulling again completes, with the source's digest.
    let lines = dest.stream("/api/pull", &json!({"model": name, "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    assert_eq!(common::sha256_file(&blob), digest);
    let (_, src_tags) = source.get("/api/tags");
    let (_, dst_tags) = dest.get("/api/tags");
    assert_eq!(
        src_tags["models"][0]["digest"],
        dst_tags["models"][0]["digest"]
    );
}

/// Read a pull's progress lines as they stream until `stop` says so (or the stream
/// ends); the lines read.
fn read_pull_until(dest: &Server, name: &str, mut stop: impl FnMut(&Value) -> bool) -> Vec<Value> {
    use std::io::BufRead;
    let resp = dest
        .client
        .post(dest.url("/api/pull"))
        .json(&json!({"model": name, "insecure": true}))
        .send()
        .expect("pull");
    let mut reader = std::io::BufReader::new(resp);
    let mut lines = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return lines;
        }
        let v: Value = serde_json::from_str(&line).expect("json line");
        let done = stop(&v);
        lines.push(v);
        if done {
            return lines;
        }
    }
}

#[test]
fn a_source_killed_mid_pull_is_resumed_from_when_it_is_back() {
    let source = with_qwen(&[]);
    let dest = Server::start();
    let digest = model_blob_of(source.store.path(), &source, QWEN_05B);
    let name = remote(&source, QWEN_05B);
    // SIGKILL the source once the first parts of the weights are written.
    let lines = read_pull_until(&dest, &name, |v| {
        v["digest"] == digest && v["completed"].as_u64() > Some(0)
    });
    let source = source.kill_and_restart();
    assert!(!lines.is_empty());
    // Nothing of the interrupted pull is a model.
    let (_, tags) = dest.get("/api/tags");
    assert_eq!(tags["models"], json!([]), "{tags}");
    let partial = dest
        .store
        .path()
        .join("blobs")
        .join(format!(".wick-tmp-partial-{}", digest.replace(':', "-")));
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let size = std::fs::metadata(blob_file(source.store.path(), &digest))
        .expect("source blob")
        .len();
    eprintln!("after the source's kill: partial {kept} of {size} bytes");
    assert!(
        kept > 0 && kept < size,
        "the partial file keeps a part: {kept} of {size}"
    );

    // Pulled again from the restarted source: it resumes from the partial file (the
    // first line for the weights starts where the kill left it, so less than the whole
    // blob travels again) and ends with the source's digests.
    let name = remote(&source, QWEN_05B);
    let lines = dest.stream("/api/pull", &json!({"model": name, "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let first = lines
        .iter()
        .find(|l| l["digest"] == digest)
        .expect("a line for the model layer");
    let resumed = first["completed"].as_u64().unwrap_or(0);
    assert!(resumed >= kept && resumed > 0, "{first} (kept {kept})");
    assert_eq!(
        common::sha256_file(&blob_file(dest.store.path(), &digest)),
        digest
    );
    assert!(!partial.exists());
    let (_, src_tags) = source.get("/api/tags");
    let (_, dst_tags) = dest.get("/api/tags");
    assert_eq!(
        src_tags["models"][0]["digest"],
        dst_tags["models"][0]["digest"]
    );
}

#[test]
fn concurrent_pulls_of_one_model_share_its_download() {
    let source = Server::with_smollm2();
    let dest = Server::start();
    let name = remote_name(&source);
    let digest = model_blob(source.store.path(), &source);
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let client = dest.client.clone();
            let url = dest.url("/api/pull");
            let name = name.clone();
            std::thread::spawn(move || {
                let text = client
                    .post(url)
                    .json(&json!({"model": name, "insecure": true}))
                    .send()
                    .and_then(|r| r.text())
                    .expect("pull");
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
                    .collect::<Vec<Value>>()
            })
        })
        .collect();
    for pull in pulls {
        let lines = pull.join().expect("pull thread");
        assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
        // Each client saw the weights' progress run up to the whole blob, whichever of
        // the two did the downloading.
        let weights: Vec<u64> = lines
            .iter()
            .filter(|l| l["digest"] == digest)
            .filter_map(|l| l["completed"].as_u64())
            .collect();
        eprintln!("one client's progress on the weights: {weights:?}");
        assert!(
            weights.windows(2).all(|w| w[0] <= w[1]),
            "progress only grows: {weights:?}"
        );
        assert_eq!(
            weights.last(),
            lines
                .iter()
                .find(|l| l["digest"] == digest)
                .and_then(|l| l["total"].as_u64())
                .as_ref()
        );
    }
    assert_eq!(
        common::sha256_file(&blob_file(dest.store.path(), &digest)),
        digest
    );
    let leftovers: Vec<_> = std::fs::read_dir(dest.store.path().join("blobs"))
        .expect("blobs")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".wick-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
