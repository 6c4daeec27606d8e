"""The JVM's AOT cache (kvtier.aot): named by what it depends on, made once in the background by
the first start that lacks it, mapped by later starts, and harmless when off or broken."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import run_python

from kvtier import ConfigError, _jvm, aot

STARTS_AND_REPORTS = """
    import json
    from kvtier import _bridge, _jvm
    _jvm.start()
    _bridge.worker.load_config({"chunk_size": 256})
    mx = _jvm.java_class("java.lang.management.ManagementFactory").getRuntimeMXBean()
    print(json.dumps([str(a) for a in mx.getInputArguments()]))
"""


def jvm_args(env: dict[str, str]) -> list[str]:
    out = run_python(STARTS_AND_REPORTS, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cache_name_follows_the_java_the_jars_and_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv(aot.ENV_DIR, str(tmp_path))
    libjvm, jar = tmp_path / "libjvm.so", tmp_path / "a.jar"
    libjvm.write_bytes(b"jvm")
    jar.write_bytes(b"jar")
    base = aot.plan(libjvm, [str(jar)], ["-Xmx1g"]).path
    assert base is not None and base.parent == tmp_path and base.suffix == ".aot"
    assert aot.plan(libjvm, [str(jar)], ["-Xmx1g", "-Dkvtier.cpus=0"]).path == base
    assert aot.plan(libjvm, [str(jar)], ["-Xmx2g"]).path != base
    jar.write_bytes(b"jar, rebuilt")
    assert aot.plan(libjvm, [str(jar)], ["-Xmx1g"]).path != base
    monkeypatch.setenv(aot.ENV_SWITCH, "off")
    assert aot.plan(libjvm, [str(jar)], ["-Xmx1g"]).path is None
    monkeypatch.setenv(aot.ENV_SWITCH, "sometimes")
    with pytest.raises(ConfigError, match="KVTIER_JVM_AOT"):
        aot.plan(libjvm, [str(jar)], ["-Xmx1g"])


def test_made_on_demand_then_mapped_by_the_next_start(tmp_path):
    env = {aot.ENV_DIR: str(tmp_path), aot.ENV_SWITCH: None, "KVTIER_JVM_OPTIONS": None}
    made = run_python("import sys; from kvtier import aot; sys.exit(aot.main([]))", env=env)
    assert made.returncode == 0, made.stderr
    path = Path(made.stdout.strip().splitlines()[-1])
    assert path.parent == tmp_path and path.stat().st_size > 1 << 20
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no lock or scratch left"
    assert f"-XX:AOTCache={path}" in jvm_args(env)
    check = run_python("import sys; from kvtier import aot; sys.exit(aot.main(['--check']))", env)
    assert check.returncode == 0 and "exists" in check.stdout


def test_first_start_makes_it_in_the_background(tmp_path):
    """A start without a cache runs without one and leaves a detached training process behind,
    which writes the cache; the start after that maps it."""
    env = {aot.ENV_DIR: str(tmp_path), aot.ENV_SWITCH: None, "KVTIER_JVM_OPTIONS": None}
    assert not any(a.startswith("-XX:AOTCache") for a in jvm_args(env))
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("*.aot")) or list(tmp_path.glob("*.lock")):
        assert time.monotonic() < deadline, f"no cache made: {list(tmp_path.iterdir())}"
        time.sleep(0.5)
    assert any(a.startswith("-XX:AOTCache=") for a in jvm_args(env))


def test_a_corrupt_cache_file_is_skipped_not_fatal(tmp_path):
    env = {aot.ENV_DIR: str(tmp_path), aot.ENV_SWITCH: None, "KVTIER_JVM_OPTIONS": None}
    name = run_python(
        "from kvtier import _jvm; print(_jvm.aot_plan().path)", env=env
    ).stdout.strip()
    Path(name).write_bytes(os.urandom(1 << 16))
    args = jvm_args(env)  # starts, loads settings, answers: the JVM ignored the garbage
    assert f"-XX:AOTCache={name}" in args


def test_making_a_cache_keeps_the_recently_used_and_removes_the_rest(tmp_path):
    """Of ten other caches, the seven most recently used stay (eight with the new one); the
    oldest of them goes too when no start has used it for a month."""
    now = time.time()
    others = [tmp_path / f"kvtier-other{i}.aot" for i in range(10)]
    for i, f in enumerate(others):  # other0 the most recently used
        f.write_bytes(b"x")
        os.utime(f, (now - 3600 * (i + 1),) * 2)
    month_ago = now - aot.UNUSED_S - 60
    os.utime(others[6], (month_ago, month_ago))
    for f in others[7:]:
        os.utime(f, (month_ago - 60,) * 2)
    env = {aot.ENV_DIR: str(tmp_path), aot.ENV_SWITCH: None, "KVTIER_JVM_OPTIONS": None}
    made = run_python("import sys; from kvtier import aot; sys.exit(aot.main([]))", env=env)
    assert made.returncode == 0, made.stderr
    assert [f.exists() for f in others] == [True] * 6 + [False] * 4
    assert len(list(tmp_path.glob("kvtier-*.aot"))) == 7
    recent = others[0]
    plan = aot.Plan(recent)
    os.utime(recent, (month_ago, month_ago))
    plan.mark_used()
    assert time.time() - recent.stat().st_mtime < 60


def test_a_training_in_progress_is_not_started_twice(tmp_path):
    target = tmp_path / "kvtier-x.aot"
    target.with_suffix(".lock").touch()
    assert aot.train(target) is False
    assert not target.exists()


def test_off_means_no_cache_option(tmp_path):
    args = jvm_args({aot.ENV_DIR: str(tmp_path), aot.ENV_SWITCH: "off"})
    assert not any("AOT" in a for a in args)
    assert list(tmp_path.iterdir()) == []


def test_plan_of_this_process_names_a_file_under_the_cache_dir():
    plan = _jvm.aot_plan()
    if plan.path is None:
        pytest.skip("KVTIER_JVM_AOT=off here")
    assert plan.path.parent == aot.cache_dir()
