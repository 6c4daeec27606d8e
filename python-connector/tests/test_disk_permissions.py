"""The disk tier when the permissions of its cache directory are taken away while it serves, with
real permissions: a process that is not root (root ignores them), so as root the check runs as
``nobody`` through ``setpriv``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534

CHECK = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from waiting import wait_until
    from kvtier.engine import Engine, Layout

    CHUNK, PER_TOKEN = 32, 256
    disk = Path(sys.argv[1])
    layout = Layout("tiny", "bfloat16", 2, 2, 32, bytes_per_token=PER_TOKEN)
    settings = {"chunk_size": CHUNK, "local_disk": str(disk), "max_local_disk_size": 0.01}
    rng = np.random.default_rng(7)

    def prompt(chunks):
        tokens = rng.integers(0, 50_000, chunks * CHUNK, dtype=np.int32)
        data = [rng.integers(0, 256, CHUNK * PER_TOKEN, dtype=np.uint8) for _ in range(chunks)]
        return tokens, data

    def loads(engine, tokens, data):
        out = [np.zeros_like(a) for a in data]
        n = engine.retrieve(tokens, out)
        return n == len(data) and all(np.array_equal(a, b) for a, b in zip(data, out))

    a, b, c = prompt(3), prompt(2), prompt(2)
    with Engine(layout, settings) as engine:
        engine.store(*a)
        wait_until(lambda: engine.stats()["disk_puts"] == 3, "3 chunks on disk")
    (namespace,) = disk.iterdir()  # every chunk of this model is under it

    with Engine(layout, settings) as engine:  # a fresh CPU tier: loads come from disk
        assert engine.lookup(a[0]) == 3 * CHUNK
        namespace.chmod(0)
        assert engine.retrieve(a[0], [np.zeros_like(x) for x in a[1]]) == 0
        # The load reads its chunks in parallel: each read that failed is counted.
        assert 1 <= engine.stats()["disk_error_read_failed"] <= 3, engine.stats()
        assert engine.lookup(a[0]) == 0, "forgotten at the first failed read, not once per load"
        engine.store(*b)
        wait_until(lambda: engine.stats()["disk_error_read_only"] == 2, "both saves refused")
        assert engine.stats()["disk_error_write_failed"] == 0, engine.stats()
        namespace.chmod(0o755)
        engine.store(*c)
        wait_until(lambda: engine.stats()["disk_puts"] == 2, "saves resumed")

    with Engine(layout, settings) as engine:  # the next start finds every file that was written
        assert engine.lookup(a[0]) == 3 * CHUNK and loads(engine, *a)
        assert engine.lookup(c[0]) == 2 * CHUNK and loads(engine, *c)
        assert engine.lookup(b[0]) == 0
    print("permissions check passed")
    """
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="kvtier-perm-"))
    yield path
    subprocess.run(["chmod", "-R", "u+rwx", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def test_permissions_taken_away_cost_one_failed_load_and_saves_resume_once_restored(
    base: Path,
) -> None:
    home = base / "home"
    disk = base / "disk"
    home.mkdir()
    disk.mkdir()
    command = [sys.executable, "-c", CHECK, str(disk), str(Path(__file__).parent)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is missing: permissions cannot be tested")
        for p in (base, home, disk):
            os.chown(p, NOBODY, NOBODY)
        base.chmod(0o755)
        command = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home)}
    env.pop("JAVA_HOME", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "permissions check passed" in done.stdout
