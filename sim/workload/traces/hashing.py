"""Prefix block hashes derived from a token stream.

Hash ``i`` of a prompt identifies its first ``(i + 1) * block_size`` tokens (a *chain*
hash, as vLLM's automatic prefix caching and Mooncake's ``hash_ids`` do): it is the
BLAKE2b digest of the previous block's hash followed by the block's token ids, cut to a
63-bit non-negative int.  Two prompts therefore share exactly their common leading
hashes, across calls and across sessions.  Only full blocks are hashed; the trailing
partial block cannot be shared by a paged KV cache.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from hashlib import blake2b

#: Tokens per hashed block for text-derived hashes (the engine's default block size).
TEXT_BLOCK_SIZE = 16

_MASK63 = (1 << 63) - 1
_SEED = b"\x00" * 8


def chain_hashes(tokens: Sequence[int], block_size: int = TEXT_BLOCK_SIZE) -> tuple[int, ...]:
    """Chain hashes of the full ``block_size``-token blocks of ``tokens``."""
    buf = array("I", tokens).tobytes()
    step = block_size * 4
    prev = _SEED
    out: list[int] = []
    for i in range(len(tokens) // block_size):
        prev = blake2b(prev + buf[i * step : (i + 1) * step], digest_size=8).digest()
        out.append(int.from_bytes(prev, "little") & _MASK63)
    return tuple(out)


def repeated_hash(hashes: Sequence[int]) -> str:
    """Why a hash list with a repeat is not a chain (the message of the loaders' error)."""
    seen: dict[int, int] = {}
    for i, h in enumerate(hashes):
        if h in seen:
            return (
                f"hash {h} repeats at positions {seen[h]} and {i}: chain hashes name "
                "distinct prefixes, so a prompt cannot repeat one"
            )
        seen[h] = i
    return "no repeated hash"
