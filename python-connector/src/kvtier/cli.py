"""``kvtier``: looks at and empties disk caches, checks a configuration, runs the cache server.

The commands run in Java (``io.kvtier.cli.Cli``) on the JDK kvtier brings, so no system Java is
needed::

    kvtier disk stats DIR                   what a disk tier's directory holds, by namespace
    kvtier disk verify DIR [--delete]       checks every file's header and checksum
    kvtier disk clear DIR [--namespace ID]  deletes the chunk files (of one namespace)
    kvtier config check [FILE]              loads a configuration, prints every setting
    kvtier server [FLAGS]                   runs the cache server (as ``kvtier-server``)

Exit status: 0 done, 1 problems found, 2 bad arguments or input, 3 the command failed.
"""

from __future__ import annotations

import sys

from kvtier import _jvm

MAIN_CLASS = "io.kvtier.cli.Cli"


def main() -> None:
    """Replaces this process with the JVM that runs it."""
    _jvm.exec_main(MAIN_CLASS, sys.argv[1:])


if __name__ == "__main__":
    main()
