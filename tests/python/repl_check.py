"""Drive an interactive `wick run` under a pseudo-terminal, as a person would.

Run by tests/repl.rs with WICK_BIN (the wick binary), OLLAMA_HOST (a running server)
and WICK_TEST_MODEL. Uses only the standard library. Each step waits for what the
REPL prints; the last line printed is 'N passed, 0 failed'.
"""

import os
import pty
import select
import subprocess
import sys
import time

wick = os.environ["WICK_BIN"]
model = os.environ["WICK_TEST_MODEL"]
TIMEOUT = 120
passed = 0

master, slave = pty.openpty()
proc = subprocess.Popen([wick, "run", model], stdin=slave, stdout=slave, stderr=slave,
                        env=dict(os.environ), close_fds=True)
os.close(slave)
seen = ""


def fail(name, detail):
    print(f"FAILED {name}: {detail!r}", flush=True)
    print(f"{passed} passed, 1 failed")
    proc.kill()
    sys.exit(1)


def expect(name, *needles):
    """Read until every needle has appeared in the output since the last step."""
    global seen, passed
    deadline = time.monotonic() + TIMEOUT
    while not all(n in seen for n in needles):
        left = deadline - time.monotonic()
        if left <= 0:
            fail(name, seen[-2000:])
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                fail(name, seen[-2000:])
            if not chunk:
                fail(name, seen[-2000:])
            seen += chunk.decode("utf-8", "replace")
    passed += 1
    print(f"ok {name}", flush=True)
    out, seen = seen, ""
    return out


def send(line):
    os.write(master, (line + "\n").encode())


expect("prompt", ">>> ")
send("/set parameter temperature 0")
expect("set temperature", "Set parameter 'temperature' to '0'", ">>> ")
send("/set parameter num_predict 12")
expect("set num_predict", "Set parameter 'num_predict' to '12'", ">>> ")
send("/show info")
expect("show info", "architecture", "llama", ">>> ")
send('"""What is the capital')
expect("multi-line continues", "... ")
send('of France?"""')
out = expect("answer", ">>> ")
# What follows the echoed input and precedes the next prompt is the model's answer.
answer = out.rsplit('"""', 1)[-1].rsplit(">>> ", 1)[0]
if not any(ch.isalnum() for ch in answer):
    fail("answer has text", out)
send("/set parameter")
expect("usage", "Usage: /set parameter <name> <value>", ">>> ")
# The up arrow recalls the last line (history), Enter sends it again.
os.write(master, b"\x1b[A\r")
expect("history recalls the last line", "Usage: /set parameter <name> <value>", ">>> ")
send("Tell me more.")
expect("second turn", ">>> ")
send("/bye")
try:
    code = proc.wait(timeout=30)
except subprocess.TimeoutExpired:
    fail("exit", "did not exit after /bye")
if code != 0:
    fail("exit", code)
passed += 1
print("ok exit 0")
history = os.path.join(os.environ["HOME"], ".ollama", "history")
if not os.path.exists(history) or "/set parameter temperature 0" not in open(history).read():
    fail("history file", history)
passed += 1
print("ok history file")
print(f"{passed} passed, 0 failed")
