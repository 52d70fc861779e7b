#!/usr/bin/env python3
"""Soak test: many concurrent clients and hostile requests against one `wick serve`.

Not part of the normal test run (issue 13, part 5). It spawns `wick serve` (--wick-bin,
default target/release/wick) on a free loopback port with a temporary store,
WICK_MAX_BODY_BYTES = --max-body-bytes (1 MiB), OLLAMA_MAX_QUEUE = 512 and
OLLAMA_KEEP_ALIVE = 30m, imports the --models (smollm2 and qwen by default) with `wick
create`, or uses --wick-url (the models must be imported there already). Then:

  warm-up   --warmup seconds (default 60) of the mix below, longer (up to --warmup-max)
            while RSS under load still grew 2% or more in the last 60 s (on a slow or
            busy machine a 128-token answer takes minutes, and the KV working set fills
            late), then the clients stop, the server idles IDLE_SECONDS, and its RSS
            (VmRSS) is read: "RSS warm";
  soak      --duration seconds (default 1200) of the same mix, the same stop and idle,
            RSS again ("RSS end"), the scheduler gauges from /metrics, then every model
            is unloaded (keep_alive 0) and the KV gauges and RSS read once more.

The mix: --clients (64) threads each pick a request kind at random (KINDS, weighted),
send it, check the answer, wait 0-200 ms and go again:

  generate / chat / openai (+ _stream)  /api/generate, /api/chat, /v1/chat/completions,
        streamed or not, on a random model, random options (temperature, top_k, top_p,
        seed, num_predict 1-128, stop strings, sometimes num_ctx, sometimes JSON
        format). Expected: 200 and a final answer (done: true / finish_reason / [DONE]).
  cut   a streamed request of any of the three routes closed after 1-4 lines.
  abandon  a non-streamed /api/generate whose connection is closed 50-1000 ms after it
        was sent, before the answer.
  oversize  a well-formed body over the limit: 413.
  malformed  broken JSON or a field of the wrong type: 400.
  unknown   a model that does not exist (generate, chat, show, OpenAI chat): 404.
  copy  /api/copy (or /api/create from an original with a system prompt) to a new
        name, /api/show it, /api/delete it, /api/show again: 200, 200, 200, 404.
        The originals are never deleted.
  ps    GET /api/ps: 200 with a model list.

Any other answer is a failure: a 5xx (503 "server busy" included: the queue limit is
far above --clients, so well-formed requests must never meet it), an error line in a
stream, a stream without its final chunk, a timeout, a reset connection.

Meanwhile a probe (a child process, out of the clients' GIL) times GET /api/tags every
100 ms on a new connection each time, and a monitor checks every 0.5 s that the server process is alive.

Asserts (exit status 1 if any fails): the server never died and its log has no panic;
no request failed; tags p99 < 50 ms; no model was loaded again after the preload
(keep_alive is 30 m and there is room for both models, so a load means one was
unloaded under load); after the soak, idle: no running sequence, queue
depth 0, and after unloading every model the KV gauges sum to 0 and /api/ps is empty;
RSS end at most 10% above RSS warm (a smaller RSS is fine).

KV bytes: /metrics `wick_kv_cache_used_bytes{model}` is the KV cache a loaded model
holds, *including the reusable prompt prefixes of finished sequences* (up to
OLLAMA_NUM_PARALLEL of them are kept by design), so a loaded model idles above zero.
The summary prints that idle figure; leaks are caught by the running-sequence and
queue gauges at idle (a sequence that never ends, a queue slot never given back), by
the KV gauges after the unload, and by the RSS comparison.

Usage (after scripts/fetch-models.sh, scripts/setup-bench-venv.sh, cargo build --release):
  .venv-bench/bin/python benches/soak.py                          # 60 s warm-up + 20 min
  .venv-bench/bin/python benches/soak.py --duration 240 --warmup 60 --clients 64
  .venv-bench/bin/python benches/soak.py --wick-url http://127.0.0.1:11434 --max-body-bytes 67108864
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_server import fmt_mib, proc_status_kb  # noqa: E402
from load import PROMPTS, percentile  # noqa: E402
from single_stream import MODELS  # noqa: E402
from wick_server import Wick, log  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT = 600  # seconds without a byte before a request counts as hung
IDLE_SECONDS = 5
TAGS_PERIOD = 0.1
TAGS_P99_LIMIT_MS = 50.0
RSS_TOLERANCE = 0.10
# The warm-up goes on past --warmup until RSS under load grows less than this over
# this window (the working set has filled: every slot has held a long sequence).
SETTLE_GROWTH = 0.02
SETTLE_WINDOW = 60.0
MAX_QUEUE = 512

# kind -> weight. Generation kinds take seconds, the others milliseconds.
KINDS = {
    "generate_stream": 14, "generate": 8, "chat_stream": 14, "chat": 8,
    "openai_stream": 6, "openai": 4, "cut": 8, "abandon": 3,
    "oversize": 2, "malformed": 4, "unknown": 3, "copy": 2, "ps": 4,
}
# Outcomes that are the right answer (anything else is a failure).
GOOD = {"done", "cut", "abandoned", "413", "400", "404", "ok"}

QUESTIONS = [
    "Why is the sky blue?", "Write a haiku about rust.", "What is 17 times 23?",
    "Name three rivers in Europe.", "Explain recursion in one sentence.",
    "Write a Python function that reverses a string.", "What does HTTP 413 mean?",
    "List the planets of the solar system.", "Tell me a short joke about cats.",
    "Translate 'good morning' into French and Spanish.",
]
JSON_QUESTIONS = [
    "Describe a {} as a JSON object with the fields name, color and size.",
    "Give a JSON object with a list of three facts about a {}.",
]
THINGS = ["cat", "bicycle", "volcano", "teapot", "lighthouse", "violin"]
STOPS = [".", "\n", ",", " the", "and", "\n\n"]


class Fail(Exception):
    """A wrong answer: `label` names it in the outcome table, the message details it."""

    def __init__(self, label: str, detail: str = ""):
        super().__init__(f"{label}: {detail}" if detail else label)
        self.label = label


# --------------------------------------------------------------------------- results
@dataclass
class Tally:
    """Outcomes, latencies and tokens of every request, shared by all client threads."""
    outcomes: Counter = field(default_factory=Counter)  # (kind, outcome) -> n
    latencies: dict = field(default_factory=lambda: defaultdict(list))  # kind -> [s]
    tokens: Counter = field(default_factory=Counter)  # kind -> generated tokens
    failures: list = field(default_factory=list)  # (time, kind, message), first ones
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, outcome: str, seconds: float, tokens: int = 0,
               detail: str = "") -> None:
        """Count one finished request (latency only for a complete right answer)."""
        with self.lock:
            self.outcomes[(kind, outcome)] += 1
            self.tokens[kind] += tokens
            if outcome in ("done", "ok", "413", "400", "404"):
                self.latencies[kind].append(seconds)
            if outcome not in GOOD and len(self.failures) < 50:
                self.failures.append((time.strftime("%H:%M:%S"), kind, detail or outcome))

    def failed(self) -> int:
        return sum(n for (_, o), n in self.outcomes.items() if o not in GOOD)


# --------------------------------------------------------------------------- HTTP
class Http:
    """Plain http.client requests to one server (one connection per request, so a
    client can drop a connection mid-stream)."""

    def __init__(self, base: str):
        u = urlparse(base)
        self.host, self.port = u.hostname, u.port

    def open(self, method: str, path: str, body: bytes | None = None,
             timeout: float = REQUEST_TIMEOUT) -> tuple[http.client.HTTPConnection,
                                                         http.client.HTTPResponse]:
        """Send a request; the connection and its response (headers read)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn, conn.getresponse()
        except Exception:
            conn.close()
            raise

    def call(self, method: str, path: str, obj=None, raw: bytes | None = None,
             timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
        """A whole request: its status and body."""
        body = raw if raw is not None else (None if obj is None else json.dumps(obj).encode())
        conn, resp = self.open(method, path, body, timeout)
        try:
            return resp.status, resp.read()
        finally:
            conn.close()


def expect_status(status: int, body: bytes, want: int) -> None:
    """Raise a Fail unless the answer has status `want`."""
    if status != want:
        raise Fail(f"HTTP {status}", f"expected {want}: {body[:200]!r}")


def parse_json(body: bytes, what: str):
    try:
        return json.loads(body)
    except ValueError:
        raise Fail("bad JSON", f"{what}: {body[:200]!r}") from None


# --------------------------------------------------------------------------- requests
def random_options(rng: random.Random) -> dict:
    """Ollama options: always num_predict (1-128), the rest sometimes."""
    o = {"num_predict": rng.randint(1, 128)}
    if rng.random() < 0.7:
        o["temperature"] = round(rng.uniform(0, 1.5), 2)
    if rng.random() < 0.5:
        o["top_k"] = rng.randint(1, 100)
    if rng.random() < 0.5:
        o["top_p"] = round(rng.uniform(0.1, 1.0), 2)
    if rng.random() < 0.5:
        o["seed"] = rng.randint(0, 2**31 - 1)
    if rng.random() < 0.25:
        o["stop"] = rng.sample(STOPS, rng.randint(1, 2))
    if rng.random() < 0.2:
        o["num_ctx"] = rng.choice([512, 1024, 2048])
    return o


def random_prompt(rng: random.Random, json_mode: bool) -> str:
    if json_mode:
        return rng.choice(JSON_QUESTIONS).format(rng.choice(THINGS))
    return rng.choice(QUESTIONS) if rng.random() < 0.6 else rng.choice(PROMPTS)


def generation_request(rng: random.Random, route: str, model: str,
                       stream: bool) -> tuple[str, dict]:
    """A random well-formed generation request on `route` (generate, chat or openai):
    its path and body."""
    json_mode = rng.random() < 0.15
    prompt = random_prompt(rng, json_mode)
    opts = random_options(rng)
    if route == "openai":
        body = {"model": model, "stream": stream, "max_tokens": opts["num_predict"],
                "messages": [{"role": "user", "content": prompt}]}
        for k in ("temperature", "top_p", "seed", "stop"):
            if k in opts:
                body[k] = opts[k]
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if stream and rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        return "/v1/chat/completions", body
    body = {"model": model, "stream": stream, "options": opts}
    if json_mode:
        body["format"] = "json"
    if route == "generate":
        body["prompt"] = prompt
        if not json_mode and rng.random() < 0.3:
            body["raw"] = True
        return "/api/generate", body
    messages = [{"role": "user", "content": prompt}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": "You are a terse assistant."})
    if rng.random() < 0.2:
        messages[-1:-1] = [{"role": "user", "content": rng.choice(QUESTIONS)},
                           {"role": "assistant", "content": "I am not sure."}]
    body["messages"] = messages
    return "/api/chat", body


def final_tokens(route: str, j: dict) -> int:
    """Generated tokens from a final answer (non-streamed, or the last chunk)."""
    if route == "openai":
        return int((j.get("usage") or {}).get("completion_tokens") or 0)
    return int(j.get("eval_count") or 0)


def check_final(route: str, j: dict) -> None:
    """Raise a Fail unless `j` is a complete non-streamed answer."""
    if "error" in j:
        raise Fail("error body", str(j["error"])[:200])
    if route == "openai":
        choices = j.get("choices") or []
        if not choices or not choices[0].get("finish_reason"):
            raise Fail("no finish_reason", json.dumps(j)[:200])
    elif not j.get("done"):
        raise Fail("not done", json.dumps(j)[:200])


def read_stream(resp: http.client.HTTPResponse, route: str,
                cut_after: int | None) -> tuple[str, int]:
    """Read a 200 stream to its end: ("done", tokens), or ("cut", tokens so far) when
    `cut_after` lines were read first (the caller then closes the connection)."""
    lines = tokens = 0
    while True:
        raw = resp.readline()
        if not raw:
            raise Fail("stream ended early", f"after {lines} lines, no final chunk")
        line = raw.strip()
        if not line:
            continue
        lines += 1
        if route == "openai":
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return "done", tokens
            j = parse_json(payload, "SSE event")
            if "error" in j:
                raise Fail("error event", str(j["error"])[:200])
            for c in j.get("choices") or []:
                if (c.get("delta") or {}).get("content"):
                    tokens += 1  # one chunk per token, near enough
            if j.get("usage"):
                tokens = int(j["usage"].get("completion_tokens") or tokens)
        else:
            j = parse_json(line, "stream line")
            if "error" in j:
                raise Fail("error line", str(j["error"])[:200])
            if j.get("done"):
                return "done", int(j.get("eval_count") or 0)
        if cut_after is not None and lines >= cut_after:
            return "cut", tokens


def do_generation(ctx: "Soak", rng: random.Random, route: str, stream: bool,
                  cut: bool = False) -> tuple[str, int]:
    """One generation request; (outcome, generated tokens)."""
    path, body = generation_request(rng, route, rng.choice(ctx.models), stream)
    conn, resp = ctx.http.open("POST", path, json.dumps(body).encode())
    try:
        if resp.status != 200:
            expect_status(resp.status, resp.read(), 200)
        if not stream:
            j = parse_json(resp.read(), "answer")
            check_final(route, j)
            return "done", final_tokens(route, j)
        return read_stream(resp, route, rng.randint(1, 4) if cut else None)
    finally:
        conn.close()


def do_abandon(ctx: "Soak", rng: random.Random) -> tuple[str, int]:
    """A non-streamed generate whose client hangs up before the answer."""
    _, body = generation_request(rng, "generate", rng.choice(ctx.models), stream=False)
    body["options"]["num_predict"] = rng.randint(32, 128)
    wait = rng.uniform(0.05, 1.0)
    conn = http.client.HTTPConnection(ctx.http.host, ctx.http.port, timeout=wait)
    try:
        conn.request("POST", "/api/generate", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        try:
            resp = conn.getresponse()
        except TimeoutError:
            return "abandoned", 0
        data = resp.read()  # answered within `wait`: it must be a right one
        expect_status(resp.status, data, 200)
        check_final("generate", parse_json(data, "answer"))
        return "done", 0
    finally:
        conn.close()


def do_oversize(ctx: "Soak", rng: random.Random) -> tuple[str, int]:
    """A well-formed body just over the limit: 413."""
    pad = ctx.max_body + rng.randint(1, 64 << 10)
    if rng.random() < 0.5:
        path, body = "/api/generate", {"model": rng.choice(ctx.models), "prompt": "x" * pad}
    else:
        path, body = "/api/chat", {"model": rng.choice(ctx.models),
                                   "messages": [{"role": "user", "content": "y" * pad}]}
    status, data = ctx.http.call("POST", path, body)
    expect_status(status, data, 413)
    return "413", 0


def do_malformed(ctx: "Soak", rng: random.Random) -> tuple[str, int]:
    """A broken body on a generation route: 400. (Bytes after a complete JSON value
    are ignored, as Ollama does, so they are not among the breakages.)"""
    model = rng.choice(ctx.models)
    path = rng.choice(["/api/generate", "/api/chat", "/v1/chat/completions"])
    good = {"model": model}
    if path == "/api/generate":
        good["prompt"], wrong = "hi", {"model": model, "prompt": {"not": "text"}}
    else:
        good["messages"] = [{"role": "user", "content": "hi"}]
        wrong = {"model": model, "messages": "hi"}
    text = json.dumps(good)
    raw = rng.choice([
        text[: rng.randint(1, len(text) - 1)].encode(),  # truncated
        ("x" + text).encode(),  # garbage first
        b"\xff\xfe\x00not json",
        b"[1, 2,",
        json.dumps(wrong).encode(),  # a field of the wrong type
        b"",  # no body
    ])
    status, data = ctx.http.call("POST", path, raw=raw)
    expect_status(status, data, 400)
    return "400", 0


def do_unknown(ctx: "Soak", rng: random.Random) -> tuple[str, int]:
    """A model that does not exist: 404."""
    name = f"soak-missing-{rng.randint(0, 10**6)}:latest"
    path, body = rng.choice([
        ("/api/generate", {"model": name, "prompt": "hi"}),
        ("/api/chat", {"model": name, "messages": [{"role": "user", "content": "hi"}]}),
        ("/api/show", {"model": name}),
        ("/v1/chat/completions", {"model": name,
                                  "messages": [{"role": "user", "content": "hi"}]}),
    ])
    status, data = ctx.http.call("POST", path, body)
    expect_status(status, data, 404)
    return "404", 0


def do_copy(ctx: "Soak", rng: random.Random) -> tuple[str, int]:
    """Copy (or create from) an original to a new name, show it, delete it, show it
    again (404). Each step's failure is labelled with the step."""
    src = rng.choice(ctx.models)
    dst = f"soak-copy-{threading.get_ident() % 100000}-{rng.randint(0, 10**9)}:latest"
    if rng.random() < 0.7:
        status, data = ctx.http.call("POST", "/api/copy", {"source": src, "destination": dst})
        step = "copy"
    else:
        status, data = ctx.http.call("POST", "/api/create", {
            "model": dst, "from": src, "system": "You answer in one line.", "stream": False})
        step = "create"
    if status != 200:
        raise Fail(f"{step} HTTP {status}", repr(data[:200]))
    status, data = ctx.http.call("POST", "/api/show", {"model": dst})
    if status != 200:
        raise Fail(f"show copy HTTP {status}", repr(data[:200]))
    status, data = ctx.http.call("DELETE", "/api/delete", {"model": dst})
    if status != 200:
        raise Fail(f"delete HTTP {status}", repr(data[:200]))
    status, data = ctx.http.call("POST", "/api/show", {"model": dst})
    if status != 404:
        raise Fail(f"show deleted HTTP {status}", repr(data[:200]))
    return "ok", 0


def do_ps(ctx: "Soak", rng: random.Random) -> tuple[str, int]:
    """GET /api/ps: 200 and a model list."""
    status, data = ctx.http.call("GET", "/api/ps")
    expect_status(status, data, 200)
    if not isinstance(parse_json(data, "ps").get("models"), list):
        raise Fail("ps without models", repr(data[:200]))
    return "ok", 0


ACTIONS = {
    "generate_stream": lambda c, r: do_generation(c, r, "generate", True),
    "generate": lambda c, r: do_generation(c, r, "generate", False),
    "chat_stream": lambda c, r: do_generation(c, r, "chat", True),
    "chat": lambda c, r: do_generation(c, r, "chat", False),
    "openai_stream": lambda c, r: do_generation(c, r, "openai", True),
    "openai": lambda c, r: do_generation(c, r, "openai", False),
    "cut": lambda c, r: do_generation(c, r, r.choice(["generate", "chat", "openai"]),
                                      True, cut=True),
    "abandon": do_abandon,
    "oversize": do_oversize,
    "malformed": do_malformed,
    "unknown": do_unknown,
    "copy": do_copy,
    "ps": do_ps,
}


# --------------------------------------------------------------------------- the run
def metrics(http_: Http) -> dict[str, list[tuple[dict, float]]]:
    """/metrics as {sample name: [(labels, value)]}."""
    status, data = http_.call("GET", "/metrics", timeout=30)
    expect_status(status, data, 200)
    out: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for line in data.decode().splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[m.group(1)].append((labels, float(m.group(3))))
    return out


def model_loads(ms: dict) -> int:
    """Model loads so far (the count of the load-time histogram, all models)."""
    return int(sum(v for _, v in ms.get("wick_model_load_duration_seconds_count", [])))


def gauge(ms: dict, name: str) -> dict[str, float]:
    """A gauge family by its `model` label ("" when unlabelled)."""
    return {labels.get("model", ""): v for labels, v in ms.get(name, [])}


class Soak:
    """The server under test, the clients, the tags probe and the liveness monitor."""

    def __init__(self, wick: Wick, models: list[str], clients: int, max_body: int,
                 seed: int):
        self.wick, self.models, self.n_clients = wick, models, clients
        self.max_body, self.seed = max_body, seed
        self.http = Http(wick.base)
        self.tally = Tally()
        self.tags_ms: list[float] = []
        self.tags_errors: list[str] = []
        self.died: str | None = None
        self.stop_load = threading.Event()
        self.stop_all = threading.Event()
        self.weights = (list(KINDS), list(KINDS.values()))
        self.rss_peak_kb = 0
        self.phase_seconds: dict[str, float] = {}

    # ---------------------------------------------------------------- background
    def alive(self) -> bool:
        """Whether the server process still runs."""
        if self.wick.proc is not None:
            return self.wick.proc.poll() is None
        pid = self.wick.pid
        return pid is None or os.path.exists(f"/proc/{pid}")

    def monitor(self) -> None:
        """Every 0.5 s: is the server alive? If not, note it and stop everything."""
        while not self.stop_all.wait(0.5):
            if not self.alive():
                rc = self.wick.proc.returncode if self.wick.proc else "?"
                self.died = f"server process exited (status {rc}) at {time.strftime('%X')}"
                log(f"soak: {self.died}\n{self.wick.log_tail(40)}")
                self.stop_load.set()
                self.stop_all.set()

    def start_tags_probe(self) -> None:
        """The tags probe in a child process (so that the GIL, busy with 64 client
        threads, does not add to the latencies it measures), and a thread here that
        collects its answers."""
        mp = multiprocessing.get_context("fork")  # forked before any client thread
        ours, theirs = mp.Pipe(duplex=False)
        self.probe_stop = mp.Event()
        self.probe = mp.Process(target=probe_tags, args=(self.wick.base, theirs,
                                                         self.probe_stop), daemon=True)
        self.probe.start()
        theirs.close()

        def collect() -> None:
            while True:
                try:
                    what, value = ours.recv()
                except (EOFError, OSError):
                    return
                (self.tags_ms if what == "ms" else self.tags_errors).append(value)

        self.probe_reader = threading.Thread(target=collect, daemon=True)
        self.probe_reader.start()

    def stop_tags_probe(self) -> None:
        self.probe_stop.set()
        self.probe.join(10)
        self.probe_reader.join(10)

    # ---------------------------------------------------------------- load
    def client(self, i: int, phase: str) -> None:
        """One client: random requests until the load stops."""
        rng = random.Random(f"{self.seed}-{phase}-{i}")
        while not self.stop_load.is_set():
            kind = rng.choices(*self.weights)[0]
            t0 = time.perf_counter()
            try:
                outcome, tokens = ACTIONS[kind](self, rng)
                self.tally.record(kind, outcome, time.perf_counter() - t0, tokens)
            except Fail as e:
                self.tally.record(kind, e.label, time.perf_counter() - t0, detail=str(e))
            except Exception as e:  # noqa: BLE001 - a transport failure of this request
                self.tally.record(kind, type(e).__name__, time.perf_counter() - t0,
                                  detail=f"{type(e).__name__}: {e}")
            time.sleep(rng.uniform(0, 0.2))

    def run_load(self, phase: str, seconds: float, settle_max: float = 0) -> bool:
        """`n_clients` clients for `seconds` (and, when `settle_max` is larger, on
        until RSS grew less than SETTLE_GROWTH over the last SETTLE_WINDOW seconds or
        `settle_max` seconds passed), then wait for their last requests. False when
        some client is still stuck after REQUEST_TIMEOUT."""
        log(f"soak: {phase}: {self.n_clients} clients for {seconds:.0f} s")
        self.stop_load.clear()
        threads = [threading.Thread(target=self.client, args=(i, phase), daemon=True)
                   for i in range(self.n_clients)]
        for t in threads:
            t.start()
        start = time.monotonic()
        rss: list[tuple[float, int]] = []
        while not self.stop_load.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= seconds and (elapsed >= settle_max or self.settled(rss)):
                break
            time.sleep(10.0 if elapsed >= seconds else min(10.0, seconds - elapsed))
            now_rss = self.rss_kb()
            if now_rss:
                rss.append((time.monotonic(), now_rss))
                self.rss_peak_kb = max(self.rss_peak_kb, now_rss)
            log(f"soak: {phase}: {self.progress()}")
        self.stop_load.set()
        end = time.monotonic() + REQUEST_TIMEOUT + 30
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            log(f"soak: {phase}: {stuck} client(s) still waiting for an answer")
        self.phase_seconds[phase] = time.monotonic() - start
        return stuck == 0

    @staticmethod
    def settled(rss: list[tuple[float, int]]) -> bool:
        """Whether RSS under load grew less than SETTLE_GROWTH over SETTLE_WINDOW s."""
        if not rss or rss[-1][0] - rss[0][0] < SETTLE_WINDOW:
            return False
        t_last, last = rss[-1]
        past = [v for t, v in rss if t <= t_last - SETTLE_WINDOW][-1]
        return last <= past * (1 + SETTLE_GROWTH)

    def rss_kb(self) -> int | None:
        return proc_status_kb(self.wick.pid, "VmRSS") if self.wick.pid else None

    def progress(self) -> str:
        with self.tally.lock:
            n = sum(self.tally.outcomes.values())
            toks = sum(self.tally.tokens.values())
        rss = self.rss_kb()
        return (f"{n} requests, {self.tally.failed()} failed, {toks} tokens, RSS "
                f"{fmt_mib(rss)}, tags p99 {fmt_ms(percentile(self.tags_ms[-600:], 99))} ms")

    def idle_rss_kb(self) -> int | None:
        """VmRSS after IDLE_SECONDS without load."""
        time.sleep(IDLE_SECONDS)
        return self.rss_kb()

    def preload(self) -> None:
        """Load every model with a one-token request (so no load counts as a request)."""
        for m in self.models:
            status, data = self.http.call("POST", "/api/generate", {
                "model": m, "prompt": "Hello", "stream": False, "options": {"num_predict": 1}})
            expect_status(status, data, 200)

    def unload_all(self) -> list[str]:
        """keep_alive 0 for every model; the models /api/ps still lists after 10 s."""
        for m in self.models:
            self.http.call("POST", "/api/generate", {"model": m, "keep_alive": 0})
        left: list[str] = []
        for _ in range(20):
            status, data = self.http.call("GET", "/api/ps", timeout=30)
            left = [x.get("name") for x in parse_json(data, "ps").get("models", [])]
            if not left:
                break
            time.sleep(0.5)
        return left

    def leftover_copies(self) -> list[str]:
        """Delete copies a failed client left behind; their names."""
        names = sorted(n for n in self.wick.models() if n and n.startswith("soak-copy-"))
        for n in names:
            self.http.call("DELETE", "/api/delete", {"model": n})
        return sorted(set(names))


def probe_tags(base: str, out, stop) -> None:
    """(Child process) GET /api/tags every TAGS_PERIOD seconds on a new connection;
    sends ("ms", latency) or ("error", message) to `out` until `stop` is set."""
    http_ = Http(base)
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            status, data = http_.call("GET", "/api/tags", timeout=30)
            ms = (time.perf_counter() - t0) * 1000
            out.send(("ms", ms) if status == 200 else ("error", f"HTTP {status}"))
        except Exception as e:  # noqa: BLE001 - counted, the probe goes on
            out.send(("error", f"{type(e).__name__}: {e}"))
        time.sleep(max(0.0, TAGS_PERIOD - (time.perf_counter() - t0)))
    out.close()


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


# --------------------------------------------------------------------------- report
def outcome_table(t: Tally) -> str:
    """Per kind: requests, right answers by outcome, failures by label, tokens, p50/p99."""
    rows = ["| kind | requests | right answers | failures | tokens | p50 s | p99 s |",
            "|---|---:|---|---|---:|---:|---:|"]
    total = Counter()
    for kind in KINDS:
        per = {o: n for (k, o), n in t.outcomes.items() if k == kind}
        good = ", ".join(f"{o} {n}" for o, n in sorted(per.items()) if o in GOOD)
        bad = ", ".join(f"{o} {n}" for o, n in sorted(per.items()) if o not in GOOD)
        lat = t.latencies.get(kind, [])
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        rows.append(f"| {kind} | {sum(per.values())} | {good or '-'} | {bad or '-'} | "
                    f"{t.tokens[kind]} | {'-' if p50 is None else f'{p50:.2f}'} | "
                    f"{'-' if p99 is None else f'{p99:.2f}'} |")
        total["n"] += sum(per.values())
        total["bad"] += sum(n for o, n in per.items() if o not in GOOD)
    rows.append(f"| **all** | {total['n']} | | {total['bad']} failed | "
                f"{sum(t.tokens.values())} | | |")
    return "\n".join(rows)


def log_problems(wick: Wick) -> tuple[int, int, list[str]]:
    """Panics and ERROR lines in a spawned server's log, and the first few of them."""
    if wick.log_path is None or not wick.log_path.exists():
        return 0, 0, []
    lines = wick.log_path.read_text(errors="replace").splitlines()
    panics = [l for l in lines if "panicked" in l]
    errors = [l for l in lines if " ERROR " in l or "\x1b[31mERROR" in l]
    return len(panics), len(errors), (panics + errors)[:10]


def main() -> int:
    ap = argparse.ArgumentParser(description="soak test of wick serve (issue 13)")
    ap.add_argument("--duration", type=float, default=1200, help="soak seconds (1200)")
    ap.add_argument("--warmup", type=float, default=60, help="warm-up seconds (60)")
    ap.add_argument("--warmup-max", type=float, default=600,
                    help="longest warm-up while RSS still grows (600)")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients (64)")
    ap.add_argument("--models", default="smollm2,qwen",
                    help=f"comma-separated keys of {[m[0] for m in MODELS]} (smollm2,qwen)")
    ap.add_argument("--wick-bin", type=Path, default=REPO / "target" / "release" / "wick")
    ap.add_argument("--wick-url", default=None,
                    help="an already running wick serve with the models imported")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("WICK_MODEL_CACHE", REPO / "models-cache")))
    ap.add_argument("--max-body-bytes", type=int, default=1 << 20,
                    help="WICK_MAX_BODY_BYTES (set on a spawned server; must match a "
                         "--wick-url server's)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the clients' choices")
    args = ap.parse_args()
    by_key = {m[0]: m for m in MODELS}
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if not keys or any(k not in by_key for k in keys):
        ap.error(f"--models: choose from {list(by_key)}")
    names = [by_key[k][2] for k in keys]

    wick = Wick(args.wick_url, args.wick_bin, temp_store=not args.wick_url, env={
        "WICK_MAX_BODY_BYTES": str(args.max_body_bytes), "OLLAMA_MAX_QUEUE": str(MAX_QUEUE),
        "OLLAMA_KEEP_ALIVE": "30m"})
    try:
        for k, name in zip(keys, names):
            if wick.spawned:
                wick.import_gguf(name, args.cache / by_key[k][1])
            elif not wick.has_model(name):
                raise RuntimeError(f"{name} is not in the store of {wick.base}")
        soak = Soak(wick, names, args.clients, args.max_body_bytes, args.seed)
        return run(soak, args)
    finally:
        wick.close()


def run(soak: Soak, args) -> int:
    """The phases, the checks and the summary; the exit status."""
    wick = soak.wick
    t_start = time.monotonic()
    soak.preload()
    loads_before = model_loads(metrics(soak.http))
    soak.start_tags_probe()
    monitor = threading.Thread(target=soak.monitor, daemon=True)
    monitor.start()
    drained = soak.run_load("warm-up", args.warmup, settle_max=args.warmup_max)
    rss_warm = soak.idle_rss_kb()
    log(f"soak: RSS after warm-up and {IDLE_SECONDS} s idle: {fmt_mib(rss_warm)}")
    if not soak.died:
        drained = soak.run_load("soak", args.duration) and drained
    rss_end = soak.idle_rss_kb()
    idle, unloaded, left, rss_unloaded = {}, {}, ["?"], None
    reloads = None
    if not soak.died:
        idle = metrics(soak.http)
        reloads = model_loads(idle) - loads_before
        left = soak.unload_all()
        unloaded = metrics(soak.http)
        rss_unloaded = soak.idle_rss_kb()
    copies = soak.leftover_copies() if not soak.died else []
    soak.stop_all.set()
    soak.stop_tags_probe()
    monitor.join(5)
    wall = time.monotonic() - t_start

    t = soak.tally
    tags = soak.tags_ms
    tags_p99 = percentile(tags, 99)
    kv_idle = gauge(idle, "wick_kv_cache_used_bytes")
    running_idle = sum(gauge(idle, "wick_running_sequences").values())
    queue_idle = sum(gauge(idle, "wick_queue_depth").values())
    kv_after_unload = sum(gauge(unloaded, "wick_kv_cache_used_bytes").values())
    panics, errors, problem_lines = log_problems(wick)
    rss_growth = (rss_end / rss_warm - 1) if rss_warm and rss_end else None

    print()
    print(f"soak: {wick.base} ({'spawned ' + str(args.wick_bin) if wick.spawned else 'given'}), "
          f"models {', '.join(soak.models)}, {args.clients} clients, warm-up "
          f"{soak.phase_seconds.get('warm-up', 0):.0f} s + soak "
          f"{soak.phase_seconds.get('soak', 0):.0f} s (each with the drain of its last "
          f"requests; {wall:.0f} s in all), "
          f"WICK_MAX_BODY_BYTES {args.max_body_bytes}, OLLAMA_MAX_QUEUE {MAX_QUEUE}, "
          f"seed {args.seed}; load avg at end {os.getloadavg()[0]:.2f}")
    print()
    print(outcome_table(t))
    print()
    print(f"GET /api/tags probe: {len(tags)} answers, {len(soak.tags_errors)} errors, p50 "
          f"{fmt_ms(percentile(tags, 50))} ms, p99 {fmt_ms(tags_p99)} ms, max "
          f"{fmt_ms(max(tags) if tags else None)} ms")
    print(f"RSS: after warm-up {fmt_mib(rss_warm)}, at the end {fmt_mib(rss_end)} "
          f"({'-' if rss_growth is None else f'{rss_growth:+.1%}'}), both after "
          f"{IDLE_SECONDS} s idle; peak under load {fmt_mib(soak.rss_peak_kb or None)}; "
          f"after unloading every model {fmt_mib(rss_unloaded)}")
    print("idle: running sequences {:.0f}, queue depth {:.0f}, KV bytes held as reusable "
          "prefixes: {}; after unloading every model: KV bytes {:.0f}, /api/ps lists {}"
          .format(running_idle, queue_idle,
                  ", ".join(f"{m} {v / 2**20:.1f} MiB" for m, v in kv_idle.items()) or "-",
                  kv_after_unload, left or "none"))
    print(f"server log: {panics} panics, {errors} ERROR lines"
          + (f"; leftover copies deleted: {copies}" if copies else ""))
    for line in problem_lines:
        print(f"  {line[:240]}")
    if t.failures:
        print(f"first failures ({len(t.failures)} shown of {t.failed()}):")
        for when, kind, msg in t.failures[:20]:
            print(f"  {when} {kind}: {msg[:240]}")

    checks = [
        ("server never died", soak.died is None, soak.died or "alive"),
        ("no panic in the server log", panics == 0, f"{panics} panics"),
        ("every request answered right", t.failed() == 0, f"{t.failed()} failed"),
        ("no client left waiting", drained, "all drained" if drained else "stuck clients"),
        (f"tags p99 < {TAGS_P99_LIMIT_MS:.0f} ms",
         tags_p99 is not None and tags_p99 < TAGS_P99_LIMIT_MS and not soak.tags_errors,
         f"p99 {fmt_ms(tags_p99)} ms, {len(soak.tags_errors)} errors"),
        ("no model loaded again after the preload", reloads == 0,
         f"{reloads} loads (keep_alive 30m, 2 models: none expected)"),
        ("idle: no running sequence, empty queue", bool(idle) and running_idle == 0
         and queue_idle == 0, f"running {running_idle:.0f}, queued {queue_idle:.0f}"),
        ("KV bytes 0 once unloaded", bool(unloaded) and kv_after_unload == 0 and not left,
         f"{kv_after_unload:.0f} bytes, ps {left or 'empty'}"),
        (f"RSS end at most {RSS_TOLERANCE:.0%} above warm", rss_growth is not None
         and rss_growth <= RSS_TOLERANCE,
         "-" if rss_growth is None else f"{rss_growth:+.1%}"),
    ]
    print()
    for name, ok, what in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {what}")
    if soak.died or panics:
        log(wick.log_tail(40))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
