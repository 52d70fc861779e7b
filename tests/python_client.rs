//! The official `ollama` Python package against a real `wick serve` with SmolLM2.
//! `scripts/test.sh` installs the package into `.venv-test` and sets `WICK_TEST_PYTHON`.

mod common;

use std::process::Command;

use common::{smollm2_gguf, Server, SMOLLM2};

#[test]
fn official_python_client_works_end_to_end() {
    let Some(python) = std::env::var_os("WICK_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: WICK_TEST_PYTHON is not set; run scripts/test.sh, which installs the \
             ollama package and sets it"
        );
        return;
    };
    let server = Server::with_smollm2();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let out = Command::new(python)
        .arg(script)
        .env("OLLAMA_HOST", &server.base)
        .env("WICK_TEST_MODEL", SMOLLM2)
        .env("WICK_TEST_GGUF", smollm2_gguf())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python client checks failed");
    assert!(stdout.contains("passed, 0 failed"));
}
