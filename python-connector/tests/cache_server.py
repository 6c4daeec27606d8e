"""Starting ``kvtier-server`` the way its users do (its console script), for the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    port: int, memory_gb: str, *flags: str, log: Path | None = None
) -> subprocess.Popen[str]:
    """kvtier-server started with its documented command, returned once it says it listens.

    Its output goes to a pipe (read it with ``communicate``), or to ``log`` for a server that runs
    long enough to fill a pipe nobody reads. The console script execs the JVM, so the process is the
    server itself: signals sent to it reach the JVM.
    """
    exe = Path(sys.executable).with_name("kvtier-server")
    env = dict(os.environ, KVTIER_JVM_HEAP="256m")
    env.pop("JAVA_HOME", None)
    command = [str(exe), "--port", str(port), "--memory-gb", memory_gb, "--max-value-mb", "2"]
    out = log.open("w") if log is not None else subprocess.PIPE
    proc = subprocess.Popen(
        [*command, *flags], stdout=out, stderr=subprocess.STDOUT, text=True, env=env
    )
    if log is not None:
        out.close()  # type: ignore[union-attr]
    seen = _wait_listening(proc, port, log)
    if f"listening on 127.0.0.1:{port}" not in seen:
        proc.kill()
        proc.wait()
        raise AssertionError(f"kvtier-server did not start: {seen}")
    return proc


def _wait_listening(proc: subprocess.Popen[str], port: int, log: Path | None) -> str:
    """What the server wrote until its "listening on" line, or until it exited."""
    if log is None:
        seen = []
        for _ in range(20):  # log lines (stderr) come first
            seen.append(proc.stdout.readline())  # type: ignore[union-attr]
            if "listening on" in seen[-1]:
                break
        return "".join(seen)
    deadline = time.monotonic() + 120  # a bound for a stuck start, never reached otherwise
    while proc.poll() is None and time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "listening on" in text:
            return text
        time.sleep(0.05)
    return log.read_text(errors="replace")
