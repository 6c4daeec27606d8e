"""kvtier's connector against the KV connector API of every supported vLLM version, as recorded
from the published wheels (tests/vllm_api/<version>.json, scripts/gen-vllm-api): nothing abstract
left out, no override whose parameters differ from vLLM's, and every hook whose default would be
wrong for kvtier overridden."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="the connector module imports vLLM")

from kvtier.vllm import versions
from kvtier.vllm.connector import KVTierConnector

API = Path(__file__).parent / "vllm_api"
RECORDED = {p.stem: json.loads(p.read_text()) for p in sorted(API.glob("*.json"))}

MUST_OVERRIDE = {
    "supports_sleep_mode": "defaults to True: vLLM would free KV memory kvtier still copies",
    "unregister_kv_caches": "a no-op by default: copies would run into released memory",
    "restore_kv_caches": "a no-op by default: kvtier would stay unregistered",
    "reset_cache": "returns None by default, which vLLM reads as success while old KV is served",
    "requires_kv_delivery": "defaults to the producer role: a dropped save is only a later miss",
    "get_block_ids_with_load_errors": "an empty set by default: failed loads would be garbage",
    "handle_preemptions": "a no-op by default: preempted blocks could be reused mid-copy",
}
"""Hooks whose vLLM default is wrong for kvtier, with why."""

KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional-or-keyword",
    inspect.Parameter.VAR_POSITIONAL: "var-positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword-only",
    inspect.Parameter.VAR_KEYWORD: "var-keyword",
}


def kvtier_params(name: str) -> list[dict[str, object]]:
    value = KVTierConnector.__dict__[name]
    fn = versions._function(value)
    sig = inspect.signature(inspect.unwrap(fn))
    return [
        {"name": p.name, "kind": KINDS[p.kind], "default": p.default is not p.empty}
        for p in sig.parameters.values()
    ]


def vllm_methods(doc: dict) -> dict:
    """The recorded methods of vLLM's connector base class and of ``SupportsHMA``, which kvtier's
    connector implements too."""
    return {
        **doc["classes"]["KVConnectorBase_V1"]["methods"],
        **doc["classes"]["SupportsHMA"]["methods"],
    }


def test_the_recorded_versions_are_the_supported_ones() -> None:
    assert tuple(RECORDED) == versions.SUPPORTED


def test_later_hooks_are_exactly_the_overrides_some_supported_version_lacks() -> None:
    ours = {n for n in KVTierConnector.__dict__ if not n.startswith("_")}
    lacking = set()
    for doc in RECORDED.values():
        lacking |= ours - set(vllm_methods(doc))
    lacking -= {n for n in ours if not callable(versions._function(KVTierConnector.__dict__[n]))}
    assert lacking == versions.LATER_HOOKS


@pytest.mark.parametrize("version", list(RECORDED))
def test_connector_implements_every_abstract_method(version: str) -> None:
    base = vllm_methods(RECORDED[version])
    abstract = {n for n, m in base.items() if m["abstract"]}
    assert abstract, "the recording lost the abstract methods"
    assert abstract <= set(KVTierConnector.__dict__), abstract - set(KVTierConnector.__dict__)


@pytest.mark.parametrize("version", list(RECORDED))
def test_every_override_takes_vllms_parameters(version: str) -> None:
    """Names, kinds and which have defaults, as vLLM declares them (a renamed or added parameter
    would break vLLM's keyword calls or kvtier's reading of them)."""
    base = vllm_methods(RECORDED[version])
    overrides = [n for n in KVTierConnector.__dict__ if n in base and not n.startswith("__")]
    assert len(overrides) > 15
    for name in overrides:
        ours = KVTierConnector.__dict__[name]
        kind = {classmethod: "classmethod", staticmethod: "staticmethod", property: "property"}
        assert kind.get(type(ours), "method") == base[name]["kind"], f"{name} in {version}"
        if base[name]["kind"] != "property":
            expected = [
                {k: p[k] for k in ("name", "kind", "default")} for p in base[name]["params"]
            ]
            assert kvtier_params(name) == expected, f"{name} in vLLM {version}"


@pytest.mark.parametrize("version", list(RECORDED))
def test_every_hook_with_an_unsafe_default_is_overridden(version: str) -> None:
    base = RECORDED[version]["classes"]["KVConnectorBase_V1"]["methods"]
    for name, why in MUST_OVERRIDE.items():
        if name in base:
            assert name in KVTierConnector.__dict__, f"{name} ({why}) in vLLM {version}"


def test_an_unchecked_version_warns_once_and_starts(caplog) -> None:
    class Base:
        def get_finished(self): ...

    class Connector(Base):
        def get_finished(self): ...

    with caplog.at_level(logging.WARNING, logger="kvtier.vllm.versions"):
        versions.check("0.35.1", Base, Connector)
        versions.check("0.34.0+cu130", Base, Connector)
        versions.check("0.32.0", Base, Connector)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "0.35.1" in warned[0] and "0.32.0, 0.33.0, 0.34.0" in warned[0]


def test_a_vllm_without_a_method_kvtier_needs_stops_naming_it() -> None:
    class Base:
        pass

    class Connector(Base):
        def get_finished(self): ...

        def get_block_ids_with_load_errors(self): ...

        @classmethod
        def supports_sleep_mode(cls, config): ...  # a later hook: an older vLLM never calls it

    with pytest.raises(RuntimeError) as e:
        versions.check("0.36.0", Base, Connector)
    message = str(e.value)
    assert "has no get_block_ids_with_load_errors, get_finished, which" in message
    assert "supports vLLM 0.32.0, 0.33.0, 0.34.0" in message


def test_the_running_vllm_passes_the_check() -> None:
    import vllm
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1, SupportsHMA

    versions.check(vllm.__version__, (KVConnectorBase_V1, SupportsHMA), KVTierConnector)
