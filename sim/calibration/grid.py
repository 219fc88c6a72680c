"""Calibration grids: which iteration shapes ``agentsim calibrate record`` measures.

A grid is a TOML file (examples under ``examples/calibration/``)::

    warmup = 2            # untimed runs before each shape's repeats
    repeats = 5           # timed runs per shape; every one is kept in the record
    dtype = "auto"        # "auto" (bfloat16 on CUDA, float32 on CPU), "float16", ...
    layers = 4            # optional: instantiate only this many decoder layers
    tp = [1]              # tensor-parallel degrees (engines that support them)
    time_budget_s = 420   # optional: stop after this many seconds (resume later)

    [prefill]             # prefill-only iterations, every (count, length) pair
    counts = [1, 2, 4]                  # sequences in the batch
    lengths = [128, 512, 2048]          # new prompt tokens per sequence
    max_tokens = 8192                   # optional: skip pairs with count*length above

    [decode]              # decode-only iterations, every (batch, context) pair
    batch_sizes = [1, 8, 32]            # sequences generating one token each
    context_lens = [256, 1024, 4096]    # tokens in each sequence's KV cache
    max_context_tokens = 65536          # optional: skip pairs with batch*context above

    [[mixed]]             # explicit mixed iterations (prefill and decode together)
    num_prefill_seqs = 1
    prefill_len = 512
    num_decode_seqs = 16
    decode_context_len = 1024

Shapes use the record format's ``iteration`` keys (see :mod:`sim.calibration.records`);
sizes are tokens.  Every problem raises :class:`~sim.common.errors.InputError` naming the file
and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.common.errors import InputError
from sim.common.io import read_toml

DTYPES = ("auto", "float32", "float16", "bfloat16")

_TOP_KEYS = {
    "warmup",
    "repeats",
    "dtype",
    "layers",
    "tp",
    "time_budget_s",
    "prefill",
    "decode",
    "mixed",
}
_SHAPE_KEYS = ("num_prefill_seqs", "prefill_len", "num_decode_seqs", "decode_context_len")


@dataclass(frozen=True, slots=True, order=True)
class IterationShape:
    """One batching iteration: ``num_prefill_seqs`` prompts of ``prefill_len`` new tokens
    each, plus ``num_decode_seqs`` sequences decoding one token each over
    ``decode_context_len`` tokens of KV cache.  Same meaning as the cost model's
    :class:`~sim.costmodel.base.BatchShape` with uniform lengths.  Units: tokens."""

    num_prefill_seqs: int = 0
    prefill_len: int = 0
    num_decode_seqs: int = 0
    decode_context_len: int = 0

    def as_dict(self) -> dict[str, float]:
        """The record format's ``shape`` object of an ``iteration`` sample."""
        return {k: getattr(self, k) for k in _SHAPE_KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IterationShape:
        """Inverse of :meth:`as_dict` (numbers are truncated to ints)."""
        return cls(*(int(d.get(k, 0)) for k in _SHAPE_KEYS))

    @property
    def has_prefill(self) -> bool:
        return self.num_prefill_seqs > 0 and self.prefill_len > 0

    @property
    def has_decode(self) -> bool:
        return self.num_decode_seqs > 0

    @property
    def num_tokens(self) -> int:
        """New tokens the iteration computes."""
        return self.num_prefill_seqs * self.prefill_len + self.num_decode_seqs

    def describe(self) -> str:
        parts = []
        if self.has_prefill:
            parts.append(f"prefill {self.num_prefill_seqs}x{self.prefill_len}")
        if self.has_decode:
            parts.append(f"decode {self.num_decode_seqs}@{self.decode_context_len}")
        return " + ".join(parts) or "empty"


@dataclass(frozen=True, slots=True)
class Grid:
    """A loaded grid.

    Attributes:
        shapes: the iteration shapes to measure, in measuring order, no duplicates.
        warmup: untimed runs per shape; repeats: timed runs per shape.
        dtype: weight/activation dtype name, or ``"auto"``.
        layers: decoder layers to instantiate (``None``: all of the model's).
        tp: tensor-parallel degrees to measure.
        time_budget_s: stop recording after this many seconds (``None``: no limit).
        path: where it was read from.
    """

    shapes: tuple[IterationShape, ...]
    warmup: int = 2
    repeats: int = 5
    dtype: str = "auto"
    layers: int | None = None
    tp: tuple[int, ...] = (1,)
    time_budget_s: float | None = None
    path: str = ""

    @property
    def max_context(self) -> int:
        """Longest sequence (tokens) any shape needs the model to support."""
        return max((max(s.prefill_len, s.decode_context_len + 1) for s in self.shapes), default=0)


def _int_list(path: str, table: str, d: dict[str, Any], key: str, lo: int) -> list[int]:
    v = d.get(key)
    if v is None:
        raise InputError(path, None, f"{table}.{key}", "required")
    if not isinstance(v, list) or not v:
        raise InputError(path, None, f"{table}.{key}", "must be a non-empty list of integers")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < lo:
            raise InputError(path, None, f"{table}.{key}", f"must hold integers >= {lo}, got {x!r}")
    return list(v)


def _opt_int(path: str, key: str, v: Any, lo: int) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise InputError(path, None, key, f"must be an integer >= {lo}, got {v!r}")
    return int(v)


def _check_keys(
    path: str, table: str, d: dict[str, Any], allowed: set[str] | tuple[str, ...]
) -> None:
    for k in d:
        if k not in allowed:
            where = f"{table}.{k}" if table else k
            raise InputError(
                path, None, where, f"unknown key (allowed: {', '.join(sorted(allowed))})"
            )


def parse_grid(doc: dict[str, Any], path: str = "<grid>") -> Grid:
    """Validate a decoded grid TOML document and build the :class:`Grid`."""
    _check_keys(path, "", doc, _TOP_KEYS)
    shapes: list[IterationShape] = []
    pre = doc.get("prefill")
    if pre is not None:
        if not isinstance(pre, dict):
            raise InputError(path, None, "prefill", "must be a table")
        _check_keys(path, "prefill", pre, {"counts", "lengths", "max_tokens"})
        cap = _opt_int(path, "prefill.max_tokens", pre.get("max_tokens"), 1)
        for n in _int_list(path, "prefill", pre, "counts", 1):
            for length in _int_list(path, "prefill", pre, "lengths", 1):
                if cap is None or n * length <= cap:
                    shapes.append(IterationShape(n, length, 0, 0))
    dec = doc.get("decode")
    if dec is not None:
        if not isinstance(dec, dict):
            raise InputError(path, None, "decode", "must be a table")
        _check_keys(path, "decode", dec, {"batch_sizes", "context_lens", "max_context_tokens"})
        cap = _opt_int(path, "decode.max_context_tokens", dec.get("max_context_tokens"), 1)
        for b in _int_list(path, "decode", dec, "batch_sizes", 1):
            for c in _int_list(path, "decode", dec, "context_lens", 1):
                if cap is None or b * c <= cap:
                    shapes.append(IterationShape(0, 0, b, c))
    mixed = doc.get("mixed", [])
    if not isinstance(mixed, list):
        raise InputError(path, None, "mixed", "must be an array of tables ([[mixed]])")
    for i, m in enumerate(mixed):
        where = f"mixed[{i}]"
        if not isinstance(m, dict):
            raise InputError(path, None, where, "must be a table")
        _check_keys(path, where, m, _SHAPE_KEYS)
        vals = [_opt_int(path, f"{where}.{k}", m.get(k, 0), 0) or 0 for k in _SHAPE_KEYS]
        s = IterationShape(*vals)
        if not (s.has_prefill and s.has_decode and s.decode_context_len > 0):
            raise InputError(
                path, None, where, "a mixed shape needs positive prefill and decode sizes"
            )
        shapes.append(s)
    for s in shapes:
        if s.has_decode and s.decode_context_len < 1:
            raise InputError(path, None, "decode.context_lens", "context lengths must be >= 1")
    unique = list(dict.fromkeys(shapes))
    if not unique:
        raise InputError(
            path, None, None, "the grid measures no shapes: add [prefill], [decode] or [[mixed]]"
        )
    warmup = _opt_int(path, "warmup", doc.get("warmup", 2), 0)
    repeats = _opt_int(path, "repeats", doc.get("repeats", 5), 1)
    dtype = doc.get("dtype", "auto")
    if dtype not in DTYPES:
        raise InputError(path, None, "dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
    tp_raw = doc.get("tp", [1])
    if isinstance(tp_raw, int) and not isinstance(tp_raw, bool):
        tp_raw = [tp_raw]
    tp = _int_list(path, "", {"tp": tp_raw}, "tp", 1)
    budget = doc.get("time_budget_s")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0
    ):
        raise InputError(
            path, None, "time_budget_s", f"must be a positive number of seconds, got {budget!r}"
        )
    return Grid(
        shapes=tuple(unique),
        warmup=warmup if warmup is not None else 2,
        repeats=repeats if repeats is not None else 5,
        dtype=str(dtype),
        layers=_opt_int(path, "layers", doc.get("layers"), 1),
        tp=tuple(dict.fromkeys(tp)),
        time_budget_s=float(budget) if budget is not None else None,
        path=path,
    )


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid TOML file."""
    p = str(path)
    doc, _ = read_toml(p)
    return parse_grid(doc, p)
