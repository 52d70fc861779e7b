#!/usr/bin/env python3
"""Record llama.cpp's embeddings of decoder models, the reference for wick's decoder
embeddings (`crates/engine/tests/decoder_embed.rs`).

Ollama embeds with a decoder (a model with no `<arch>.pooling_type`) by taking llama.cpp's
output for the last token of the input: its final-normed hidden state. llama-server
(from the `xllamacpp` wheel) gives the same vector when started in embedding mode with
`last` pooling. For each model and text this records:

  * the input's token ids, from POST /tokenize with add_special=true (as llama-server
    tokenizes an embedding input);
  * the vector from POST /v1/embeddings (unit length), rounded to 7 decimals.

Usage (after scripts/fetch-models.sh and scripts/setup-bench-venv.sh):

  .venv-bench/bin/python scripts/record_decoder_embeddings.py [--cache models-cache]
      [--out assets/fixtures/llamacpp_decoder_embeddings.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))

from llamacpp_server import LlamaCppServer  # noqa: E402

MODELS = {
    "smollm2": "smollm2-135m-instruct-q4_1.gguf",
    "qwen2.5-coder": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The quick brown fox jumps over the lazy dog",
    "def add(a, b):\n    return a + b",
    "Ünïcödé text, emoji 🎉 and numbers 1234567",
    "Why is the sky blue? Because of Rayleigh scattering of sunlight in the atmosphere, "
    "which affects short wavelengths more than long ones.",
]


def record(path: Path) -> dict:
    import xllamacpp

    srv = LlamaCppServer(path, n_ctx=512, in_process=True, embedding=True,
                         pooling=int(xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_LAST))
    try:
        cases = []
        for text in TEXTS:
            ids = srv.post("/tokenize", {"content": text, "add_special": True,
                                         "parse_special": True})["tokens"]
            r = srv.post("/v1/embeddings", {"input": text})
            vec = r["data"][0]["embedding"]
            cases.append({"text": text, "ids": ids,
                          "embedding": [round(x, 7) for x in vec]})
        return {"file": path.name, "cases": cases, "version": srv.version}
    finally:
        srv.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=str(ROOT / "models-cache"))
    ap.add_argument("--out", default=str(ROOT / "assets/fixtures/llamacpp_decoder_embeddings.json"))
    a = ap.parse_args()
    models = {name: record(Path(a.cache) / file) for name, file in MODELS.items()}
    out = {
        "recorded_with": next(iter(models.values()))["version"],
        "method": "llama-server in embedding mode, pooling last; /tokenize add_special=true; "
                  "/v1/embeddings (unit length)",
        "command": ".venv-bench/bin/python scripts/record_decoder_embeddings.py",
        "models": models,
    }
    Path(a.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
