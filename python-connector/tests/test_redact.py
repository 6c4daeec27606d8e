"""Secrets never reach a log line or an exception message of the Python side."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import jpype
import pytest

import kvtier
from kvtier import _jvm, _redact

SECRET_OPTIONS = (
    "-Djavax.net.ssl.keyStorePassword=hunter2 -Djavax.net.ssl.trustStorePassword='hunter2' "
    "-Dkvtier.backup=redis://user:hunter2@cache:6379 -Dio.netty.leakDetection.level=simple"
)


def test_text_masks_url_passwords_and_secret_pairs():
    """URL passwords and values of secret-named settings are masked; the rest is kept."""
    assert _redact.text("redis://user:hunter2@h:6399") == "redis://user:***@h:6399"
    assert (
        _redact.text("redis-sentinel://:hunter2@s1:1,s2:2#m") == "redis-sentinel://:***@s1:1,s2:2#m"
    )
    assert _redact.text("kvtier://hunter2@h:7070") == "kvtier://***@h:7070"
    assert _redact.text("-Djavax.net.ssl.keyStorePassword=hunter2") == (
        "-Djavax.net.ssl.keyStorePassword=***"
    )
    assert _redact.text("{'remote_auth_token': 'abc'}") == "{'remote_auth_token': ***}"
    plain = "-Xmx1g tokens=256 password_file=/etc/pw redis://h:6379"
    assert _redact.text(plain) == plain


@pytest.fixture
def fake_jvm_start(monkeypatch, tmp_path: Path):
    """Makes ``_jvm.start`` run its real code up to JPype without a JVM: returns a setter for
    what ``jpype.startJVM`` does."""
    monkeypatch.setattr(_jvm, "_info", None)
    monkeypatch.setattr(_jvm, "_forked_from", None)
    monkeypatch.setattr(_jvm, "resolve_java_home", lambda: (tmp_path, "KVTIER_JAVA_HOME"))
    monkeypatch.setattr(_jvm, "_classpath", lambda lib_dir: ("kvtier-core.jar",))
    monkeypatch.setattr(_jvm, "_libjvm", lambda home: home / "lib/server/libjvm.so")
    monkeypatch.setattr(jpype, "isJVMStarted", lambda: False)
    monkeypatch.setattr(_jvm, "_probe_class_or_raise", lambda: SimpleNamespace(version=lambda: "t"))
    system = SimpleNamespace(getProperty=lambda name: "25.0.1")
    monkeypatch.setattr(jpype, "JClass", lambda name: system)
    monkeypatch.setenv("KVTIER_JVM_OPTIONS", SECRET_OPTIONS)

    def set_start(fn) -> None:
        monkeypatch.setattr(jpype, "startJVM", fn)

    return set_start


def test_jvm_start_log_line_hides_store_passwords(fake_jvm_start, caplog):
    """The INFO line naming the JVM options masks key and trust store passwords and URLs."""
    fake_jvm_start(lambda *args, **kwargs: None)
    with caplog.at_level(logging.INFO, logger="kvtier"):
        info = _jvm.start()
    assert "-Djavax.net.ssl.keyStorePassword=hunter2" in info.options  # the JVM gets them
    line = "\n".join(r.getMessage() for r in caplog.records)
    assert "JVM 25.0.1 started" in line
    assert "hunter2" not in line
    assert "keyStorePassword=***" in line
    assert "redis://user:***@cache:6379" in line
    assert "-Dio.netty.leakDetection.level=simple" in line


def test_jvm_start_failure_message_hides_store_passwords(fake_jvm_start):
    """A JVM that fails to start is reported with its options, secrets masked, even when the
    error it raised quotes them."""

    def refuse(*args, **kwargs) -> None:
        raise RuntimeError("Unrecognized option -Djavax.net.ssl.keyStorePassword=hunter2")

    fake_jvm_start(refuse)
    with pytest.raises(kvtier.JvmError) as info:
        _jvm.start()
    message = str(info.value)
    assert "the JVM failed to start" in message
    assert "hunter2" not in message
    assert "keyStorePassword=***" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unparsable_jvm_options_message_hides_passwords(monkeypatch):
    """KVTIER_JVM_OPTIONS that cannot be split is quoted back with its secrets masked."""
    monkeypatch.setenv("KVTIER_JVM_OPTIONS", "-Djavax.net.ssl.keyStorePassword=hunter2 'open")
    with pytest.raises(kvtier.ConfigError) as info:
        _jvm._options("1g", None)
    assert "hunter2" not in str(info.value)
    assert "KVTIER_JVM_OPTIONS=" in str(info.value)
