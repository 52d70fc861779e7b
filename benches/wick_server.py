"""A `wick serve` for the benchmarks: spawned here on a free loopback port (and stopped
by close), or an already running one given by URL.

Spawned: OLLAMA_HOST=127.0.0.1:<free port>, OLLAMA_MODELS=<store> (a temporary store
when `temp_store=True`, removed on close), extra environment from `env` (e.g.
OLLAMA_NUM_PARALLEL). `import_gguf` imports a GGUF file the way scripts/serve.sh
does: `wick create NAME -f Modelfile` with a Modelfile `FROM /path/to.gguf`.

Peak RSS: VmHWM of the spawned process, or of the process listening on the URL's
port when wick was given by URL (found through /proc/net/tcp or `ss -ltnp`); then it
is the peak since that process started, unless `reset_peak_rss` was allowed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from llamacpp_server import free_port, peak_rss_kb, pid_listening_on


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Wick:
    def __init__(self, url: str | None, binary: Path, store: Path | None = None,
                 temp_store: bool = False, env: dict[str, str] | None = None,
                 ready_timeout: float = 120):
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.binary = binary
        self.tmp_store: Path | None = None
        self._pid: int | None = None
        self.final_peak_rss_kb: int | None = None
        if url:
            self.base = url.rstrip("/")
            if "//" not in self.base:
                self.base = "http://" + self.base
            self.env = dict(os.environ, OLLAMA_HOST=urlparse(self.base).netloc)
        else:
            if not binary.exists():
                raise RuntimeError(f"wick binary {binary} not found (cargo build --release)")
            port = free_port()
            self.base = f"http://127.0.0.1:{port}"
            self.env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{port}", **(env or {}))
            if temp_store:
                self.tmp_store = Path(tempfile.mkdtemp(prefix="wick-bench-store-"))
                store = self.tmp_store
            if store is not None:
                self.env["OLLAMA_MODELS"] = str(store)
            fd, name = tempfile.mkstemp(prefix="wick-bench-", suffix=".log")
            self.log_path = Path(name)
            extra = " ".join(f"{k}={v}" for k, v in (env or {}).items())
            log(f"spawning {binary} serve on {self.base} (log {self.log_path}"
                f"{', store ' + str(store) if store else ''}{', ' + extra if extra else ''})")
            self.proc = subprocess.Popen([str(binary), "serve"], env=self.env, stdout=fd,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            os.close(fd)
        try:
            self.wait_ready(timeout=ready_timeout)
        except Exception:
            self.close()
            raise

    @property
    def spawned(self) -> bool:
        return self.proc is not None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"wick exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = requests.get(self.base + "/api/version", timeout=5)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = str(e)
            time.sleep(0.5)
        raise RuntimeError(f"wick at {self.base} not ready after {timeout}s ({last})\n"
                           f"{self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("  wick| " + line for line in lines[-n:])

    # ------------------------------------------------------------------ memory
    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        if self._pid is None:
            u = urlparse(self.base)
            if u.hostname in ("127.0.0.1", "localhost", "::1", "0.0.0.0") and u.port:
                self._pid = pid_listening_on(u.port)
        return self._pid

    def peak_rss_kb(self) -> int | None:
        pid = self.pid
        if pid is not None and (self.proc is None or self.proc.poll() is None):
            v = peak_rss_kb(pid)
            if v is not None:
                self.final_peak_rss_kb = v
        return self.final_peak_rss_kb

    def reset_peak_rss(self) -> bool:
        """Reset the spawned wick's VmHWM to its current RSS (writes 5 to
        /proc/<pid>/clear_refs, Linux >= 4.0). Never touches a wick given by URL."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    # ------------------------------------------------------------------ models
    def models(self) -> set[str]:
        r = requests.get(self.base + "/api/tags", timeout=30)
        r.raise_for_status()
        ms = r.json().get("models", [])
        return {m.get("name") for m in ms} | {m.get("model") for m in ms}

    def has_model(self, name: str) -> bool:
        names = self.models()
        return name in names or f"{name}:latest" in names

    def import_gguf(self, name: str, gguf: Path, timeout: float = 600) -> None:
        """`wick create NAME -f Modelfile` (FROM gguf), as scripts/serve.sh does."""
        if self.has_model(name):
            return
        with tempfile.TemporaryDirectory(prefix="wick-bench-mf-") as d:
            mf = Path(d) / "Modelfile"
            mf.write_text(f"FROM {gguf.resolve()}\n")
            log(f"wick create {name} from {gguf}")
            r = subprocess.run([str(self.binary), "create", name, "-f", str(mf)], env=self.env,
                               capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"wick create {name} failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[-500:]}")
        if not self.has_model(name):
            raise RuntimeError(f"wick create {name} succeeded but /api/tags lacks it")

    def unload(self, name: str) -> None:
        """Ollama's unload: /api/generate with only the model and keep_alive 0."""
        try:
            requests.post(self.base + "/api/generate", json={"model": name, "keep_alive": 0},
                          timeout=60)
        except requests.RequestException:
            pass

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        if self.proc is not None:
            self.peak_rss_kb()
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.tmp_store is not None:
            shutil.rmtree(self.tmp_store, ignore_errors=True)
            self.tmp_store = None
