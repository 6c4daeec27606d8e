"""Hides secrets in what the Python side shows: log lines and exception messages.

The rules are those of the Java core's ``io.kvtier.config.Redaction`` (which masks what Java shows:
the configuration, ``remote_url`` and Java exception messages), for text the Python side builds
before or without the JVM, such as the JVM options in ``KVTIER_JVM_OPTIONS``:

* the password in a URL's userinfo becomes ``***``, the user name stays
  (``redis://user:***@host:6399``; a userinfo without a colon is a password alone and is masked
  whole);
* a ``name=value`` or ``name: value`` whose name ends in a word for a secret (password, secret,
  token, credential, auth, private key, TLS key...) shows ``name=***``, e.g.
  ``-Djavax.net.ssl.keyStorePassword=***``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)(\S*)@")

_SECRET_WORD = (
    r"[A-Za-z0-9_.\-]*(?:password|passwd|passphrase|pwd|secret|token|credentials?|auth"
    r"|private[_.\-]?key|api[_.\-]?key|access[_.\-]?key|(?:tls|ssl)[_.\-]?key)"
)

_SECRET_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.\-])("
    + _SECRET_WORD
    + r")([\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;}\]]+)",
    re.IGNORECASE,
)


def _mask_userinfo(m: re.Match[str]) -> str:
    userinfo = m.group(2)
    colon = userinfo.find(":")
    shown = MASK if colon < 0 else userinfo[: colon + 1] + MASK
    return f"{m.group(1)}{shown}@"


def _mask_pair(m: re.Match[str]) -> str:
    if m.group(3) == MASK:
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{MASK}"


def text(s: str) -> str:
    """Returns ``s`` with URL passwords and the values of secret-named pairs masked."""
    if "://" in s and "@" in s:
        s = _URL_USERINFO.sub(_mask_userinfo, s)
    return _SECRET_PAIR.sub(_mask_pair, s)


def options(opts: Iterable[str]) -> list[str]:
    """Returns JVM options as they may be shown: each one passed through :func:`text`."""
    return [text(o) for o in opts]
