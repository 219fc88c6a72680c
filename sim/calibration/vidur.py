"""Import Vidur's profiling CSVs (github.com/microsoft/vidur) into calibration records.

Vidur profiles one GPU SKU into a directory tree (``PROFILE_DIR``)::

    compute/<sku>/<org>/<model>/mlp.csv      per-layer operator times vs num_tokens, TP
    compute/<sku>/<org>/<model>/attention.csv   (or legacy/<sku>/attention.csv)
    network/<topology>/{all_reduce,send_recv}.csv

Every ``time_stats.<op>.{min,max,mean,median,std}`` value is milliseconds; records hold
seconds.  Each CSV becomes one section per tensor-parallel degree (one per collective
for network tables), with ``engine = "vidur"`` and the HF-style model config rebuilt from
the CSV's dimension columns.  Vidur's ``a100`` SKU is the A100 80GB SXM4.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sim.calibration.records import RecordHeader, Sample, Section
from sim.common.errors import InputError

#: Vidur SKU directory name -> agentsim GPU name (sim.specs.hardware.GPUS).
SKU_TO_GPU = {"a100": "a100-80gb", "h100": "h100-80gb"}

#: Layer counts are not in Vidur's CSVs; these come from the models' HF config.json.
NUM_LAYERS = {
    "meta-llama/Llama-2-7b-hf": 32,
    "meta-llama/Llama-2-70b-hf": 80,
    "meta-llama/Meta-Llama-3-8B": 32,
    "meta-llama/Meta-Llama-3-70B": 80,
}

MLP_OPS = (
    "emb",
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
STATS = ("median", "mean", "min", "max", "std")


def _sec(ms: str) -> float:
    """Milliseconds (CSV text) -> seconds, rounded to 9 significant digits."""
    return float(f"{float(ms) * 1e-3:.9g}")


def _stats(row: dict[str, str], op: str, path: str, line: int) -> dict[str, float] | None:
    """The op's statistics in seconds, or None when the row has no value for it."""
    vals = {s: row.get(f"time_stats.{op}.{s}", "") for s in STATS}
    if vals["median"] in ("", None):
        return None
    try:
        return {s: max(0.0, _sec(v)) for s, v in vals.items() if v not in ("", None)}
    except ValueError as e:
        raise InputError(path, line, f"time_stats.{op}", f"not a number: {e}") from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="") as fh:
            yield from enumerate(csv.DictReader(fh), start=2)
    except OSError as e:
        raise InputError(str(path), None, None, f"cannot read: {e.strerror or e}") from None


def _int(row: dict[str, str], key: str, path: str, line: int) -> int:
    try:
        return int(float(row[key]))
    except (KeyError, ValueError):
        raise InputError(path, line, key, f"missing or not an integer: {row.get(key)!r}") from None


def _header(
    gpu: str, model: str, cfg: dict[str, Any], tp: int, source: str, **extra: Any
) -> RecordHeader:
    return RecordHeader(
        engine="vidur",
        gpu=gpu,
        model=model,
        tp=tp,
        device="cuda",
        gpu_count=tp,
        model_config=cfg,
        dtype="float16",
        engine_version="7d47513363ec447a741ac5e47241580b47724fbf",
        layers_measured=1 if cfg else None,
        created_utc="",
        source=source,
        notes="Vidur profiling table (MIT, Agrawal et al., MLSys 2024); stats converted ms -> s; repeat count not published (n recorded as 1)",
        extra=dict(extra),
    )


def _model_config(row: dict[str, str], model: str, path: str, line: int) -> dict[str, Any]:
    heads = _int(row, "n_head" if "n_head" in row else "n_q_head", path, line)
    h = _int(row, "n_embd", path, line)
    cfg: dict[str, Any] = {
        "hidden_size": h,
        "num_attention_heads": heads,
        "num_key_value_heads": _int(row, "n_kv_head", path, line),
        "head_dim": h // heads,
        "torch_dtype": "float16",
    }
    if "n_expanded_embd" in row:
        cfg["intermediate_size"] = _int(row, "n_expanded_embd", path, line)
        cfg["vocab_size"] = _int(row, "vocab_size", path, line)
        cfg["hidden_act"] = "silu" if row.get("use_gated_mlp") == "True" else "gelu"
    if model in NUM_LAYERS:
        cfg["num_hidden_layers"] = NUM_LAYERS[model]
    return cfg


def import_mlp(path: Path, gpu: str, model: str, source: str) -> list[Section]:
    """One section per TP degree of a Vidur ``mlp.csv``."""
    by_tp: dict[int, Section] = {}
    sp = str(path)
    for line, row in _rows(path):
        tp = _int(row, "num_tensor_parallel_workers", sp, line)
        tokens = _int(row, "num_tokens", sp, line)
        if tp not in by_tp:
            by_tp[tp] = Section(
                _header(gpu, model, _model_config(row, model, sp, line), tp, source)
            )
        for op in MLP_OPS:
            st = _stats(row, op, sp, line)
            if st is not None:
                by_tp[tp].samples.append(Sample(op, tp, {"num_tokens": tokens}, stats_s=st, n=1))
    return [by_tp[k] for k in sorted(by_tp)]


def import_attention(path: Path, gpu: str, model: str, source: str) -> list[Section]:
    """One section per TP degree of a Vidur ``attention.csv`` (prefill and decode rows)."""
    by_tp: dict[int, Section] = {}
    sp = str(path)
    for line, row in _rows(path):
        tp = _int(row, "num_tensor_parallel_workers", sp, line)
        if tp not in by_tp:
            cfg = _model_config(row, model, sp, line)
            by_tp[tp] = Section(
                _header(
                    gpu, model, cfg, tp, source, attention_backend=row.get("attention_backend", "")
                )
            )
        batch = _int(row, "batch_size", sp, line)
        kv = _int(row, "kv_cache_size", sp, line)
        if row.get("is_prefill") == "True":
            st = _stats(row, "attn_prefill", sp, line)
            shape: dict[str, float] = {
                "prefill_chunk_size": _int(row, "prefill_chunk_size", sp, line),
                "kv_cache_size": kv,
                "batch_size": batch,
            }
            op = "attn_prefill"
        else:
            st = _stats(row, "attn_decode", sp, line)
            shape = {"batch_size": batch, "kv_cache_size": kv}
            op = "attn_decode"
        if st is not None:
            by_tp[tp].samples.append(Sample(op, tp, shape, stats_s=st, n=1))
    return [by_tp[k] for k in sorted(by_tp)]


def import_network(path: Path, gpu: str, topology: str, source: str) -> list[Section]:
    """One section for a Vidur ``all_reduce.csv`` or ``send_recv.csv``."""
    sp = str(path)
    op = path.stem
    max_workers = 1
    samples: list[Sample] = []
    for line, row in _rows(path):
        workers = _int(row, "num_workers", sp, line)
        max_workers = max(max_workers, workers)
        st = _stats(row, op, sp, line)
        if st is None:
            continue
        shape: dict[str, float] = {
            "size_bytes": _int(row, "size", sp, line),
            "num_workers": workers,
            "devices_per_node": _int(row, "devices_per_node", sp, line),
        }
        samples.append(Sample(op, workers, shape, stats_s=st, n=1))
    header = _header(gpu, "none", {}, 1, source, topology=topology)
    header.gpu_count = max_workers
    return [Section(header, samples)]


def import_vidur(profile_dir: str | Path) -> list[Section]:
    """All sections of a Vidur profiling directory, in a deterministic order."""
    root = Path(profile_dir)
    if not root.is_dir():
        raise InputError(
            str(root), None, None, "not a directory (expected a Vidur profiling directory)"
        )
    sections: list[Section] = []
    for sub in ("compute", "legacy"):
        for csv_path in sorted((root / sub).glob("*/**/*.csv")):
            rel = csv_path.relative_to(root)
            sku = rel.parts[1]
            gpu = SKU_TO_GPU.get(sku, sku)
            model = "/".join(rel.parts[2:-1])
            if not model:  # legacy/<sku>/attention.csv: the 70B geometry (see its README)
                model = "meta-llama/Llama-2-70b-hf"
            if csv_path.name == "mlp.csv":
                sections += import_mlp(csv_path, gpu, model, str(rel))
            elif csv_path.name == "attention.csv":
                sections += import_attention(csv_path, gpu, model, str(rel))
    for csv_path in sorted((root / "network").glob("*/*.csv")):
        rel = csv_path.relative_to(root)
        topology = rel.parts[1]
        sku = topology.split("_", 1)[0]
        sections += import_network(csv_path, SKU_TO_GPU.get(sku, sku), topology, str(rel))
    if not sections:
        raise InputError(
            str(root),
            None,
            None,
            "no Vidur profiling CSVs found under compute/, legacy/ or network/",
        )
    return sections
