"""Drive an interactive `wick run` under a pseudo-terminal, as a person would.

Run by tests/repl.rs with WICK_BIN (the wick binary), OLLAMA_HOST (a running server)
and WICK_TEST_MODEL. Uses only the standard library. Each step waits for what the
REPL prints; the last line printed is 'N passed, 0 failed'.
"""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

wick = os.environ["WICK_BIN"]
model = os.environ["WICK_TEST_MODEL"]
TIMEOUT = 120
passed = 0

COLUMNS = 40
master, slave = pty.openpty()
# A narrow terminal: answers are wrapped at its width, as Ollama's CLI wraps them.
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
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


def screen(printed):
    """The lines a terminal shows for `printed` (cursor-left and erase-line applied)."""
    lines, col = [[]], 0
    for m in re.finditer(r"\x1b\[\??([\d;]*)([A-Za-z])|(.)", printed, re.S):
        n, code, ch = m.groups()
        line = lines[-1]
        if code == "D":
            col = max(0, col - int(n.split(";")[0] or 1))
        elif code == "K":
            del line[col:]
        elif code:
            pass
        elif ch == "\n":
            lines.append([])
            col = 0
        elif ch == "\r":
            col = 0
        elif col < len(line):
            line[col] = ch
            col += 1
        else:
            line.append(ch)
            col += 1
    return ["".join(l) for l in lines]


def send(line):
    os.write(master, (line + "\n").encode())


expect("prompt", ">>> ")
send("/set parameter temperature 0")
expect("set temperature", "Set parameter 'temperature' to '0'", ">>> ")
send("/set parameter num_predict 40")
expect("set num_predict", "Set parameter 'num_predict' to '40'", ">>> ")
send("/show info")
expect("show info", "architecture", "llama", ">>> ")
send('"""Describe the city of Paris')
expect("multi-line continues", "... ")
send('in a few sentences."""')
out = expect("answer", ">>> ")
# What follows the echoed input and precedes the next prompt is the model's answer.
answer = out.rsplit('"""', 1)[-1].rsplit(">>> ", 1)[0]
if not any(ch.isalnum() for ch in answer):
    fail("answer has text", out)
shown = screen(answer)
if "\x1b[K" not in answer or any(len(l) > COLUMNS - 5 for l in shown):
    fail("answer wrapped to the terminal", shown)
passed += 1
print("ok answer wrapped to the terminal", flush=True)
send("/set nowordwrap")
expect("set nowordwrap", "Set 'nowordwrap' mode.", ">>> ")
send("/set parameter")
expect("usage", "Usage: /set parameter <name> <value>", ">>> ")
# The up arrow recalls the last line (history), Enter sends it again.
os.write(master, b"\x1b[A\r")
expect("history recalls the last line", "Usage: /set parameter <name> <value>", ">>> ")
# Typed ahead while the last answer may still be streaming, the second turn and /bye
# arrive together: the line editor must keep what it read past the first line.
os.write(master, b"Tell me more.\n/bye\n")
try:
    code = proc.wait(timeout=30)
except subprocess.TimeoutExpired:
    fail("exit", "did not exit after /bye")
if code != 0:
    fail("exit", code)
passed += 1
print("ok exit 0")
while select.select([master], [], [], 0)[0]:
    try:
        chunk = os.read(master, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk.decode("utf-8", "replace")
# The typed-ahead turn was answered before /bye was read.
turn = seen.rsplit("Tell me more.", 1)[-1].rsplit("/bye", 1)[0]
if "Tell me more." not in seen or "/bye" not in seen or not any(ch.isalnum() for ch in turn):
    fail("typed-ahead turn answered", seen[-2000:])
passed += 1
print("ok typed-ahead turn answered")
history = os.path.join(os.environ["HOME"], ".ollama", "history")
if not os.path.exists(history) or "/set parameter temperature 0" not in open(history).read():
    fail("history file", history)
passed += 1
print("ok history file")
print(f"{passed} passed, 0 failed")
