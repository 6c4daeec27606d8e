from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def pytest_report_header() -> str:
    """Names the CPU, dtype and threads the vLLM tests run with, at the top of every run."""
    sys.path.insert(0, str(EXAMPLES))
    import vllm_cpu

    return f"kvtier vLLM tests: {vllm_cpu.summary(dtype='float32')}"


def run_python(
    code: str, env: Mapping[str, str | None] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter (a JVM starts once per process, so start-up cases
    each need their own). ``env`` values of None remove the variable."""
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fake_java_home(tmp_path: Path):
    """Returns a factory for directories that look like a Java home of a given version."""

    def make(version: str) -> Path:
        home = tmp_path / f"jdk-{version}"
        (home / "lib" / "server").mkdir(parents=True)
        (home / "lib" / "server" / "libjvm.so").write_bytes(b"")
        (home / "release").write_text(f'JAVA_VERSION="{version}"\n')
        return home

    return make
