#!/usr/bin/env python3
"""Record MXFP4 blocks as llama.cpp's gguf-py quantizes and dequantizes them.

gguf-py's `MXFP4` mirrors ggml's `quantize_row_mxfp4_ref` and `dequantize_row_mxfp4`
(scale exponent floor(log2 amax) - 2, nearest doubled-E2M1 level, first on a tie). The
blocks below (fixed seed) span magnitudes from subnormal to large, exact level ties, zero
and constant blocks. Each line of crates/kernels/tests/fixtures/mxfp4.txt is one block:
its 32 inputs as f32 bit patterns, `|`, the 17 quantized bytes, `|`, the 32 dequantized
values' bit patterns. `mxfp4_reference.rs` checks wick's quantizer and dequantizer
against them.

Usage (after scripts/setup-bench-venv.sh and `pip install gguf`):
  .venv-bench/bin/python scripts/record_mxfp4_fixture.py
"""
from pathlib import Path

import numpy as np
from gguf.quants import MXFP4

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "crates/kernels/tests/fixtures/mxfp4.txt"


def blocks() -> np.ndarray:
    rng = np.random.default_rng(20261207)
    out = [rng.standard_normal(32) * scale for scale in (1e-3, 0.02, 0.1, 1.0, 7.0, 300.0)]
    out += [rng.uniform(-1, 1, 32) * 2.0 ** rng.integers(-20, 20) for _ in range(10)]
    out.append(np.zeros(32))
    out.append(np.full(32, 0.375))
    out.append(np.full(32, -1e-39))  # subnormal
    # Values halfway between levels at scale 2^-4 (amax 0.75): the first level wins.
    mid = np.array([0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0, 12.0] * 4) / 16.0
    out.append(mid * np.repeat([1.0, -1.0], 16))
    return np.stack(out).astype(np.float32)


def main() -> None:
    x = blocks()
    q = MXFP4.quantize_blocks(x)
    d = MXFP4.dequantize_blocks(q).astype(np.float32)
    lines = []
    for xi, qi, di in zip(x, q, d):
        ins = " ".join(f"{v:08x}" for v in xi.view(np.uint32))
        outs = " ".join(f"{v:08x}" for v in di.view(np.uint32))
        lines.append(f"{ins} | {bytes(qi).hex()} | {outs}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} blocks to {OUT}")


if __name__ == "__main__":
    main()
