#!/usr/bin/env python3
"""Record llama.cpp's own quantization of a float model, the reference for wick's
`/api/create` `quantize` (crates/engine/tests/quantize.rs).

The float model is SmolLM2-135M's Q4_1 file dequantized to F16 by wick
(`cargo run --release -p wick-engine --example dequantize_gguf`); its sha256 is recorded
so the test knows it starts from the same bytes. For each file type, llama.cpp's
`llama_model_quantize` (through the `llama-cpp-python` wheel, built from source)
quantizes it; the fixture keeps each tensor's type and the sha256 of its bytes, then
llama.cpp greedily continues each prompt for 16 tokens, recording every step's token
and the margin between its two best logits.

Usage:
  cargo run --release -p wick-engine --example dequantize_gguf -- \\
      models-cache/smollm2-135m-instruct-q4_1.gguf /tmp/smol-f16.gguf
  <venv with llama-cpp-python>/bin/python scripts/record_quantize_fixture.py /tmp/smol-f16.gguf
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import llama_cpp
import numpy as np
from gguf import GGUFReader

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets/fixtures/llamacpp_quantize.json"
FTYPES = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
]
STEPS = 16


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def quantize(src: Path, dst: Path, ftype: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed: {rc}")


def tensors(path: Path) -> dict:
    """Each tensor's ggml type and the sha256 of its bytes, as llama.cpp wrote them."""
    return {t.name: {"type": t.tensor_type.name,
                     "sha256": hashlib.sha256(np.asarray(t.data).tobytes()).hexdigest()}
            for t in GGUFReader(str(path)).tensors}


def greedy(model: Path) -> list[dict]:
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, n_threads=2, logits_all=True,
                          verbose=False)
    cases = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        tokens, margins = [], []
        for _ in range(STEPS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top2 = np.argsort(logits)[-2:][::-1]
            tokens.append(int(top2[0]))
            margins.append(float(logits[top2[0]] - logits[top2[1]]))
            llm.eval([int(top2[0])])
        cases.append({"prompt": prompt, "prompt_ids": list(map(int, ids)), "tokens": tokens,
                      "margins": [round(m, 4) for m in margins]})
    return cases


def main() -> int:
    src = Path(sys.argv[1])
    out = {
        "recorded_with": f"llama-cpp-python {llama_cpp.__version__}",
        "method": "llama_model_quantize (no imatrix), then greedy decoding with llama.cpp; "
                  "margins are top-1 minus top-2 raw logits",
        "command": "scripts/record_quantize_fixture.py (see its docstring)",
        "f16_sha256": sha256(src),
        "types": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, ftype in FTYPES.items():
            dst = Path(tmp) / f"{name}.gguf"
            quantize(src, dst, ftype)
            out["types"][name] = {"size": dst.stat().st_size, "tensors": tensors(dst),
                                  "cases": greedy(dst)}
            print(f"{name}: {dst.stat().st_size} bytes", file=sys.stderr)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
