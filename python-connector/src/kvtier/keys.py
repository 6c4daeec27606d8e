"""Key extras: what besides token ids makes a prompt's KV different (docs/keys.md, "Extras").

A chunk's key chains its parent's hash, a 16-byte *extra digest* and its token ids. The extra
digest of a chunk covers the extra keys vLLM's own prefix cache folds into the blocks of that
token range (LoRA adapter name and path, multimodal items with their offset in the chunk, the
cache salt on the first chunk, a hash of prompt embeddings); the chain starts at a *root* digest,
zero until the connector's cache is reset. Everything here is a pure function of its input, the
same in every process and after every restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

ZERO = bytes(16)
"""The digest of nothing extra: a plain chunk, or the root before any reset."""

KNOWN_TAGS = frozenset({"lora", "mm", "cache_salt", "prompt_embeds"})
"""The kinds of extra key kvtier knows how to fold into a chunk's key."""


class UnkeyableRequest(ValueError):
    """A request carries an extra input kvtier does not know how to key: it is not cached."""


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        raise UnkeyableRequest(f"extra key value {value!r} has no canonical form")
    if isinstance(value, (str, int)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    raise UnkeyableRequest(f"extra key value of type {type(value).__name__} has no canonical form")


def digest(extra_keys: Sequence[Sequence[Any]] | None) -> bytes:
    """The 16-byte extra digest of one chunk's extra keys (``ZERO`` for none).

    Each key is a tuple whose first item is its tag (``"lora"``, ``"mm"``, ``"cache_salt"``,
    ``"prompt_embeds"``), as vLLM's ``generate_block_hash_extra_keys`` returns them. The digest is
    the first 16 bytes of SHA-256 over the compact JSON text of the keys, each key an array, bytes
    as lowercase hex.

    Raises:
        UnkeyableRequest: a key with an unknown tag or a value without a canonical form.
    """
    if not extra_keys:
        return ZERO
    items = []
    for key in extra_keys:
        if not isinstance(key, (tuple, list)) or not key or key[0] not in KNOWN_TAGS:
            raise UnkeyableRequest(f"unknown extra key {_describe(key)}")
        items.append([_canonical(v) for v in key])
    text = json.dumps(items, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).digest()[:16]


def _describe(key: Any) -> str:
    """Names an extra key's kind without its values (which may be a tenant's salt)."""
    if isinstance(key, (tuple, list)) and key:
        return f"of kind {str(key[0])[:40]!r}"
    return f"of type {type(key).__name__}"


def epoch_root(epoch: str) -> bytes:
    """The root digest of cache epoch ``epoch`` (a nonce chosen at a cache reset)."""
    return hashlib.sha256(b"kvtier-epoch\0" + epoch.encode("utf-8")).digest()[:16]


def words(root: bytes, chunk_digests: Sequence[bytes]) -> np.ndarray | None:
    """The key extras as ``io.kvtier.key.KeyExtras`` reads them: ``[root_h1, root_h2, chunk0_h1,
    chunk0_h2, ...]``, each half a little-endian signed 64-bit integer; trailing zero chunk
    digests are dropped, and None means all zero (a plain prompt before any reset)."""
    n = len(chunk_digests)
    while n and chunk_digests[n - 1] == ZERO:
        n -= 1
    if n == 0 and root == ZERO:
        return None
    return np.frombuffer(root + b"".join(chunk_digests[:n]), dtype="<i8").astype(np.int64)
