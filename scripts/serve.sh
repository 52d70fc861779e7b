#!/usr/bin/env bash
# Set up and run wick on a fresh machine (README, first command): fetch and verify the
# real models, build the release binary, start `wick serve` on $OLLAMA_HOST (default
# 127.0.0.1:11434) with the store at $OLLAMA_MODELS (default ~/.ollama/models), import
# the models under Ollama's library names, then keep serving in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

bash scripts/fetch-models.sh
cache="${WICK_MODEL_CACHE:-$repo/models-cache}"
cargo build --release --bin wick
wick="$repo/target/release/wick"

export OLLAMA_HOST="${OLLAMA_HOST:-127.0.0.1:11434}"
"$wick" serve &
server=$!
trap 'kill "$server" 2>/dev/null || true' INT TERM EXIT

for _ in $(seq 1 100); do
    if "$wick" list >/dev/null 2>&1; then break; fi
    sleep 0.1
done

import() {
    local name="$1" file="$2"
    if "$wick" list | awk 'NR > 1 {print $1}' | grep -qx "$name"; then
        echo "$name is already in the store"
        return
    fi
    local modelfile
    modelfile=$(mktemp)
    printf 'FROM %s\n' "$file" >"$modelfile"
    "$wick" create "$name" -f "$modelfile"
    rm -f "$modelfile"
}
import smollm2:135m "$cache/smollm2-135m-instruct-q4_1.gguf"
import qwen2.5-coder:0.5b "$cache/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
import all-minilm:l6-v2 "$cache/all-minilm-l6-v2"

echo "wick is serving on $OLLAMA_HOST with: $("$wick" list | awk 'NR > 1 {print $1}' | tr '\n' ' ')"
wait "$server"
