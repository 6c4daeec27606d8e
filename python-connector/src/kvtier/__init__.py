"""kvtier: KV-cache offload and sharing for vLLM, with a Java core run in-process."""

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
    KvTierError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "JavaError",
    "JavaIOError",
    "JavaIndexError",
    "JavaMemoryError",
    "JavaNotImplementedError",
    "JavaStateError",
    "JavaValueError",
    "JvmError",
    "JvmForkedError",
    "KvTierError",
    "__version__",
]
