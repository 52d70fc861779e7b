#!/usr/bin/env python3
"""Start and stop llama.cpp's llama-server (embedded in the `xllamacpp` wheel) for the
benchmarks and the fixture recorder, plus small /proc helpers (peak RSS, the pid
listening on a port).

Two ways to run the server:

  in_process=False  (default) a child Python process (`python llamacpp_server.py serve
                    ...`) loads the model, prints one JSON line with its address and
                    waits until its stdin closes. Its peak RSS (VmHWM) is measurable,
                    and the benchmark client does not share a process with the server.
                    The child's RSS before it loads the model (Python + the xllamacpp
                    import) is reported as `baseline_rss_kb`.
  in_process=True   the server runs inside this process (xllamacpp.Server), as the
                    fixture recorder always did. No separate RSS.

llama.cpp splits n_ctx evenly across its n_parallel slots (kv_unified off), so callers
give the total: n_ctx = n_parallel * per-slot context. Continuous batching is on
(llama.cpp's default). Threads: 2 for decode and for batch (prefill). `embedding=True`
starts it in embedding mode (`--embedding`), pooled as the GGUF says, for
/v1/embeddings.

    from llamacpp_server import LlamaCppServer
    srv = LlamaCppServer(path, n_ctx=4096, n_parallel=4)
    srv.post("/completion", {...}); srv.peak_rss_kb(); srv.close()

Needs .venv-bench (scripts/setup-bench-venv.sh).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

N_THREADS = 2
REQUEST_TIMEOUT = 900
READY_TIMEOUT = 300


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc helpers
def proc_status_kb(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_kb(pid: int) -> int | None:
    return proc_status_kb(pid, "VmHWM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listen_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, state, inode = cols[1], cols[3], cols[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return inodes


def pid_listening_on(port: int) -> int | None:
    """The pid of the process with a TCP socket listening on `port` (any local address):
    the socket inode from /proc/net/tcp{,6}, then the process whose fd points at it.
    Falls back to `ss -ltnpH`. None if not found (or not permitted)."""
    inodes = {f"socket:[{i}]" for i in _listen_inodes(port) if i != "0"}
    if inodes:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                for fd in os.listdir(f"/proc/{d}/fd"):
                    try:
                        if os.readlink(f"/proc/{d}/fd/{fd}") in inodes:
                            return int(d)
                    except OSError:
                        continue
            except OSError:
                continue
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if "pid=" in line:
            try:
                return int(line.split("pid=", 1)[1].split(",", 1)[0])
            except ValueError:
                pass
    return None


def fmt_mib(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f} MiB"


# --------------------------------------------------------------------------- the server
def _params(model: str, n_ctx: int, n_parallel: int, threads: int, verbosity: int,
            embedding: bool = False, pooling: int | None = None,
            flash_attn: bool | None = None):
    import xllamacpp

    p = xllamacpp.CommonParams()
    if embedding:
        p.embedding = True  # pooling_type stays -1: the GGUF's <arch>.pooling_type
        if pooling is not None:
            p.pooling_type = pooling
    p.model.path = str(model)
    p.n_ctx = n_ctx
    p.n_parallel = n_parallel
    p.cont_batching = True
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.verbosity = verbosity
    if flash_attn is not None:
        # None keeps llama.cpp's default (auto: on for the CPU backend).
        kind = xllamacpp.llama_flash_attn_type
        p.flash_attn_type = (kind.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                             else kind.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    if n_parallel > 1:
        # llama-server's own rule for its HTTP pool: enough threads for every slot.
        p.n_threads_http = max(n_parallel + 2, (os.cpu_count() or 1) - 1)
    return p


def _version() -> tuple[str, str]:
    import xllamacpp

    return f"xllamacpp {xllamacpp.__version__}", str(getattr(xllamacpp, "BUILD_INFO", ""))


class LlamaCppServer:
    """llama.cpp's llama-server on one GGUF file, on a loopback port."""

    def __init__(self, model: Path | str, n_ctx: int = 4096, n_parallel: int = 1,
                 threads: int = N_THREADS, in_process: bool = False, verbosity: int = 0,
                 embedding: bool = False, pooling: int | None = None,
                 flash_attn: bool | None = None):
        if pooling is not None and not in_process:
            raise ValueError("pooling is only passed to an in-process server")
        self.model = Path(model)
        self.n_ctx, self.n_parallel, self.threads = n_ctx, n_parallel, threads
        self.embedding = embedding
        self.flash_attn = flash_attn
        self.proc: subprocess.Popen | None = None
        self.server = None
        self.log_path: Path | None = None
        self.baseline_rss_kb: int | None = None
        # Seconds the child took to construct the server (load the model, warm up).
        self.load_seconds: float | None = None
        self.final_peak_rss_kb: int | None = None
        if not in_process:
            self._spawn(verbosity)
        else:
            import xllamacpp

            self.server = xllamacpp.Server(_params(str(self.model), n_ctx, n_parallel,
                                                   threads, verbosity, embedding, pooling,
                                                   flash_attn))
            base = self.server.listening_address
            self.version, self.build_info = _version()
            self._set_base(base)

    def _set_base(self, base: str) -> None:
        self.base = base if base.startswith("http") else "http://" + base

    def _spawn(self, verbosity: int) -> None:
        fd, name = tempfile.mkstemp(prefix="llamacpp-bench-", suffix=".log")
        self.log_path = Path(name)
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve", "--model",
               str(self.model), "--n-ctx", str(self.n_ctx), "--parallel",
               str(self.n_parallel), "--threads", str(self.threads), "--verbosity",
               str(verbosity)] + (["--embedding"] if self.embedding else []) + (
                   [] if self.flash_attn is None
                   else ["--flash-attn", "on" if self.flash_attn else "off"])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fd, text=True)
        os.close(fd)
        # The child prints exactly one JSON line once the server listens.
        line = self._read_ready_line(READY_TIMEOUT)
        try:
            info = json.loads(line)
        except json.JSONDecodeError:
            self.close()
            raise RuntimeError(f"llama.cpp child said {line!r}\n{self.log_tail()}")
        self.version, self.build_info = info["version"], info["build_info"]
        self.baseline_rss_kb = info.get("baseline_rss_kb")
        self.load_seconds = info.get("load_seconds")
        self._set_base(info["address"])

    def _read_ready_line(self, timeout: float) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                line = self.proc.stdout.readline()
                if line:
                    return line
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.close()
                raise RuntimeError(f"llama.cpp child exited with {rc} while loading "
                                   f"{self.model.name}\n{self.log_tail()}")
        self.close()
        raise RuntimeError(f"llama.cpp child not ready after {timeout}s\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def peak_rss_kb(self) -> int | None:
        """Peak RSS of the server process so far (after close: at shutdown), or None
        when the server runs in this process."""
        if self.proc is not None and self.proc.poll() is None:
            v = peak_rss_kb(self.proc.pid)
            if v is not None:
                self.final_peak_rss_kb = v
        return self.final_peak_rss_kb

    def log_tail(self, n: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("  llama.cpp| " + line for line in lines[-n:])

    def post(self, path: str, body: dict, timeout: float = REQUEST_TIMEOUT) -> dict:
        r = requests.post(self.base + path, json=body, timeout=timeout)
        if r.status_code != 200:
            raise RuntimeError(f"llama.cpp {path} -> {r.status_code}: {r.text[:500]}")
        return r.json()

    def tokenize(self, text: str, add_special: bool = True, with_pieces: bool = False):
        return self.post("/tokenize", {"content": text, "add_special": add_special,
                                       "parse_special": True,
                                       "with_pieces": with_pieces})["tokens"]

    def count_tokens(self, text: str) -> int:
        # Same tokenization /completion applies to a string prompt.
        return len(self.tokenize(text, add_special=True))

    def detokenize(self, ids: list[int]) -> str:
        return self.post("/detokenize", {"tokens": ids})["content"]

    def close(self) -> None:
        if self.server is not None:
            del self.server
            self.server = None
            gc.collect()
        if self.proc is not None:
            self.peak_rss_kb()  # last reading while it is alive
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.close()  # the child's cue to stop
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.terminate()
                    try:
                        self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            if self.log_path is not None and self.proc.returncode == 0:
                self.log_path.unlink(missing_ok=True)
                self.log_path = None

    def __enter__(self) -> "LlamaCppServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- child process
def _serve(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="llamacpp_server.py serve")
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-ctx", type=int, required=True)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--threads", type=int, default=N_THREADS)
    ap.add_argument("--verbosity", type=int, default=0)
    ap.add_argument("--embedding", action="store_true")
    ap.add_argument("--flash-attn", choices=["on", "off"])
    a = ap.parse_args(argv)
    import xllamacpp

    baseline = proc_status_kb(os.getpid(), "VmRSS")
    started = time.monotonic()
    flash = None if a.flash_attn is None else a.flash_attn == "on"
    server = xllamacpp.Server(_params(a.model, a.n_ctx, a.parallel, a.threads, a.verbosity,
                                      a.embedding, flash_attn=flash))
    load_seconds = time.monotonic() - started
    version, build = _version()
    print(json.dumps({"address": server.listening_address, "version": version,
                      "build_info": build, "baseline_rss_kb": baseline,
                      "load_seconds": load_seconds}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    del server
    gc.collect()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(_serve(sys.argv[2:]))
    # Smoke test: python llamacpp_server.py MODEL.gguf [n_parallel]
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    with LlamaCppServer(sys.argv[1], n_ctx=1024 * int(sys.argv[2] if len(sys.argv) > 2 else 1),
                        n_parallel=int(sys.argv[2]) if len(sys.argv) > 2 else 1) as s:
        print(s.version, s.base, s.tokenize("Hello world"))
        r = s.post("/completion", {"prompt": "The capital of France is", "n_predict": 8,
                                   "temperature": 0})
        print(repr(r["content"]), r["timings"])
        print("peak RSS", fmt_mib(s.peak_rss_kb()), "baseline", fmt_mib(s.baseline_rss_kb))
