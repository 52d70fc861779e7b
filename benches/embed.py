#!/usr/bin/env python3
"""Embeddings: batching speed-up, and parity of wick's vectors with llama.cpp's.

  (a) `ollama.embed` with N inputs (default 64) as ONE request, against the same N
      inputs as N requests one after another: median wall time of each over
      --rounds, and the ratio (issue 9's goal: >= 4x).
  (b) wick's vectors against llama.cpp's embedding of the SAME GGUF file (the one
      wick's /api/create wrote when it imported the safetensors folder): llama-server
      from the xllamacpp wheel in embedding mode, pooled as the GGUF says, its
      /v1/embeddings (normalized, as wick's). Cosine per input; goal >= 0.999.

The model is all-MiniLM-L6-v2, imported into a temporary wick store from
models-cache/all-minilm-l6-v2 (WICK_MODEL_CACHE overrides models-cache) through
/api/blobs + /api/create, as Ollama's CLI imports a safetensors folder. Inputs are
seeded sentences of 4 to 40 words. wick and llama.cpp never run at the same time.

    .venv-bench/bin/python benches/embed.py [--n 64] [--rounds 3] [--skip-llamacpp]

Needs .venv-bench (scripts/setup-bench-venv.sh: xllamacpp, requests, ollama) and
`cargo build --release --bin wick`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_server import LlamaCppServer, log  # noqa: E402
from wick_server import Wick  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL = "all-minilm:l6-v2"
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "1_Pooling/config.json"]
WORDS = ("the a man woman child dog cat city river mountain eats reads builds sees "
         "quickly slowly bright dark old new red green music science history market "
         "train station garden computer language model question answer because while "
         "under over near far small large quiet loud morning evening").split()


def sentences(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 40))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def model_dir() -> Path:
    cache = Path(os.environ.get("WICK_MODEL_CACHE", REPO / "models-cache"))
    d = cache / "all-minilm-l6-v2"
    if not d.exists():
        sys.exit(f"{d} is missing: run scripts/fetch-models.sh")
    return d


def import_minilm(wick: Wick) -> None:
    files = {}
    for rel in FILES:
        data = (model_dir() / rel).read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{wick.base}/api/blobs/{digest}", data=data, timeout=600)
        r.raise_for_status()
        files[rel] = digest
    r = requests.post(f"{wick.base}/api/create",
                      json={"model": MODEL, "files": files, "stream": False}, timeout=600)
    if r.status_code != 200:
        raise RuntimeError(f"create failed: {r.status_code} {r.text}")


def gguf_blob(store: Path) -> Path:
    """The GGUF layer of the imported model in wick's store."""
    manifest = store / "manifests/registry.ollama.ai/library/all-minilm/l6-v2"
    layers = json.loads(manifest.read_text())["layers"]
    digest = next(l["digest"] for l in layers
                  if l["mediaType"] == "application/vnd.ollama.image.model")
    return store / "blobs" / digest.replace(":", "-")


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="inputs (default 64)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wick-binary", type=Path, default=REPO / "target/release/wick")
    ap.add_argument("--skip-llamacpp", action="store_true", help="only part (a)")
    ap.add_argument("--skip-timing", action="store_true", help="only part (b)")
    args = ap.parse_args()
    import ollama

    texts = sentences(args.n)
    wick = Wick(None, args.wick_binary, temp_store=True)
    try:
        import_minilm(wick)
        client = ollama.Client(host=wick.base, timeout=900)
        client.embed(model=MODEL, input=texts[:2])  # load and warm up
        rows = []
        if not args.skip_timing:
            batch = [timed(lambda: client.embed(model=MODEL, input=texts))
                     for _ in range(args.rounds)]
            single = [timed(lambda: [client.embed(model=MODEL, input=t) for t in texts])
                      for _ in range(args.rounds)]
            b, s = statistics.median(batch), statistics.median(single)
            rows.append(("one request, %d inputs" % args.n, b))
            rows.append(("%d requests, one input each" % args.n, s))
            print(f"\n## (a) batching, {args.n} inputs, median of {args.rounds}\n")
            print("| how | seconds | inputs/s |\n|---|---:|---:|")
            for name, t in rows:
                print(f"| {name} | {t:.3f} | {args.n / t:.1f} |")
            print(f"\nspeed-up of one batched request: **{s / b:.2f}x** (goal >= 4x)")
        wick_vectors = client.embed(model=MODEL, input=texts).embeddings
        gguf = gguf_blob(wick.tmp_store)
        if args.skip_llamacpp:
            return 0
        # Copy the GGUF out before the store goes away with wick.
        local = Path(os.environ.get("TMPDIR", "/tmp")) / "wick-bench-minilm.gguf"
        local.write_bytes(gguf.read_bytes())
    finally:
        wick.close()

    try:
        with LlamaCppServer(local, n_ctx=512, embedding=True) as srv:
            log(f"llama.cpp {srv.version} on {local}")
            r = srv.post("/v1/embeddings", {"input": texts})
            ref = [d["embedding"] for d in sorted(r["data"], key=lambda d: d["index"])]
            if not args.skip_timing:
                # The same batched-vs-single comparison on llama.cpp, for scale.
                batch = [timed(lambda: srv.post("/v1/embeddings", {"input": texts}))
                         for _ in range(args.rounds)]
                single = [timed(lambda: [srv.post("/v1/embeddings", {"input": t})
                                         for t in texts]) for _ in range(args.rounds)]
                b, s = statistics.median(batch), statistics.median(single)
                print(f"\nllama.cpp, same inputs: one request {b:.3f} s, {args.n} requests "
                      f"{s:.3f} s: **{s / b:.2f}x**")
    finally:
        local.unlink(missing_ok=True)
    cos = [cosine(a, b) for a, b in zip(wick_vectors, ref)]
    print(f"\n## (b) wick vs llama.cpp on the same GGUF, {len(cos)} inputs\n")
    print("| min cosine | 1 - min cosine | mean cosine | inputs >= 0.999 |\n|---:|---:|---:|---:|")
    print(f"| {min(cos):.6f} | {1 - min(cos):.2e} | {statistics.fmean(cos):.6f} | "
          f"{sum(c >= 0.999 for c in cos)}/{len(cos)} |")
    return 0 if min(cos) >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
