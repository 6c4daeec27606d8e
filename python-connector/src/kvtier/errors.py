"""kvtier's exceptions. Importing this module does not start or need a JVM."""

from __future__ import annotations


class KvTierError(Exception):
    """Base class of every error kvtier raises."""


class JvmError(KvTierError, RuntimeError):
    """The embedded JVM cannot be used in this process; the message says why and what to do."""


class JvmForkedError(JvmError):
    """The JVM was started in a parent process that then forked; a JVM does not survive fork."""


class ConfigError(KvTierError, ValueError):
    """A setting has a value that is not allowed; the message names the key, value and choices."""


class JavaError(KvTierError):
    """An exception thrown by the Java core, with its Java class, message and stack trace.

    Subclasses also derive from the matching Python built-in (``ValueError`` for
    ``IllegalArgumentException``, ``OSError`` for ``IOException``, ...) so callers can catch
    either. ``__cause__`` holds JPype's own exception object.
    """

    def __init__(
        self, java_class: str, java_message: str | None, java_stacktrace: str = ""
    ) -> None:
        self.java_class = java_class
        self.java_message = java_message
        self.java_stacktrace = java_stacktrace
        super().__init__(f"{java_class}: {java_message}" if java_message else java_class)

    def __str__(self) -> str:
        return self.args[0]


class JavaValueError(JavaError, ValueError):
    """``java.lang.IllegalArgumentException`` (bad argument)."""


class JavaStateError(JavaError, RuntimeError):
    """``java.lang.IllegalStateException`` (for example, use after close)."""


class JavaIndexError(JavaError, IndexError):
    """``java.lang.IndexOutOfBoundsException``."""


class JavaIOError(JavaError, OSError):
    """``java.io.IOException`` and its subclasses."""

    def __str__(self) -> str:  # OSError formats its args differently; keep ours
        return self.args[0]


class JavaMemoryError(JavaError, MemoryError):
    """``java.lang.OutOfMemoryError``."""


class JavaNotImplementedError(JavaError, NotImplementedError):
    """``java.lang.UnsupportedOperationException``."""
