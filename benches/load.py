#!/usr/bin/env python3
"""Load benchmark (continuous batching): N concurrent streaming clients, wick vs llama.cpp.

A benchmark, not a test. For each model and each concurrency N (--clients 1,2,4,8,16)
it starts N streaming requests at once (a barrier releases N threads, each with its
connection already open), each with a different fixed prompt (PROMPTS: 16
continuation-style texts of about 70 to 300 tokens), greedy (temperature 0, seed 1),
--num-predict tokens (default 64), and measures per client:

  TTFT  request sent -> first streamed chunk with non-empty text
  ITL   gaps between successive chunks with non-empty text
  tokens generated, from the server's final counters

and, just before each run, the engine's prompt speed alone (one request of about 480
tokens, `probe_prompt`, that shares no prefix with the clients' prompts: prompt tokens
over the server's reported prompt time). The TTFT bound of a run is every client's
prompt tokens at that speed: no schedule can give the last client its first token
sooner; the table shows TTFT p99 over it.

and per run: aggregate tokens/s = all generated tokens / (last completion - first
request sent) (prefill of all prompts included), TTFT and ITL p50/p99 (ITL pooled
over all clients), the ratio wick/llama.cpp at the same N and X(N)/X(1), and the
server's peak RSS.

  llama.cpp  llama-server from the `xllamacpp` wheel in a child process
             (benches/llamacpp_server.py), restarted for every N with N slots
             (--parallel N, continuous batching on, 2 threads) and n_ctx = N *
             per-slot context (longest prompt + num_predict, rounded up to 256, or
             --slot-ctx). POST /completion {"stream": true, "n_predict",
             "ignore_eos": true, "temperature": 0, "cache_prompt": false}: every
             client generates exactly num_predict tokens.
  wick       --wick-url of a running `wick serve` with smollm2:135m and
             qwen2.5-coder:0.5b imported (scripts/serve.sh), or --wick-bin to spawn
             one on a free port with a temporary OLLAMA_MODELS, the models imported
             with `wick create` (as scripts/serve.sh does) and OLLAMA_NUM_PARALLEL =
             the largest N. POST /api/generate {"raw": true, "stream": true,
             "options": {"num_predict", "temperature": 0, "seed": 1}}. wick has no
             ignore_eos: the prompts are text that does not end soon, and the table
             reports the tokens actually generated (eval_count).

Peak RSS: llama.cpp, the child's VmHWM for that (model, N) (it includes Python and the
xllamacpp import, ~40 MiB, printed once as "baseline"); a spawned wick, VmHWM reset
(/proc/<pid>/clear_refs) before each (model, N) and the previous model unloaded when
the model changes; a wick given by URL, VmHWM of the process listening on that port
since it started.

Usage (after scripts/fetch-models.sh and scripts/setup-bench-venv.sh):
  .venv-bench/bin/python benches/load.py --only llamacpp --clients 1,2 --num-predict 16
  .venv-bench/bin/python benches/load.py --wick-bin target/release/wick --json load.json
  .venv-bench/bin/python benches/load.py --wick-url http://127.0.0.1:11434 --model qwen

Engines and runs never overlap. The machine must be otherwise idle.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_server import N_THREADS, LlamaCppServer, fmt_mib  # noqa: E402
from wick_server import Wick  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT = 900

# (short key, GGUF file in the model cache, wick / Ollama model name)
MODELS = [
    ("smollm2", "smollm2-135m-instruct-q4_1.gguf", "smollm2:135m"),
    ("qwen", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder:0.5b"),
    # Realistic size; fetched only by `scripts/fetch-models.sh --with-bench`.
    ("qwen15", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "qwen2.5-coder:1.5b"),
]

# Plain prose (no chat markup) so the models continue it instead of ending a turn.
PASSAGES = [
    "The old harbor town woke slowly in the winter. Fishermen checked their nets by "
    "lantern light, the baker lit his ovens before dawn, and the gulls circled above the "
    "market square waiting for scraps. Every house along the waterfront had a story about "
    "a storm, a rescue, or a ship that never came back.",
    "In the laboratory, the team had spent three years building a machine that could "
    "measure the smallest vibrations of the earth. The sensors were buried deep beneath "
    "the mountain, cooled to a fraction of a degree above absolute zero, and connected by "
    "kilometers of cable to a room full of humming computers.",
    "The recipe had been passed down through five generations. It began with flour milled "
    "from the wheat grown on the hill behind the farmhouse, butter churned by hand, and a "
    "pinch of salt from the coast. Each cook had added something new: a spice from a "
    "distant market, a splash of cider, a handful of walnuts.",
    "When the first railway reached the valley, everything changed. Farmers could send "
    "their crops to the city in a single day, merchants arrived with goods nobody had seen "
    "before, and young people left to find work in the factories. The station became the "
    "center of town, and its clock set the time for everyone.",
    "The library occupied an entire floor of the old courthouse. Its shelves held maps of "
    "coastlines that had since shifted, ledgers from merchants long forgotten, and letters "
    "written by soldiers to families they would never see again. The librarian knew where "
    "every single document was kept, and why it mattered.",
    "Deep in the forest, the river bent around a granite cliff and formed a quiet pool. "
    "Trout rested in the shadows, dragonflies skimmed the surface, and in autumn the "
    "maples dropped red leaves that drifted slowly toward the waterfall downstream. Few "
    "travelers ever found the path that led there.",
    "The engineers designed the bridge to survive earthquakes, floods, and a century of "
    "heavy traffic. Its towers rose two hundred meters above the strait, its cables were "
    "spun from thousands of steel wires, and its deck could flex by several meters in a "
    "strong wind without a single crack appearing in the concrete.",
    "Every summer the village held a festival in honor of the harvest. Musicians played "
    "from noon until midnight, children raced wooden boats along the canal, and long "
    "tables filled the main street with bread, cheese, roasted vegetables, and pies made "
    "from the first apples of the year.",
]

OPENERS = [
    "Later that evening, the keeper of the lighthouse",
    "The next morning, the scientists discovered that",
    "Years later, her granddaughter opened the notebook and",
    "By the end of the decade, the population of the valley had",
    "One afternoon a stranger arrived and asked",
    "The first thing the travelers noticed was",
    "According to the official report, the main reason",
    "As the sun went down over the square, the musicians",
    "Nobody in the town could explain why",
    "After the storm had passed, the fishermen walked down to",
    "The most important lesson from those years was that",
    "In a letter to his brother, the engineer wrote that",
    "When the mayor finally stood up to speak, she",
    "Inside the wooden box they found a map, a key, and",
    "The children never forgot the day when",
    "Long before anyone had built a road through the mountains,",
]


def make_prompts() -> list[str]:
    """16 prompts: "Chapter i." then 1-4 passages (cycling), then an unfinished
    sentence. About 80, 150, 220 and 290 tokens. No two share more than a few tokens
    of prefix, so neither engine can reuse another client's prompt."""
    out = []
    for i, opener in enumerate(OPENERS):
        n = 1 + i % 4
        first = i + i // len(PASSAGES)
        body = " ".join(PASSAGES[(first + k) % len(PASSAGES)] for k in range(n))
        out.append(f"Chapter {i + 1}.\n\n{body}\n\n{opener}")
    return out


PROMPTS = make_prompts()
WARMUP_PROMPT = "The weather in the mountains changes quickly, so hikers always"


def probe_prompt(i: int) -> str:
    """The prefill-speed probe of run `i`: about 480 tokens (every passage once, from
    passage `i` on) that share at most a token of prefix with PROMPTS and with the
    other runs' probes, so no engine can serve it from a cache."""
    k = i % len(PASSAGES)
    return " ".join(PASSAGES[k:] + PASSAGES[:k])


PROBES = itertools.count()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- results
@dataclass
class Client:
    index: int
    prompt_tokens: int | None = None
    tokens: int = 0
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)
    start: float = 0.0  # perf_counter at request send
    end: float = 0.0  # perf_counter at the final chunk
    error: str | None = None


@dataclass
class Run:
    engine: str  # "llama.cpp" or "wick"
    model: str
    n: int
    num_predict: int
    clients: list[Client] = field(default_factory=list)
    wall: float | None = None
    peak_rss_kb: int | None = None
    rss_note: str = ""
    error: str | None = None
    slot_ctx: int | None = None
    # Prompt tokens/s of one long prompt alone, measured just before the run.
    prefill_rate: float | None = None

    @property
    def ttft_bound(self) -> float | None:
        """The machine's lower bound of the last first token: every client's prompt
        tokens at the engine's single-stream prefill speed (seconds)."""
        prompt = [c.prompt_tokens for c in self.clients]
        if not self.prefill_rate or not prompt or any(p is None for p in prompt):
            return None
        return sum(prompt) / self.prefill_rate

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.clients)

    @property
    def tps(self) -> float | None:
        if self.error or not self.wall:
            return None
        return self.tokens / self.wall

    def ttft(self, q: float) -> float | None:
        return percentile([c.ttft for c in self.clients if c.ttft is not None], q)

    def decode_window(self) -> tuple[float, float] | None:
        """The time when every client was generating: from the last first token to the
        first completion of a client that generated all its tokens (seconds), or None
        when there is no such time. A wick client that met its end of sequence early
        (wick has no ignore_eos) leaves the batch one row smaller, not the window shut."""
        if self.error or any(c.ttft is None for c in self.clients):
            return None
        lo = max(c.start + c.ttft for c in self.clients)
        full = [c.end for c in self.clients if c.tokens >= self.num_predict]
        hi = min(full) if full else min(c.end for c in self.clients)
        return (lo, hi) if hi - lo >= MIN_DECODE_WINDOW else None

    @property
    def decode_tps(self) -> float | None:
        """Aggregate decode tokens/s while all N clients generate together: text chunks
        (one per token) that arrived inside the decode window, over its length. Prefill
        of the prompts is outside it, so this is the batched decode rate alone."""
        w = self.decode_window()
        if w is None:
            return None
        lo, hi = w
        arrivals = 0
        for c in self.clients:
            t = c.start + c.ttft
            for gap in c.itls:
                t += gap
                if lo < t <= hi:
                    arrivals += 1
        return arrivals / (hi - lo)

    def itl(self, q: float) -> float | None:
        return percentile([g for c in self.clients for g in c.itls], q)


# A decode window shorter than this is too few steps to measure a rate.
MIN_DECODE_WINDOW = 0.25


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# --------------------------------------------------------------------------- streaming
def parse_llamacpp(line: bytes) -> dict | None:
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return None
    j = json.loads(payload)
    if "error" in j:
        raise RuntimeError(f"llama.cpp error: {j['error']}")
    done = bool(j.get("stop"))
    out = {"text": j.get("content") or "", "done": done}
    if done:
        t = j.get("timings") or {}
        if t.get("cache_n"):
            raise RuntimeError(f"llama.cpp reused {t['cache_n']} cached prompt tokens")
        out["tokens"] = j.get("tokens_predicted", t.get("predicted_n"))
        out["prompt_tokens"] = j.get("tokens_evaluated", t.get("prompt_n"))
    return out


def parse_wick(line: bytes) -> dict | None:
    line = line.strip()
    if not line:
        return None
    j = json.loads(line)
    if "error" in j:
        raise RuntimeError(f"wick error: {j['error']}")
    done = bool(j.get("done"))
    out = {"text": j.get("response") or "", "done": done}
    if done:
        out["tokens"] = j.get("eval_count")
        out["prompt_tokens"] = j.get("prompt_eval_count")
    return out


def stream_one(base: str, path: str, body: dict, parse, barrier: threading.Barrier,
               c: Client) -> None:
    u = urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=REQUEST_TIMEOUT)
    payload = json.dumps(body).encode()
    try:
        conn.connect()
    except OSError as e:
        c.error = f"connect: {e}"
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        c.error = c.error or "barrier broken"
    if c.error:
        conn.close()
        return
    try:
        c.start = time.perf_counter()
        conn.request("POST", path, body=payload,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
        last = None
        chunks = 0
        final = None
        while True:
            line = resp.readline()
            if not line:
                break
            now = time.perf_counter()
            ev = parse(line)
            if ev is None:
                continue
            if ev["text"]:
                chunks += 1
                if last is None:
                    c.ttft = now - c.start
                else:
                    c.itls.append(now - last)
                last = now
            if ev["done"]:
                final = ev
                c.end = now
                break
        if final is None:
            raise RuntimeError("stream ended without a final chunk")
        c.tokens = final["tokens"] if final.get("tokens") is not None else chunks
        c.prompt_tokens = final.get("prompt_tokens")
    except Exception as e:  # noqa: BLE001 - one failed client fails the run, reported
        c.error = f"{type(e).__name__}: {e}"
        c.end = c.end or time.perf_counter()
    finally:
        conn.close()


def run_clients(run: Run, base: str, path: str, bodies: list[dict], parse) -> None:
    n = len(bodies)
    barrier = threading.Barrier(n)
    run.clients = [Client(i) for i in range(n)]
    threads = [threading.Thread(target=stream_one, daemon=True,
                                args=(base, path, bodies[i], parse, barrier, run.clients[i]))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [c.error for c in run.clients if c.error]
    if errors:
        run.error = f"{len(errors)}/{n} clients failed: {errors[0]}"
        return
    t0 = min(c.start for c in run.clients)
    for c in run.clients:  # seconds since the first request was sent
        c.start, c.end = c.start - t0, c.end - t0
    run.wall = max(c.end for c in run.clients)


def llamacpp_body(prompt: str, n_predict: int) -> dict:
    return {"prompt": prompt, "n_predict": n_predict, "stream": True, "ignore_eos": True,
            "temperature": 0, "top_k": 1, "seed": 1, "stop": [], "cache_prompt": False}


def wick_body(model: str, prompt: str, n_predict: int, num_ctx: int | None,
              stream: bool = True) -> dict:
    options = {"temperature": 0, "num_predict": n_predict, "seed": 1}
    if num_ctx:
        options["num_ctx"] = num_ctx
    return {"model": model, "prompt": prompt, "raw": True, "stream": stream,
            "options": options}


def describe(run: Run) -> str:
    if run.error:
        return f"ERROR {run.error}"
    bound = run.ttft_bound
    return (f"{run.tokens} tokens in {run.wall:.2f} s = {run.tps:.1f} tok/s, TTFT p50 "
            f"{ms(run.ttft(50))} p99 {ms(run.ttft(99))} ms (bound {ms(bound)} ms at "
            f"{run.prefill_rate or 0:.0f} prompt tok/s), ITL p50 {ms(run.itl(50))} "
            f"p99 {ms(run.itl(99))} ms")


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


# --------------------------------------------------------------------------- engines
def bench_llamacpp(key: str, path: Path, ns: list[int], num_predict: int,
                   slot_ctx: int | None) -> tuple[list[Run], list[int] | None, str]:
    runs: list[Run] = []
    prompt_tokens = None
    version = ""
    if not path.exists():
        return ([Run("llama.cpp", key, n, num_predict, error=f"{path} missing "
                     "(scripts/fetch-models.sh)") for n in ns], None, version)
    for n in ns:
        run = Run("llama.cpp", key, n, num_predict)
        runs.append(run)
        srv = None
        try:
            if prompt_tokens is None:
                # Count the prompts once, with a one-slot server, to size the slots.
                log(f"[{key}] llama.cpp: tokenizing the prompts")
                with LlamaCppServer(path, n_ctx=1024, n_parallel=1) as tok:
                    prompt_tokens = [tok.count_tokens(p) for p in PROMPTS]
                    version = tok.version
                log(f"[{key}] prompt tokens: {prompt_tokens}")
            per_slot = slot_ctx or 256 * math.ceil((max(prompt_tokens) + num_predict + 8) / 256)
            run.slot_ctx = per_slot
            log(f"[{key}] llama.cpp N={n}: starting {n} slot(s), n_ctx {n * per_slot}")
            srv = LlamaCppServer(path, n_ctx=n * per_slot, n_parallel=n, threads=N_THREADS)
            srv.post("/completion", {"prompt": WARMUP_PROMPT, "n_predict": 4,
                                     "temperature": 0, "cache_prompt": False})
            probe = srv.post("/completion", {"prompt": probe_prompt(next(PROBES)),
                                             "n_predict": 1,
                                             "temperature": 0, "cache_prompt": False})
            t = probe.get("timings") or {}
            if t.get("prompt_n") and t.get("prompt_ms"):
                run.prefill_rate = t["prompt_n"] / (t["prompt_ms"] / 1000)
            bodies = [llamacpp_body(PROMPTS[i % len(PROMPTS)], num_predict) for i in range(n)]
            run_clients(run, srv.base, "/completion", bodies, parse_llamacpp)
            log(f"[{key}] llama.cpp N={n}: {describe(run)}")
        except Exception as e:  # noqa: BLE001 - report and go on
            run.error = f"{type(e).__name__}: {e}"
            log(f"[{key}] llama.cpp N={n}: ERROR {run.error}")
        finally:
            if srv is not None:
                srv.close()
                run.peak_rss_kb = srv.peak_rss_kb()
                if srv.baseline_rss_kb:
                    run.rss_note = f"baseline {fmt_mib(srv.baseline_rss_kb)}"
                if run.error:
                    tail = srv.log_tail()
                    if tail:
                        log(tail)
    return runs, prompt_tokens, version


def bench_wick(wick: Wick, key: str, name: str, path: Path, ns: list[int],
               num_predict: int, num_ctx: int | None) -> list[Run]:
    runs = [Run("wick", key, n, num_predict) for n in ns]
    try:
        if wick.spawned:
            wick.import_gguf(name, path)
        elif not wick.has_model(name):
            raise RuntimeError(f"model {name} not in wick's store (/api/tags); import it "
                               "(scripts/serve.sh) or use --wick-bin")
    except Exception as e:  # noqa: BLE001
        for r in runs:
            r.error = f"{type(e).__name__}: {e}"
        log(f"[{key}] wick: ERROR {runs[0].error}")
        return runs
    for run in runs:
        n = run.n
        try:
            wick.reset_peak_rss()
            # Warm-up: loads the model on the first run, a short request afterwards.
            def generate(what: str, prompt: str, n_predict: int) -> dict:
                body = wick_body(name, prompt, n_predict, num_ctx, stream=False)
                r = requests.post(wick.base + "/api/generate", json=body,
                                  timeout=REQUEST_TIMEOUT)
                if r.status_code != 200:
                    raise RuntimeError(f"{what} /api/generate -> {r.status_code}: "
                                       f"{r.text[:300]}")
                return r.json()

            generate("warm-up", WARMUP_PROMPT, 4)
            j = generate("probe", probe_prompt(next(PROBES)), 1)
            if j.get("prompt_eval_count") and j.get("prompt_eval_duration"):
                run.prefill_rate = j["prompt_eval_count"] / (j["prompt_eval_duration"] / 1e9)
            bodies = [wick_body(name, PROMPTS[i % len(PROMPTS)], num_predict, num_ctx)
                      for i in range(n)]
            run_clients(run, wick.base, "/api/generate", bodies, parse_wick)
            log(f"[{key}] wick N={n}: {describe(run)}")
            short = [c.tokens for c in run.clients if c.tokens != num_predict]
            if short and not run.error:
                log(f"[{key}] wick N={n}: WARNING {len(short)} client(s) generated "
                    f"{short} tokens, not {num_predict} (end of sequence?)")
        except Exception as e:  # noqa: BLE001
            run.error = f"{type(e).__name__}: {e}"
            log(f"[{key}] wick N={n}: ERROR {run.error}")
        if run.error:
            tail = wick.log_tail()
            if tail:
                log(tail)
        run.peak_rss_kb = wick.peak_rss_kb()
        if not wick.spawned:
            run.rss_note = "since start" if run.peak_rss_kb is not None else "pid not found"
    if wick.spawned:
        wick.unload(name)
    return runs


# --------------------------------------------------------------------------- report
def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def table(runs: list[Run]) -> str:
    idx = {(r.engine, r.model, r.n): r for r in runs}
    rows = ["| model | N | engine | tok/s | wick/llama.cpp | vs N=1 | decode tok/s | "
            "wick/llama.cpp | vs N=1 | TTFT p50 ms | "
            "TTFT p99 ms | TTFT p99 / bound | ITL p50 ms | ITL p99 ms | tokens | peak RSS |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = {m[0]: i for i, m in enumerate(MODELS)}
    for r in sorted(runs, key=lambda r: (order.get(r.model, 99), r.n,
                                         r.engine != "llama.cpp")):
        rss = fmt_mib(r.peak_rss_kb) + (f" ({r.rss_note})" if r.rss_note else "")
        if r.error:
            rows.append(f"| {r.model} | {r.n} | {r.engine} | error: "
                        f"{r.error.splitlines()[0][:100]} | | | | | | | | | | | | {rss} |")
            continue
        llama = idx.get(("llama.cpp", r.model, r.n))
        vs_llama = ratio(r.tps, llama.tps) if r.engine == "wick" and llama else ""
        one = idx.get((r.engine, r.model, 1))
        scale = ratio(r.tps, one.tps) if one else "-"
        dec = r.decode_tps
        dec_llama = (ratio(dec, llama.decode_tps)
                     if r.engine == "wick" and llama and dec else "")
        dec_scale = ratio(dec, one.decode_tps) if one and dec else "-"
        expected = r.n * r.num_predict
        toks = f"{r.tokens}/{expected}"
        rows.append(f"| {r.model} | {r.n} | {r.engine} | {r.tps:.1f} | {vs_llama} | {scale} | "
                    f"{'-' if dec is None else f'{dec:.1f}'} | {dec_llama} | {dec_scale} | "
                    f"{ms(r.ttft(50))} | {ms(r.ttft(99))} | {ratio(r.ttft(99), r.ttft_bound)} | "
                    f"{ms(r.itl(50))} | "
                    f"{ms(r.itl(99))} | {toks} | {rss} |")
    return "\n".join(rows)


def parse_clients(s: str) -> list[int]:
    try:
        ns = sorted({int(x) for x in s.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {s!r}")
    if not ns or ns[0] < 1:
        raise argparse.ArgumentTypeError("client counts must be >= 1")
    return ns


def main() -> int:
    ap = argparse.ArgumentParser(description="wick vs llama.cpp under N concurrent "
                                             "streaming clients (continuous batching)")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("WICK_MODEL_CACHE", REPO / "models-cache")),
                    help="GGUF model cache (scripts/fetch-models.sh)")
    ap.add_argument("--model", action="append", choices=[m[0] for m in MODELS],
                    help="restrict to these models (repeatable; default: all)")
    ap.add_argument("--clients", type=parse_clients, default=[1, 2, 4, 8, 16],
                    help="concurrency levels, comma-separated (default 1,2,4,8,16)")
    ap.add_argument("--num-predict", type=int, default=64,
                    help="tokens each client generates (default 64)")
    ap.add_argument("--only", choices=["wick", "llamacpp"], default=None)
    ap.add_argument("--wick-url", default=None,
                    help="an already running wick serve with the models imported")
    ap.add_argument("--wick-bin", type=Path, default=None,
                    help="spawn this wick binary (temporary store, models imported); "
                         f"default {REPO / 'target/release/wick'} when --wick-url is absent")
    ap.add_argument("--wick-num-ctx", type=int, default=None,
                    help="send options.num_ctx to wick (default: wick's own default)")
    ap.add_argument("--slot-ctx", type=int, default=None,
                    help="llama.cpp context per slot (default: longest prompt + "
                         "num_predict, rounded up to 256)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = ap.parse_args()
    if args.wick_url and args.wick_bin:
        ap.error("--wick-url and --wick-bin exclude each other")
    if args.num_predict < 1:
        ap.error("--num-predict must be >= 1")
    if max(args.clients) > len(PROMPTS):
        log(f"note: more clients than prompts ({len(PROMPTS)}): prompts repeat")

    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        log(f"WARNING: load average {load1:.2f}: another process is using the CPU; "
            f"numbers will be unreliable")
    models = [m for m in MODELS if not args.model or m[0] in args.model]
    runs: list[Run] = []
    meta: dict = {"clients": args.clients, "num_predict": args.num_predict,
                  "threads": N_THREADS, "prompt_tokens": {}, "llamacpp_version": None}
    busy0, wall0 = busy_cpu_seconds(), time.monotonic()

    if args.only != "wick":
        for key, fname, _ in models:
            rs, ptoks, version = bench_llamacpp(key, args.cache / fname, args.clients,
                                                args.num_predict, args.slot_ctx)
            runs += rs
            if ptoks:
                meta["prompt_tokens"][key] = ptoks
            if version:
                meta["llamacpp_version"] = version

    if args.only != "llamacpp":
        wick = None
        try:
            binary = args.wick_bin or REPO / "target" / "release" / "wick"
            wick = Wick(args.wick_url, binary, temp_store=not args.wick_url,
                        env={"OLLAMA_NUM_PARALLEL": str(max(args.clients))})
            for key, fname, name in models:
                runs += bench_wick(wick, key, name, args.cache / fname, args.clients,
                                   args.num_predict, args.wick_num_ctx)
        except Exception as e:  # noqa: BLE001
            log(f"wick: ERROR {type(e).__name__}: {e}")
            for key, _, _ in models:
                runs += [Run("wick", key, n, args.num_predict,
                             error=f"{type(e).__name__}: {e}") for n in args.clients]
        finally:
            if wick is not None:
                wick.close()

    wall = time.monotonic() - wall0
    busy1 = busy_cpu_seconds()
    print()
    print(f"load: clients {','.join(map(str, args.clients))}, {args.num_predict} tokens per "
          f"client, greedy, {len(PROMPTS)} prompts of "
          + (", ".join(f"{k} {min(v)}-{max(v)}" for k, v in meta["prompt_tokens"].items())
             + " tokens" if meta["prompt_tokens"] else "~70-300 tokens")
          + f", {N_THREADS} threads; load avg at start {load1:.2f}, at end "
          f"{os.getloadavg()[0]:.2f}")
    if busy0 is not None and busy1 is not None:
        share = (busy1 - busy0) / max(wall * (os.cpu_count() or 1), 1e-9)
        print(f"the machine was {share:.0%} busy during the {wall:.0f} s run (this "
              f"benchmark included)")
    slot = {r.slot_ctx for r in runs if r.slot_ctx}
    if slot:
        print(f"llama.cpp: {meta['llamacpp_version']}, context per slot "
              f"{'/'.join(map(str, sorted(slot)))}, n_ctx = N x that")
    print("tok/s = all generated tokens / (last completion - first request); decode tok/s = "
          "tokens that arrived while all N clients were generating (last first token -> "
          "first completion of a client that generated all its tokens) / that time, '-' when it was under "
          f"{MIN_DECODE_WINDOW * 1000:.0f} ms (raise --num-predict); TTFT = "
          "request -> first text chunk; ITL = gap between text chunks (all clients)")
    print()
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps({**meta, "runs": [
            {**{k: v for k, v in asdict(r).items() if k != "clients"},
             "tokens": r.tokens, "tokens_per_s": r.tps, "decode_tokens_per_s": r.decode_tps,
             "ttft_p50": r.ttft(50), "ttft_p99": r.ttft(99),
             "itl_p50": r.itl(50), "itl_p99": r.itl(99),
             "clients": [asdict(c) for c in r.clients]} for r in runs]}, indent=1) + "\n")
        log(f"wrote {args.json}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
