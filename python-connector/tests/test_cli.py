"""The installed ``kvtier`` command, as an operator runs it: a disk tier's directory written by a
real engine, looked at, checked (one file damaged), cleared; a configuration checked; exit
statuses scripts can use. The commands' logic is tested in Java (``CliTest``); this checks the
wheel's entry point runs them on the JDK kvtier brings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from kvtier.engine import Engine, Layout

CHUNK = 256


def kvtier(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("kvtier")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, env=env)


def test_disk_commands_on_a_tier_an_engine_wrote(tmp_path: Path) -> None:
    disk = tmp_path / "kv"
    layout = Layout("m", "float16", 2, 2, 64, bytes_per_token=2 * 2 * 2 * 64 * 2)
    tokens = np.arange(3 * CHUNK, dtype=np.int32)
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 255, CHUNK * layout.bytes_per_token, np.uint8) for _ in range(3)]
    with Engine(layout, {"local_disk": str(disk), "max_local_disk_size": 1}) as engine:
        assert engine.store(tokens, chunks) == 3
    # closing the engine waits for its disk writes

    r = kvtier("disk", "stats", str(disk))
    assert r.returncode == 0, r.stderr
    assert "3 chunk files" in r.stdout and "in 1 namespace" in r.stdout

    r = kvtier("disk", "verify", str(disk))
    assert r.returncode == 0 and "3 files checked, 0 did not check out" in r.stdout
    victim = sorted(disk.rglob("*.kvc"))[0]
    data = bytearray(victim.read_bytes())
    data[5000] ^= 0xFF
    victim.write_bytes(bytes(data))
    r = kvtier("disk", "verify", str(disk))
    assert r.returncode == 1, "a damaged file is a problem found"
    assert f"bad: {victim}: data checksum mismatch" in r.stdout

    r = kvtier("disk", "clear", str(disk))
    assert r.returncode == 0 and "deleted 3 files" in r.stdout
    assert not list(disk.rglob("*.kvc"))

    r = kvtier("disk", "stats", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_help_usage_and_config_check(tmp_path: Path) -> None:
    r = kvtier("--help")
    assert r.returncode == 0 and "disk verify DIR [--delete]" in r.stdout
    r = kvtier("disk", "clear", "--help")
    assert r.returncode == 0 and "--namespace ID" in r.stdout
    r = kvtier("paint")
    assert r.returncode == 2 and "unknown command 'paint'" in r.stderr

    good = tmp_path / "good.yaml"
    good.write_text("max_local_cpu_size: 2\nremote_url: redis://:s3cret@cache:6379\n")
    r = kvtier("config", "check", str(good))
    assert r.returncode == 0, r.stderr
    assert "max_local_cpu_size         = 2.000 GB" in r.stdout and "s3cret" not in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_local_cpu_size: lots\n")
    r = kvtier("config", "check", str(bad))
    assert r.returncode == 2 and "max_local_cpu_size" in r.stderr


def test_config_check_reads_lmcaches_file_and_environment(tmp_path: Path) -> None:
    """An LMCache user's environment, unchanged: ``LMCACHE_CONFIG_FILE`` and ``LMCACHE_<KEY>`` are
    read, each value's source is shown, and what kvtier does not do is said key by key."""
    lmcache = tmp_path / "lmcache.yaml"
    lmcache.write_text("chunk_size: 256\nlocal_cpu: True\nenable_p2p: True\np2p_host: localhost\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVTIER_", "LMCACHE_"))}
    env.update(LMCACHE_CONFIG_FILE=str(lmcache), LMCACHE_MAX_LOCAL_CPU_SIZE="3.0")
    r = kvtier("config", "check", env=env)
    assert r.returncode == 0, r.stderr
    assert "max_local_cpu_size         = 3.000 GB  (env LMCACHE_MAX_LOCAL_CPU_SIZE)" in r.stdout
    assert f"chunk_size                 = 256  (file {lmcache} (LMCACHE_CONFIG_FILE))" in r.stdout
    assert "WARNING: LMCache's enable_p2p=true" in r.stdout
    assert "kvtier has no P2P sharing" in r.stdout
    assert "INFO: LMCache's p2p_host=localhost" in r.stdout

    env["KVTIER_CONFIG_FILE"] = str(lmcache)
    r = kvtier("config", "check", env=env)
    assert r.returncode == 2
    assert "both KVTIER_CONFIG_FILE=" in r.stderr and "LMCACHE_CONFIG_FILE=" in r.stderr
