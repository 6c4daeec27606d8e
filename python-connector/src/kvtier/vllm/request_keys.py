"""A vLLM request's token ids and key extras, as kvtier keys its chunks (docs/keys.md).

The extra keys of a chunk are exactly those vLLM's own prefix cache folds into the blocks of that
token range (``generate_block_hash_extra_keys``: LoRA name and path, multimodal items with their
offset, the cache salt on the first chunk, a hash of the prompt embeddings), so kvtier serves KV
across requests exactly where vLLM's prefix cache would. A kind of extra key kvtier does not know
makes the request unkeyable: it is not cached rather than keyed wrongly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kvtier import keys


def token_ids(request: Any, count: int | None = None) -> np.ndarray:
    """The request's first ``count`` token ids (all when None) as int32. Positions given as
    prompt embeddings hold vLLM's placeholder id 0; their embeddings are in the key extras."""
    ids = request.all_token_ids
    if count is not None:
        ids = ids[:count]
    return np.asarray(ids, dtype=np.int32)


def key_extras(request: Any, num_tokens: int, chunk_tokens: int, root: bytes) -> np.ndarray | None:
    """The key extras of the chunks of ``request``'s first ``num_tokens`` tokens under cache
    epoch ``root`` (None: a plain prompt before any reset).

    Raises:
        keys.UnkeyableRequest: vLLM keys the request's blocks with an extra key kvtier does not
            know (a newer kind of input), or in a form it cannot read.
    """
    from vllm.v1.core.kv_cache_utils import generate_block_hash_extra_keys

    digests = []
    mm_index = 0
    for start in range(0, num_tokens, chunk_tokens):
        end = min(start + chunk_tokens, num_tokens)
        try:
            extra, mm_index = generate_block_hash_extra_keys(request, start, end, mm_index)
        except Exception as e:  # vLLM could not key it either way: not cached
            raise keys.UnkeyableRequest(
                f"vLLM's extra keys for tokens [{start}, {end}) failed: {type(e).__name__}"
            ) from e
        digests.append(keys.digest(extra))
    return keys.words(root, digests)
