"""Waiting in tests without letting the clock decide: :func:`wait_until`."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Polls ``condition`` until it holds. Fails, naming ``what``, only when ``timeout_s`` (a
    generous bound, far above the expected wait even on a loaded machine) runs out: time never
    decides that a test passes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout_s:.0f} s")
        time.sleep(0.01)
