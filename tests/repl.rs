//! The interactive `wick run` under a pseudo-terminal: `"""` multi-line input,
//! `/set parameter`, `/show info`, a chat with the real model wrapped to a narrow
//! terminal, `/set nowordwrap`, history, a line typed ahead with `/bye`
//! (`tests/python/repl_check.py`, standard library only).

mod common;

use std::process::Command;

use common::{Server, SMOLLM2};

#[test]
fn interactive_run_under_a_terminal() {
    let Some(python) = std::env::var_os("WICK_TEST_PYTHON") else {
        eprintln!("SKIPPED: WICK_TEST_PYTHON is not set; run scripts/test.sh, which sets it");
        return;
    };
    let server = Server::with_smollm2();
    let home = tempfile::tempdir().expect("a home for the history file");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/repl_check.py");
    let out = Command::new(python)
        .arg(script)
        .env("WICK_BIN", env!("CARGO_BIN_EXE_wick"))
        .env("OLLAMA_HOST", &server.base)
        .env("WICK_TEST_MODEL", SMOLLM2)
        .env("HOME", home.path())
        .env_remove("WICK_API_KEY")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the REPL session failed");
    assert!(stdout.contains("passed, 0 failed"));
}
