"""Calibration records: measured GPU timings in one JSON Lines format.

A records file (``.jsonl``, or gzip-compressed ``.jsonl.gz``) is one or more
*sections*.  Each section is a ``header`` line describing where the numbers came from
(engine, GPU, model, TP, software versions) followed by ``sample`` lines, one per
measured operator shape.  Other line types (for example ``"type": "call"`` end-to-end
HTTP records) may appear inside a section; readers that do not use them keep them in
:attr:`Section.other` and writers write them back.

Header line (keys not listed are kept in :attr:`RecordHeader.extra`)::

    {"type": "header", "format": "agentsim-calibration", "version": 1,
     "engine": "torch"|"vllm"|"http"|"vidur", "engine_version": str|null,
     "device": "cuda"|"cpu", "gpu": str, "gpu_count": int, "driver": str|null,
     "torch_version": str|null, "vllm_version": str|null, "model": str,
     "model_config": {HF config dict}, "dtype": str, "tp": int,
     "layers_measured": int|null, "agentsim_commit": str|null,
     "created_utc": str, "source": str, "notes": str}

Sample line, either raw repeats or (for imported summary tables) statistics::

    {"type": "sample", "op": "mlp_up_proj", "tp": 2, "shape": {"num_tokens": 64},
     "samples_s": [1.2e-4, 1.3e-4]}
    {"type": "sample", "op": "attn_decode", "tp": 2,
     "shape": {"batch_size": 8, "kv_cache_size": 1024},
     "stats_s": {"median": 1e-4, "mean": 1e-4, "min": 9e-5, "max": 2e-4, "std": 1e-5},
     "n": 20}

Times are seconds.  The value a fit uses is the median (:attr:`Sample.value_s`).

Operator names and their shape keys:

- per-layer operators (Vidur names) ``attn_pre_proj``, ``attn_post_proj``,
  ``mlp_up_proj``, ``mlp_down_proj``, ``mlp_act``, ``input_layernorm``,
  ``post_attention_layernorm``, ``attn_rope``, ``add``, ``emb``: ``num_tokens``;
- ``attn_prefill``: ``prefill_chunk_size``, ``kv_cache_size``, ``batch_size``;
- ``attn_decode``: ``batch_size``, ``kv_cache_size``;
- ``all_reduce`` / ``send_recv``: ``size_bytes``, ``num_workers``, ``devices_per_node``;
- ``iteration`` (a whole forward pass): ``num_prefill_seqs``, ``prefill_len``,
  ``num_decode_seqs``, ``decode_context_len``.

Every malformed line raises :class:`sim.common.errors.InputError` naming file, line and field.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sim.common.errors import InputError

FORMAT = "agentsim-calibration"
VERSION = 1
ENGINES = ("torch", "vllm", "http", "vidur")
DEVICES = ("cuda", "cpu")

#: Shape keys each known operator must carry (operators not listed accept any shape).
SHAPE_KEYS: dict[str, tuple[str, ...]] = {
    **{
        op: ("num_tokens",)
        for op in (
            "attn_pre_proj",
            "attn_post_proj",
            "mlp_up_proj",
            "mlp_down_proj",
            "mlp_act",
            "input_layernorm",
            "post_attention_layernorm",
            "attn_rope",
            "add",
            "emb",
        )
    },
    "attn_prefill": ("prefill_chunk_size", "kv_cache_size", "batch_size"),
    "attn_decode": ("batch_size", "kv_cache_size"),
    "all_reduce": ("size_bytes", "num_workers", "devices_per_node"),
    "send_recv": ("size_bytes", "num_workers", "devices_per_node"),
    "iteration": ("num_prefill_seqs", "prefill_len", "num_decode_seqs", "decode_context_len"),
}

STAT_KEYS = ("median", "mean", "min", "max", "std")


@dataclass
class RecordHeader:
    """Where a section's samples came from.  See the module docstring for the keys."""

    engine: str
    gpu: str
    model: str
    tp: int
    device: str = "cuda"
    gpu_count: int = 1
    model_config: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float16"
    engine_version: str | None = None
    driver: str | None = None
    torch_version: str | None = None
    vllm_version: str | None = None
    layers_measured: int | None = None
    agentsim_commit: str | None = None
    created_utc: str = ""
    source: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The header line as a dict (known keys in a fixed order, then ``extra``)."""
        d: dict[str, Any] = {"type": "header", "format": FORMAT, "version": VERSION}
        for k in _HEADER_ORDER:
            d[k] = getattr(self, k)
        for k, v in self.extra.items():
            if k not in d:
                d[k] = v
        return d


_HEADER_ORDER = (
    "engine",
    "engine_version",
    "device",
    "gpu",
    "gpu_count",
    "driver",
    "torch_version",
    "vllm_version",
    "model",
    "model_config",
    "dtype",
    "tp",
    "layers_measured",
    "agentsim_commit",
    "created_utc",
    "source",
    "notes",
)


@dataclass
class Sample:
    """One measured operator shape.

    Attributes:
        op: operator name (see module docstring).
        tp: tensor-parallel degree it ran at.
        shape: the operator's shape parameters (tokens, bytes, batch sizes).
        samples_s: raw repeat times (seconds), or ``None`` when only ``stats_s`` is known.
        stats_s: summary statistics (seconds; at least ``median``), or ``None``.
        n: number of repeats behind ``stats_s``.
        extra: unknown keys of the line, kept for round-trips.
    """

    op: str
    tp: int
    shape: dict[str, float]
    samples_s: list[float] | None = None
    stats_s: dict[str, float] | None = None
    n: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value_s(self) -> float:
        """The time a fit uses: the median of the repeats (seconds)."""
        if self.stats_s is not None:
            return float(self.stats_s["median"])
        assert self.samples_s
        xs = sorted(self.samples_s)
        mid = len(xs) // 2
        return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "sample", "op": self.op, "tp": self.tp, "shape": self.shape}
        if self.samples_s is not None:
            d["samples_s"] = self.samples_s
        if self.stats_s is not None:
            d["stats_s"] = self.stats_s
            d["n"] = self.n
        for k, v in self.extra.items():
            if k not in d:
                d[k] = v
        return d


@dataclass
class Section:
    """A header and the lines after it up to the next header.

    Attributes:
        header: the section's header.
        samples: its sample lines, in file order.
        other: its lines of other types (``"type": "call"`` and so on), in file order,
            as parsed dicts.  Written back after the samples.
        path, line: where the header was read from (``None`` for sections built in code).
    """

    header: RecordHeader
    samples: list[Sample] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None
    line: int | None = None


# --- parsing -----------------------------------------------------------------------


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_header(d: dict[str, Any], path: str, line: int | None) -> RecordHeader:
    """Validate a header line's dict and build the :class:`RecordHeader`."""

    def bad(fld: str, problem: str) -> InputError:
        return InputError(path, line, fld, problem)

    if d.get("format") != FORMAT:
        raise bad("format", f"expected {FORMAT!r}, got {d.get('format')!r}")
    if d.get("version") != VERSION:
        raise bad(
            "version", f"unsupported version {d.get('version')!r} (this reader knows {VERSION})"
        )
    for k in ("engine", "gpu", "model"):
        if not isinstance(d.get(k), str) or not d[k]:
            raise bad(k, "required, must be a non-empty string")
    if d["engine"] not in ENGINES:
        raise bad("engine", f"{d['engine']!r} is not one of {', '.join(ENGINES)}")
    if not _int(d.get("tp")) or d["tp"] < 1:
        raise bad("tp", f"required, must be an integer >= 1, got {d.get('tp')!r}")
    device = d.get("device", "cuda")
    if device not in DEVICES:
        raise bad("device", f"{device!r} is not one of {', '.join(DEVICES)}")
    gpu_count = d.get("gpu_count", 1)
    if not _int(gpu_count) or gpu_count < 1:
        raise bad("gpu_count", f"must be an integer >= 1, got {gpu_count!r}")
    model_config = d.get("model_config", {})
    if not isinstance(model_config, dict):
        raise bad("model_config", "must be an object (an HF config.json dict)")
    for k in ("dtype", "created_utc", "source", "notes"):
        if k in d and not isinstance(d[k], str):
            raise bad(k, "must be a string")
    for k in ("engine_version", "driver", "torch_version", "vllm_version", "agentsim_commit"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise bad(k, "must be a string or null")
    lm = d.get("layers_measured")
    if lm is not None and (not _int(lm) or lm < 1):
        raise bad("layers_measured", f"must be an integer >= 1 or null, got {lm!r}")
    known = {"type", "format", "version", *_HEADER_ORDER}
    return RecordHeader(
        engine=d["engine"],
        gpu=d["gpu"],
        model=d["model"],
        tp=d["tp"],
        device=device,
        gpu_count=gpu_count,
        model_config=model_config,
        dtype=d.get("dtype", "float16"),
        engine_version=d.get("engine_version"),
        driver=d.get("driver"),
        torch_version=d.get("torch_version"),
        vllm_version=d.get("vllm_version"),
        layers_measured=lm,
        agentsim_commit=d.get("agentsim_commit"),
        created_utc=d.get("created_utc", ""),
        source=d.get("source", ""),
        notes=d.get("notes", ""),
        extra={k: v for k, v in d.items() if k not in known},
    )


def parse_sample(d: dict[str, Any], path: str, line: int | None) -> Sample:
    """Validate a sample line's dict and build the :class:`Sample`."""

    def bad(fld: str, problem: str) -> InputError:
        return InputError(path, line, fld, problem)

    op = d.get("op")
    if not isinstance(op, str) or not op:
        raise bad("op", "required, must be a non-empty string")
    if not _int(d.get("tp")) or d["tp"] < 1:
        raise bad("tp", f"required, must be an integer >= 1, got {d.get('tp')!r}")
    shape = d.get("shape")
    if not isinstance(shape, dict):
        raise bad("shape", "required, must be an object of numbers")
    for k, v in shape.items():
        if not _num(v) or v < 0:
            raise bad(f"shape.{k}", f"must be a non-negative number, got {v!r}")
    for k in SHAPE_KEYS.get(op, ()):
        if k not in shape:
            raise bad(f"shape.{k}", f"required for op {op!r}")
    samples_s = d.get("samples_s")
    stats_s = d.get("stats_s")
    n = d.get("n")
    if (samples_s is None) == (stats_s is None):
        raise bad("samples_s", "exactly one of samples_s and stats_s is required")
    if samples_s is not None:
        if not isinstance(samples_s, list) or not samples_s:
            raise bad("samples_s", "must be a non-empty list of seconds")
        for v in samples_s:
            if not _num(v) or v < 0:
                raise bad("samples_s", f"must hold non-negative finite seconds, got {v!r}")
    else:
        if not isinstance(stats_s, dict) or "median" not in stats_s:
            raise bad("stats_s", "must be an object with at least 'median'")
        for k, v in stats_s.items():
            if not _num(v) or v < 0:
                raise bad(f"stats_s.{k}", f"must be non-negative finite seconds, got {v!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad("n", f"required with stats_s, must be an integer >= 1, got {n!r}")
    known = {"type", "op", "tp", "shape", "samples_s", "stats_s", "n"}
    return Sample(
        op=op,
        tp=d["tp"],
        shape=shape,
        samples_s=samples_s,
        stats_s=stats_s,
        n=n if stats_s is not None else None,
        extra={k: v for k, v in d.items() if k not in known},
    )


def iter_records(
    path: str | Path, *, allow_truncated_tail: bool = False
) -> Iterator[tuple[int, RecordHeader | Sample | dict[str, Any]]]:
    """Stream a records file: ``(line_number, item)`` per non-blank line, in file order.

    ``item`` is a :class:`RecordHeader`, a :class:`Sample`, or the parsed dict of a line of
    another type.  With ``allow_truncated_tail`` a last line that is not valid JSON (an
    interrupted append) ends the stream silently instead of raising.
    """
    p = Path(path)
    spath = str(p)
    try:
        fh = _open_text(p, "r")
    except OSError as e:
        raise InputError(
            spath, None, None, f"cannot open records file: {e.strerror or e}"
        ) from None
    seen_header = False
    with fh:
        try:
            pending: tuple[int, str] | None = None
            for lineno, raw in enumerate(fh, start=1):
                if pending is not None:
                    item = _parse_line(pending[1], spath, pending[0], seen_header)
                    seen_header = seen_header or isinstance(item[1], RecordHeader)
                    yield item
                pending = (lineno, raw) if raw.strip() else None
            if pending is not None:
                try:
                    item = _parse_line(pending[1], spath, pending[0], seen_header)
                except _BadJSON:
                    if not allow_truncated_tail:
                        raise
                else:
                    yield item
        except _BadJSON as e:
            raise InputError(spath, e.line, None, e.problem) from None
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise InputError(spath, None, None, f"cannot read records file: {e}") from None


class _BadJSON(Exception):
    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem


def _parse_line(
    raw: str, path: str, lineno: int, seen_header: bool
) -> tuple[int, RecordHeader | Sample | dict[str, Any]]:
    try:
        d = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _BadJSON(
            lineno, f"not valid JSON (truncated or corrupt line): {e.msg} at column {e.colno}"
        ) from None
    if not isinstance(d, dict):
        raise InputError(path, lineno, None, "each line must be a JSON object")
    kind = d.get("type")
    if not isinstance(kind, str):
        raise InputError(
            path, lineno, "type", "required, must be a string ('header', 'sample', ...)"
        )
    if kind == "header":
        return lineno, parse_header(d, path, lineno)
    if not seen_header:
        raise InputError(path, lineno, "type", f"a {kind!r} line before the first header line")
    if kind == "sample":
        return lineno, parse_sample(d, path, lineno)
    return lineno, d


def read_records(path: str | Path, *, allow_truncated_tail: bool = False) -> list[Section]:
    """Read a whole records file into sections (see :func:`iter_records`)."""
    sections: list[Section] = []
    spath = str(path)
    for lineno, item in iter_records(path, allow_truncated_tail=allow_truncated_tail):
        if isinstance(item, RecordHeader):
            sections.append(Section(header=item, path=spath, line=lineno))
        elif isinstance(item, Sample):
            sections[-1].samples.append(item)
        else:
            sections[-1].other.append(item)
    if not sections:
        raise InputError(
            spath, None, None, "no header line: not an agentsim calibration records file"
        )
    return sections


# --- writing -----------------------------------------------------------------------


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), allow_nan=False)


def section_lines(section: Section) -> Iterator[str]:
    """The JSON lines (without newlines) of one section: header, samples, other lines."""
    yield _dumps(section.header.to_json())
    for s in section.samples:
        yield _dumps(s.to_json())
    for o in section.other:
        yield _dumps(o)


def write_records(path: str | Path, sections: Iterable[Section]) -> None:
    """Write ``sections`` to ``path`` (replacing it atomically, :func:`sim.common.io.atomic_write`:
    a failure leaves no partial file).  ``.gz`` paths are gzip-compressed with a zero
    timestamp, so equal content gives equal bytes."""
    from sim.common.io import atomic_write

    p = Path(path)
    text = "".join(line + "\n" for s in sections for line in section_lines(s)).encode()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            if p.suffix == ".gz":
                with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                    gz.write(text)
            else:
                fh.write(text)

    atomic_write(p, write)


def _last_header(path: Path) -> RecordHeader | None:
    last: RecordHeader | None = None
    for _, item in iter_records(path, allow_truncated_tail=True):
        if isinstance(item, RecordHeader):
            last = item
    return last


def append_samples(path: str | Path, header: RecordHeader, samples: Iterable[Sample]) -> None:
    """Append ``samples`` under ``header`` to ``path`` (created if missing).

    A header line is written first unless the file's last section already has an equal
    header, so repeated appends during one recording continue one section.  Each call
    flushes whole lines; a crash mid-line leaves a truncated tail that
    ``read_records(path, allow_truncated_tail=True)`` skips.
    """
    p = Path(path)
    need_header = True
    if p.exists() and p.stat().st_size > 0:
        _truncate_partial_tail(p)
        need_header = _last_header(p) != header
    lines = [_dumps(header.to_json())] if need_header else []
    lines += [_dumps(s.to_json()) for s in samples]
    if not lines:
        return
    data = "".join(line + "\n" for line in lines)
    with _open_text(p, "a") as fh:
        fh.write(data)
        fh.flush()


def _truncate_partial_tail(path: Path) -> None:
    """Drop an unterminated last line of a plain-text file (left by a crash mid-append)."""
    if path.suffix == ".gz":
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        pos = size - 1
        while pos > 0:
            step = min(4096, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                fh.truncate(pos - step + idx + 1)
                return
            pos -= step
        fh.truncate(0)
