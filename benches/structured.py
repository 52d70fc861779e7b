#!/usr/bin/env python3
"""Structured-output benchmark: decode speed with and without a JSON schema.

A benchmark, not a test. For each model and each concurrency N (--clients 1,8) it runs
rounds against a wick server, alternating (--repeat times each): N concurrent streaming
/api/chat requests without a format, then the same N requests with
`"format": <JSON schema>` (an unbounded list of
people with name, age, city and tags, so every client keeps generating until
num_predict). Temperature 0.8 with a fixed seed per client, --num-predict tokens each.

Per round it reports
  decode tok/s per client   eval_count / eval_duration from the final response,
                            median over clients (prefill excluded)
  aggregate decode tok/s    the sum of the per-client rates
  (each the median over the --repeat rounds: a busy machine moves single rounds by
  20% and more)
  valid                     how many schema answers parse as JSON (answers cut by
                            num_predict end with done_reason "length" and are counted
                            apart)
and the overhead ratio schema/plain of the aggregate rate at each N.

  wick  --wick-url of a running `wick serve`, or --wick-bin to spawn one on a free port
        with a temporary OLLAMA_MODELS (models imported with `wick create`, as
        scripts/serve.sh does) and OLLAMA_NUM_PARALLEL = the largest N.

Usage (after scripts/fetch-models.sh):
  python3 benches/structured.py --wick-bin target/release/wick
  python3 benches/structured.py --wick-url http://127.0.0.1:11434 --model qwen --clients 1

Needs only `requests`. The machine should be otherwise idle.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wick_server import Wick  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT = 900

MODELS = [
    ("smollm2", "smollm2-135m-instruct-q4_1.gguf", "smollm2:135m"),
    ("qwen", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder:0.5b"),
]

SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "city": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "age", "city", "tags"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}

TOPICS = ["a football team", "a school class", "a jazz band", "a hospital ward",
          "a chess club", "a film crew", "a research lab", "a bakery",
          "a choir", "a ship's crew", "a startup", "a library staff",
          "a farm", "a theatre troupe", "a fire station", "a newsroom"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one(base: str, model: str, i: int, fmt: dict | None, n_predict: int,
        barrier: threading.Barrier, out: list) -> None:
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content":
                      f"List the members of {TOPICS[i % len(TOPICS)]} as JSON: "
                      "name, age, city and tags of each."}],
        "options": {"temperature": 0.8, "seed": 100 + i, "num_predict": n_predict},
    }
    if fmt is not None:
        body["format"] = fmt
    barrier.wait()
    text, final = [], None
    try:
        with requests.post(base + "/api/chat", json=body, stream=True,
                           timeout=REQUEST_TIMEOUT) as r:
            if r.status_code != 200:
                out[i] = {"error": f"HTTP {r.status_code}: {r.text[:300]}"}
                return
            for line in r.iter_lines():
                if not line:
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    out[i] = {"error": msg["error"]}
                    return
                text.append(msg.get("message", {}).get("content", ""))
                if msg.get("done"):
                    final = msg
    except requests.RequestException as e:
        out[i] = {"error": str(e)}
        return
    if final is None:
        out[i] = {"error": "no final message"}
        return
    out[i] = {"text": "".join(text), "eval_count": final.get("eval_count", 0),
              "eval_duration": final.get("eval_duration", 0),
              "done_reason": final.get("done_reason")}


def round_(base: str, model: str, n: int, fmt: dict | None, n_predict: int) -> dict:
    out: list = [None] * n
    barrier = threading.Barrier(n)
    threads = [threading.Thread(target=one, args=(base, model, i, fmt, n_predict, barrier, out))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o["error"] for o in out if o and "error" in o]
    if errors:
        return {"error": errors[0]}
    rates = [o["eval_count"] / (o["eval_duration"] / 1e9) for o in out if o["eval_duration"]]
    valid = length = 0
    for o in out:
        if o["done_reason"] == "length":
            length += 1
            continue
        try:
            json.loads(o["text"])
            valid += 1
        except ValueError:
            pass
    return {"per_client": statistics.median(rates) if rates else 0.0,
            "aggregate": sum(rates), "tokens": sum(o["eval_count"] for o in out),
            "valid": valid, "length": length, "n": n}


def median_round(rounds: list[dict]) -> dict:
    """The round with the median aggregate rate (the first error if any failed)."""
    for r in rounds:
        if "error" in r:
            return r
    ordered = sorted(rounds, key=lambda r: r["aggregate"])
    return ordered[len(ordered) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description="wick decode speed with and without a schema")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("WICK_MODEL_CACHE", REPO / "models-cache")))
    ap.add_argument("--wick-bin", type=Path, default=REPO / "target" / "release" / "wick")
    ap.add_argument("--wick-url", default=None)
    ap.add_argument("--model", action="append", choices=[m[0] for m in MODELS])
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--num-predict", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of each kind per N")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if not clients or min(clients) < 1 or max(clients) > 64:
        ap.error("--clients: numbers between 1 and 64")
    if os.getloadavg()[0] > 0.5:
        log(f"WARNING: load average {os.getloadavg()[0]:.2f}: numbers will be unreliable")
    models = [m for m in MODELS if not args.model or m[0] in args.model]
    wick = Wick(args.wick_url, args.wick_bin, temp_store=args.wick_url is None,
                env={"OLLAMA_NUM_PARALLEL": str(max(clients))})
    results = []
    try:
        for key, fname, name in models:
            path = args.cache / fname
            if not path.exists():
                log(f"{path} missing (scripts/fetch-models.sh); skipping {key}")
                continue
            if wick.spawned:
                wick.import_gguf(name, path)
            warm = round_(wick.base, name, 1, SCHEMA, 8)  # load the model, build its trie
            if "error" in warm:
                log(f"{key}: {warm['error']}")
                continue
            for n in clients:
                plains, schemas = [], []
                for _ in range(max(1, args.repeat)):
                    plains.append(round_(wick.base, name, n, None, args.num_predict))
                    schemas.append(round_(wick.base, name, n, SCHEMA, args.num_predict))
                plain, schema = median_round(plains), median_round(schemas)
                results.append({"model": key, "clients": n, "plain": plain, "schema": schema})
                log(f"{key} N={n}: plain {plain} schema {schema}")
            if wick.spawned:
                wick.unload(name)
    finally:
        wick.close()

    print(f"{'model':<8} {'N':>3} {'plain/client':>12} {'schema/client':>13} "
          f"{'plain agg':>10} {'schema agg':>10} {'ratio':>6} {'valid':>7}")
    for r in results:
        p, s = r["plain"], r["schema"]
        if "error" in p or "error" in s:
            print(f"{r['model']:<8} {r['clients']:>3} error: {p.get('error') or s.get('error')}")
            continue
        ratio = s["aggregate"] / p["aggregate"] if p["aggregate"] else float("nan")
        print(f"{r['model']:<8} {r['clients']:>3} {p['per_client']:>12.1f} "
              f"{s['per_client']:>13.1f} {p['aggregate']:>10.1f} {s['aggregate']:>10.1f} "
              f"{ratio:>6.3f} {s['valid']:>3}/{s['n'] - s['length']:<3}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
