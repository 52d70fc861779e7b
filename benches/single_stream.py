#!/usr/bin/env python3
"""Single-stream speed: wick vs llama.cpp on the same GGUF file, prompt and token counts.

A benchmark, not a test. For each model it measures prefill tokens/s on a fixed
~512-token prompt and decode tokens/s over 128 generated tokens, median of N runs
after one warm-up request, for:

  llama.cpp  llama-server embedded in the `xllamacpp` wheel (n_ctx 4096, 2 threads, one
             slot), run in a child process (benches/llamacpp_server.py), POST
             /completion, read from its "timings" (prompt_per_second,
             predicted_per_second);
  wick       `wick serve` (spawned with OLLAMA_HOST=127.0.0.1:<free port> and
             OLLAMA_MODELS=<--models>, or an already running one given by --wick-url),
             POST /api/generate raw, read from Ollama's final fields prompt_eval_count,
             prompt_eval_duration (ns), eval_count, eval_duration (ns).

Load: llama.cpp's is the time its child takes to construct the server (map and load
the model, warm up); wick's is the `load_duration` of the first request after the
model was imported (a cold load; the file is in the page cache for both).

Peak RSS: VmHWM of each server process. llama.cpp: one child per model (it includes
the child's Python interpreter and the xllamacpp import, printed as "baseline").
A spawned wick serves both models: its VmHWM is reset (/proc/<pid>/clear_refs) before
each model and the model is unloaded after it, so each row is that model's peak. A
wick given by --wick-url is found by its listening port; its VmHWM is the peak since
it started (marked "since start").

Engines run one after the other, never at the same time. Each timed run puts a
distinct same-length marker ("[run 1]", ...) at the start of the prompt so neither
engine can reuse a cached prompt prefix.

Usage (after scripts/fetch-models.sh and scripts/setup-bench-venv.sh):
  .venv-bench/bin/python benches/single_stream.py --only-llamacpp
  .venv-bench/bin/python benches/single_stream.py --models <ollama store dir>
  .venv-bench/bin/python benches/single_stream.py --wick-url http://127.0.0.1:11434

The machine must be otherwise idle: llama.cpp's spinning thread pool slows down by
orders of magnitude when another process (e.g. a cargo build) holds the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_server import LlamaCppServer, fmt_mib  # noqa: E402
from wick_server import Wick  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# (short key, GGUF file in the model cache, wick / Ollama model name)
MODELS = [
    ("smollm2", "smollm2-135m-instruct-q4_1.gguf", "smollm2:135m"),
    ("qwen", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder:0.5b"),
    # Realistic size; fetched only by `scripts/fetch-models.sh --with-bench`.
    ("qwen15", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "qwen2.5-coder:1.5b"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf", "gemma3:270m"),
]

PARAGRAPH = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a "
    "small brass lamp and a notebook filled with observations about the weather, the "
    "passing ships, and the migrating birds that rested on the rocks below. Over many "
    "years he recorded the slow changes of the coastline, the storms that reshaped the "
    "beach, and the quiet mornings when the sea was as flat as glass. "
)

N_CTX = 4096
N_THREADS = 2
REQUEST_TIMEOUT = 900


@dataclass
class Sample:
    prompt_tokens: int
    prefill_tps: float
    gen_tokens: int
    decode_tps: float


@dataclass
class Result:
    model: str
    engine: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    peak_rss_kb: int | None = None
    rss_note: str = ""
    load_s: float | None = None

    def median(self, attr: str) -> float | None:
        vals = [getattr(s, attr) for s in self.samples]
        return statistics.median(vals) if vals else None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its reaped children (llama.cpp, wick)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def marker(run: int) -> str:
    # Same token count for every run number 0..9 in all our tokenizers (digits are
    # single tokens in SmolLM2's and Qwen2's pre-tokenizers).
    return f"[run {run}] "


# --------------------------------------------------------------------------- llama.cpp
class LlamaCpp(LlamaCppServer):
    def __init__(self, path: Path):
        super().__init__(path, n_ctx=N_CTX, n_parallel=1, threads=N_THREADS)

    def run(self, prompt: str, n_predict: int) -> Sample:
        r = self.post("/completion", {
            "prompt": prompt, "n_predict": n_predict, "temperature": 0, "top_k": 1,
            "seed": 1, "ignore_eos": True, "stop": [], "cache_prompt": False,
        })
        t = r["timings"]
        if t.get("cache_n", 0):
            raise RuntimeError(f"llama.cpp reused {t['cache_n']} cached prompt tokens")
        return Sample(t["prompt_n"], t["prompt_per_second"], t["predicted_n"],
                      t["predicted_per_second"])


def build_prompt(count_tokens, target: int) -> tuple[str, int]:
    """Shortest repetition of PARAGRAPH (cut after a word) whose prompt, with the run
    marker, has at least `target` tokens as llama.cpp counts them."""
    source = PARAGRAPH.split()
    words: list[str] = []

    def count(ws: list[str]) -> int:
        return count_tokens(marker(0) + " ".join(ws))

    # Whole paragraphs while they stay under the target, then word by word.
    while count(words + source) < target:
        words += source
    n = count(words)
    for w in source:
        if n >= target:
            break
        words.append(w)
        n = count(words)
    return " ".join(words), n


def bench_llamacpp(path: Path, key: str, target_tokens: int, n_predict: int,
                   runs: int) -> tuple[Result, str, int]:
    res = Result(key, "llama.cpp")
    prompt, n_tokens = "", 0
    log(f"[{key}] llama.cpp: loading {path.name}")
    try:
        srv = LlamaCpp(path)
    except Exception as e:  # noqa: BLE001
        res.error = f"{type(e).__name__}: {e}"
        return res, prompt, n_tokens
    try:
        res.engine = f"llama.cpp ({srv.version})"
        res.load_s = srv.load_seconds
        prompt, n_tokens = build_prompt(srv.count_tokens, target_tokens)
        log(f"[{key}] prompt: {n_tokens} tokens ({len(prompt)} chars); warm-up")
        srv.run(marker(0) + prompt, n_predict)
        for i in range(1, runs + 1):
            s = srv.run(marker(i) + prompt, n_predict)
            log(f"[{key}] llama.cpp run {i}: prefill {s.prompt_tokens} tok "
                f"{s.prefill_tps:.1f} tok/s, decode {s.gen_tokens} tok {s.decode_tps:.1f} tok/s")
            res.samples.append(s)
    except Exception as e:  # noqa: BLE001 - report and go on to the next model
        res.error = f"{type(e).__name__}: {e}"
    finally:
        srv.close()
        res.peak_rss_kb = srv.peak_rss_kb()
        if srv.baseline_rss_kb is not None:
            res.rss_note = f"baseline {fmt_mib(srv.baseline_rss_kb)}"
    return res, prompt, n_tokens


# --------------------------------------------------------------------------- wick
class WickBench(Wick):
    # `load_duration` (s) of the last request.
    last_load_s: float | None = None

    def run(self, model: str, prompt: str, n_predict: int) -> Sample:
        body = {"model": model, "prompt": prompt, "raw": True, "stream": False,
                "options": {"temperature": 0, "num_predict": n_predict, "seed": 1}}
        r = requests.post(self.base + "/api/generate", json=body, timeout=REQUEST_TIMEOUT)
        if r.status_code != 200:
            raise RuntimeError(f"wick /api/generate -> {r.status_code}: {r.text[:300]}")
        j = r.json()
        self.last_load_s = j.get("load_duration", 0) / 1e9
        missing = [k for k in ("prompt_eval_count", "prompt_eval_duration", "eval_count",
                               "eval_duration") if not j.get(k)]
        if missing:
            raise RuntimeError(f"wick response lacks/zero {missing}: "
                               f"{ {k: v for k, v in j.items() if k != 'context'} }")
        return Sample(j["prompt_eval_count"], j["prompt_eval_count"] / (j["prompt_eval_duration"] / 1e9),
                      j["eval_count"], j["eval_count"] / (j["eval_duration"] / 1e9))


def bench_wick(wick: WickBench, key: str, name: str, prompt: str, n_prompt: int | None,
               n_predict: int, runs: int) -> Result:
    res = Result(key, "wick")
    wick.reset_peak_rss()
    try:
        if not wick.has_model(name):
            raise RuntimeError(f"model {name} not in wick's store (/api/tags)")
        log(f"[{key}] wick: warm-up ({name})")
        wick.run(name, marker(0) + prompt, n_predict)
        res.load_s = wick.last_load_s
        for i in range(1, runs + 1):
            s = wick.run(name, marker(i) + prompt, n_predict)
            log(f"[{key}] wick run {i}: prefill {s.prompt_tokens} tok {s.prefill_tps:.1f} tok/s, "
                f"decode {s.gen_tokens} tok {s.decode_tps:.1f} tok/s")
            if n_prompt is not None and s.prompt_tokens != n_prompt:
                log(f"[{key}] WARNING: wick counted {s.prompt_tokens} prompt tokens, "
                    f"llama.cpp {n_prompt}")
            if s.gen_tokens != n_predict:
                log(f"[{key}] WARNING: wick generated {s.gen_tokens} tokens, not {n_predict}")
            res.samples.append(s)
    except Exception as e:  # noqa: BLE001
        res.error = f"{type(e).__name__}: {e}"
        tail = wick.log_tail()
        if tail:
            log(tail)
    res.peak_rss_kb = wick.peak_rss_kb()
    if not wick.spawned:
        res.rss_note = "since start" if res.peak_rss_kb is not None else "pid not found"
    else:
        wick.unload(name)
    return res


# --------------------------------------------------------------------------- report
def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(results: list[Result]) -> str:
    rows = ["| model | engine | prefill tok/s | decode tok/s | ratio wick/llama.cpp | load s | peak RSS |",
            "|---|---|---:|---:|---|---:|---:|"]
    by_model: dict[str, dict[str, Result]] = {}
    for r in results:
        by_model.setdefault(r.model, {})["wick" if r.engine == "wick" else "llama"] = r
    for model, d in by_model.items():
        llama, wick = d.get("llama"), d.get("wick")
        for r in (llama, wick):
            if r is None:
                continue
            rss = fmt_mib(r.peak_rss_kb) + (f" ({r.rss_note})" if r.rss_note else "")
            if r.error:
                rows.append(f"| {model} | {r.engine} | - | - | error: "
                            f"{r.error.splitlines()[0][:120]} | - | {rss} |")
                continue
            ratio = ""
            if r is wick and llama is not None and not llama.error and llama.samples:
                ratio = (f"prefill {r.median('prefill_tps') / llama.median('prefill_tps'):.2f}x, "
                         f"decode {r.median('decode_tps') / llama.median('decode_tps'):.2f}x")
            elif r is llama:
                ratio = "1.00x (baseline)"
            load = "-" if r.load_s is None else f"{r.load_s:.2f}"
            rows.append(f"| {model} | {r.engine} | {fmt(r.median('prefill_tps'))} | "
                        f"{fmt(r.median('decode_tps'))} | {ratio} | {load} | {rss} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description="wick vs llama.cpp single-stream speed")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("WICK_MODEL_CACHE", REPO / "models-cache")),
                    help="GGUF model cache (scripts/fetch-models.sh)")
    ap.add_argument("--models", type=Path, default=None,
                    help="wick's model store, passed as OLLAMA_MODELS to a spawned wick")
    ap.add_argument("--wick-bin", type=Path, default=REPO / "target" / "release" / "wick")
    ap.add_argument("--wick-url", default=None,
                    help="use an already running wick at this URL instead of spawning one")
    ap.add_argument("--only-llamacpp", action="store_true")
    ap.add_argument("--only-wick", action="store_true")
    ap.add_argument("--model", action="append", choices=[m[0] for m in MODELS],
                    help="restrict to these models (repeatable)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None, help="also write the raw samples here")
    args = ap.parse_args()
    if args.only_llamacpp and args.only_wick:
        ap.error("--only-llamacpp and --only-wick exclude each other")
    if not 1 <= args.runs <= 9:
        ap.error("--runs must be between 1 and 9")

    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        log(f"WARNING: load average {load1:.2f}: another process is using the CPU; "
            f"numbers will be unreliable")

    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.monotonic()
    models = [m for m in MODELS if not args.model or m[0] in args.model]
    results: list[Result] = []
    prompts: dict[str, tuple[str, int | None]] = {}

    if not args.only_wick:
        for key, fname, _ in models:
            path = args.cache / fname
            if not path.exists():
                results.append(Result(key, "llama.cpp", error=f"{path} missing (fetch-models.sh)"))
                continue
            res, prompt, n = bench_llamacpp(path, key, args.prompt_tokens, args.n_predict,
                                            args.runs)
            results.append(res)
            if prompt:
                prompts[key] = (prompt, n)

    if not args.only_llamacpp:
        wick = None
        try:
            # Without a store or URL: a temporary store with the models imported from
            # the cache, as load.py does.
            wick = WickBench(args.wick_url, args.wick_bin, args.models,
                             temp_store=not args.wick_url and args.models is None)
            for key, fname, name in models:
                if wick.spawned and not wick.has_model(name):
                    wick.import_gguf(name, args.cache / fname)
                if key not in prompts:
                    # Without llama.cpp's tokenizer: the same text, token count unchecked.
                    reps = max(1, round(args.prompt_tokens / 75))
                    prompts[key] = ((PARAGRAPH * reps).strip(), None)
                prompt, n = prompts[key]
                results.append(bench_wick(wick, key, name, prompt, n, args.n_predict,
                                          args.runs))
        except Exception as e:  # noqa: BLE001
            for key, _, _ in models:
                results.append(Result(key, "wick", error=f"{type(e).__name__}: {e}"))
        finally:
            if wick is not None:
                wick.close()

    wall = time.monotonic() - wall0
    busy1 = busy_cpu_seconds()
    foreign = None if busy0 is None or busy1 is None else \
        max(0.0, (busy1 - busy0) - (own_cpu_seconds() - own0))
    print()
    if foreign is not None:
        share = foreign / max(wall * (os.cpu_count() or 1), 1e-9)
        note = "" if share < 0.05 else "  <-- WARNING: other processes used the CPU; rerun"
        print(f"other processes used {foreign:.1f} CPU-s during the {wall:.0f} s run "
              f"({share:.0%} of the machine){note}")
    print(f"single stream, {args.prompt_tokens}-token prompt, {args.n_predict} generated "
          f"tokens, median of {args.runs}, {N_THREADS} threads, load avg at start "
          f"{load1:.2f}, at end {os.getloadavg()[0]:.2f}")
    print()
    print(table(results))
    print()
    for r in results:
        if r.samples:
            print(f"- {r.model} / {r.engine}: prompt tokens {[s.prompt_tokens for s in r.samples]}, "
                  f"generated {[s.gen_tokens for s in r.samples]}, prefill "
                  f"{[round(s.prefill_tps, 1) for s in r.samples]}, decode "
                  f"{[round(s.decode_tps, 1) for s in r.samples]}")
    if args.json:
        args.json.write_text(json.dumps([{
            "model": r.model, "engine": r.engine, "error": r.error,
            "peak_rss_kb": r.peak_rss_kb, "rss_note": r.rss_note, "load_s": r.load_s,
            "samples": [s.__dict__ for s in r.samples]} for r in results], indent=1) + "\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
