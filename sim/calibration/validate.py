"""Error of a cost model on measured records: MAPE, p90 APE and count per operator.

Rows are the records' samples flattened with their section's context (:class:`Row`).
Operator samples are predicted with :func:`sim.costmodel.fitted.predict_op`; whole
``iteration`` samples with the replica's :class:`~sim.costmodel.fitted.FittedIterationModel`.
Percentages are percent (3.2 means 3.2%).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.calibration.records import Section
from sim.common.errors import AgentsimError
from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.costmodel.fitted import (
    ATTENTION_OPS,
    ELEMENTWISE_OPS,
    FAMILY,
    GEMM_OPS,
    NETWORK_OPS,
    FittedIterationModel,
    GPUParams,
    predict_op,
)
from sim.specs.hardware import GPUS, get_gpu
from sim.specs.models import ModelSpec

#: Operators the fitted model predicts (others, e.g. Vidur's reshape kernels, are skipped).
PREDICTED_OPS = (*GEMM_OPS, *ELEMENTWISE_OPS, *ATTENTION_OPS, *NETWORK_OPS, "iteration")


@dataclass(frozen=True, slots=True)
class Row:
    """One measured sample with the context needed to predict it.

    Attributes:
        gpu, model: from the section header.
        op, tp, shape: the sample's operator, TP degree and shape.
        value_s: measured median (seconds).
        cfg: the header's HF-style model config.
        topology: network topology name (network tables only).
        layers: layers the measurement ran (``iteration`` rows), else 0.
        link: TP interconnect of an ``iteration`` row's GPUs (header ``link``, default nvlink).
    """

    gpu: str
    model: str
    op: str
    tp: int
    shape: dict[str, float]
    value_s: float
    cfg: dict[str, Any]
    topology: str | None = None
    layers: int = 0
    link: str = "nvlink"


def rows_of(sections: Iterable[Section]) -> list[Row]:
    """Flatten sections into rows of predictable operators with positive times."""
    rows: list[Row] = []
    for sec in sections:
        h = sec.header
        topo = h.extra.get("topology")
        layers = int(h.layers_measured or h.model_config.get("num_hidden_layers") or 0)
        link = str(h.extra.get("link", "nvlink"))
        for s in sec.samples:
            if s.op not in PREDICTED_OPS:
                continue
            v = s.value_s
            if v <= 0.0:
                continue
            rows.append(
                Row(
                    h.gpu,
                    h.model,
                    s.op,
                    s.tp,
                    s.shape,
                    v,
                    h.model_config,
                    topo if isinstance(topo, str) else None,
                    layers,
                    link,
                )
            )
    return rows


def network_row_used(row: Row, topology: str) -> bool:
    """Whether a network row prices intra-node NVLink collectives of ``topology``."""
    return row.topology == topology and row.shape.get("devices_per_node") == row.shape.get(
        "num_workers"
    )


def iteration_model_for(row: Row, params: GPUParams) -> FittedIterationModel:
    """The iteration model that predicts an ``iteration`` row."""
    cfg = dict(row.cfg)
    if row.layers:
        cfg["num_hidden_layers"] = row.layers
    spec = ModelSpec.from_hf_config(cfg, name=row.model)
    gpu = GPUS.get(row.gpu) or get_gpu(row.gpu)
    hw = ReplicaHardware(
        model=spec,
        gpu=gpu,
        tp=row.tp,
        allreduce_bandwidth=gpu.nvlink_bandwidth if row.link == "nvlink" else gpu.pcie_bandwidth,
        allreduce_latency=5e-6,
        link=row.link,
    )
    return FittedIterationModel(hw, params)


def iteration_batch(shape: dict[str, float]) -> BatchShape:
    """The :class:`BatchShape` of an ``iteration`` sample or a predict CSV row."""
    npre = int(shape["num_prefill_seqs"])
    plen = int(shape["prefill_len"])
    ndec = int(shape["num_decode_seqs"])
    ctx = int(shape["decode_context_len"])
    return BatchShape(
        prefill_tokens=(plen,) * npre,
        prefill_context=(0,) * npre,
        num_decode=ndec,
        decode_context_sum=ndec * ctx,
    )


def predict_rows(rows: Sequence[Row], params: GPUParams) -> np.ndarray:
    """Predicted seconds for each row (one GPU's parameters)."""
    cache: dict[tuple[str, int, int, str], FittedIterationModel] = {}
    return np.array([_predict(r, params, cache) for r in rows], dtype=np.float64)


def _predict(
    r: Row, params: GPUParams, cache: dict[tuple[str, int, int, str], FittedIterationModel]
) -> float:
    if r.op != "iteration":
        return predict_op(params, r.cfg, r.op, r.tp, r.shape)
    key = (r.model, r.tp, r.layers, r.link)
    if key not in cache:
        cache[key] = iteration_model_for(r, params)
    return cache[key].iteration_time(iteration_batch(r.shape))


@dataclass
class ErrorStats:
    """Absolute percentage errors of one group of rows.

    Attributes:
        mape: mean absolute percentage error (percent).
        p90_ape: 90th percentile of the absolute percentage error (percent).
        n: rows.
    """

    mape: float
    p90_ape: float
    n: int

    @classmethod
    def of(cls, ape: np.ndarray) -> ErrorStats:
        if len(ape) == 0:
            return cls(float("nan"), float("nan"), 0)
        return cls(float(np.mean(ape)), float(np.percentile(ape, 90)), len(ape))

    def to_dict(self) -> dict[str, Any]:
        return {"mape": round(self.mape, 4), "p90_ape": round(self.p90_ape, 4), "n": self.n}


@dataclass
class ValidationReport:
    """Errors overall, per operator and per operator family."""

    overall: ErrorStats
    by_operator: dict[str, ErrorStats] = field(default_factory=dict)
    by_family: dict[str, ErrorStats] = field(default_factory=dict)
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = self.overall.to_dict()
        d["by_operator"] = {k: v.to_dict() for k, v in sorted(self.by_operator.items())}
        d["by_family"] = {k: v.to_dict() for k, v in sorted(self.by_family.items())}
        d["skipped"] = self.skipped
        return d


def error_report(rows: Sequence[Row], predicted: np.ndarray, skipped: int = 0) -> ValidationReport:
    """MAPE / p90 APE / n of ``predicted`` against the rows' measured medians."""
    meas = np.array([r.value_s for r in rows])
    ape = 100.0 * np.abs(np.asarray(predicted) - meas) / meas
    ops: dict[str, list[int]] = defaultdict(list)
    fams: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        ops[r.op].append(i)
        fams[FAMILY.get(r.op, r.op)].append(i)
    return ValidationReport(
        overall=ErrorStats.of(ape),
        by_operator={k: ErrorStats.of(ape[v]) for k, v in ops.items()},
        by_family={k: ErrorStats.of(ape[v]) for k, v in fams.items()},
        skipped=skipped,
    )


def validate_rows(
    rows: Sequence[Row], gpus: dict[str, GPUParams], topology: str
) -> ValidationReport:
    """Predict every row whose GPU is in ``gpus`` and report the errors.

    Rows of GPUs without parameters, network rows of other topologies or multi-node
    setups, and rows whose model the cost model cannot build are counted as skipped.
    """
    used: list[Row] = []
    preds: list[float] = []
    skipped = 0
    by_gpu: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.gpu not in gpus or (r.op in NETWORK_OPS and not network_row_used(r, topology)):
            skipped += 1
            continue
        by_gpu[r.gpu].append(r)
    for gpu in sorted(by_gpu):
        cache: dict[tuple[str, int, int, str], FittedIterationModel] = {}
        for r in by_gpu[gpu]:
            try:
                p = _predict(r, gpus[gpu], cache)
            except AgentsimError:
                skipped += 1
                continue
            used.append(r)
            preds.append(p)
    return error_report(used, np.array(preds), skipped)


def format_report(title: str, rep: ValidationReport) -> str:
    """A plain-text table of a report."""
    lines = [title, f"  {'operator':<28}{'MAPE %':>9}{'p90 APE %':>11}{'n':>8}"]
    for k, v in sorted(rep.by_operator.items()):
        lines.append(f"  {k:<28}{v.mape:>9.2f}{v.p90_ape:>11.2f}{v.n:>8}")
    lines.append("  by family:")
    for k, v in sorted(rep.by_family.items()):
        lines.append(f"  {k:<28}{v.mape:>9.2f}{v.p90_ape:>11.2f}{v.n:>8}")
    o = rep.overall
    lines.append(f"  {'overall':<28}{o.mape:>9.2f}{o.p90_ape:>11.2f}{o.n:>8}")
    if rep.skipped:
        lines.append(f"  ({rep.skipped} rows not covered by this cost model were skipped)")
    return "\n".join(lines)
