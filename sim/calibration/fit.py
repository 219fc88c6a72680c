"""Fit a cost model (TOML) to calibration records, with held-out validation.

:func:`fit_costmodel` is a pure function of the records and :class:`FitOptions`: the
same inputs give byte-identical TOML (deterministic optimiser start points, a seeded
split, sorted keys, parameters rounded to 7 significant digits, ``repr`` floats).

Per GPU in the records:

- operator families present (GEMM, element-wise kernels, attention) are fitted by
  non-linear least squares on log time (relative error) to the forms in
  :mod:`sim.calibration.fitted`; efficiency curves have one knot per octave of work
  inside the measured range and are constant outside it;
- NVLink collective curves come from the intra-node rows of ``options.network_topology``;
- ``iteration`` rows fit the per-iteration and per-sequence overhead when operator rows
  exist, and otherwise the roofline efficiencies (constant curves) plus overhead;
- without ``iteration`` rows the overhead is ``options.iteration_overhead_s`` /
  ``per_seq_overhead_s`` (vLLM-typical CPU cost; the Vidur tables do not measure it).

Validation, stored in the TOML: a random ``holdout_fraction`` of rows held out of a
separate fit (``random_split``), and, for each pair of models with per-layer operator
rows on the same GPU, fitting on one model's rows and predicting the other's
(``leave_one_model_out``).  The committed parameters are then fitted on all rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibration.fitted import (
    ELEMENTWISE_OPS,
    FORMAT,
    GEMM_OPS,
    VERSION,
    Curve,
    GPUParams,
    NetCurve,
    OpModel,
    gemm_work,
)
from sim.calibration.records import Section, read_records
from sim.calibration.validate import (
    Row,
    error_report,
    iteration_batch,
    network_row_used,
    predict_rows,
    rows_of,
)
from sim.errors import InputError
from sim.hardware import GPUS

MLP_TABLE_OPS = (*GEMM_OPS, *ELEMENTWISE_OPS)


@dataclass(frozen=True)
class FitOptions:
    """Options of a fit (all recorded in the TOML).

    Attributes:
        seed: seed of the random hold-out split.
        holdout_fraction: share of rows held out for ``random_split`` validation.
        network_topology: network table whose intra-node rows price NVLink collectives.
        iteration_overhead_s: CPU/scheduling/sampling time per iteration when no
            ``iteration`` rows measure it (vLLM-typical ~2 ms).
        per_seq_overhead_s: extra CPU time per sequence in the batch, same caveat.
        knots_per_octave: efficiency-curve knots per doubling of work.
        max_nfev: optimiser evaluation budget of a whole-iteration-only fit.
    """

    seed: int = 0
    holdout_fraction: float = 0.2
    network_topology: str = "a100_dgx"
    iteration_overhead_s: float = 2.0e-3
    per_seq_overhead_s: float = 2.0e-5
    knots_per_octave: int = 2
    max_nfev: int = 200


@dataclass(frozen=True)
class RecordsInput:
    """One records file given to a fit: its name, content hash and sections."""

    file: str
    sha256: str
    sections: list[Section]


def load_inputs(paths: Sequence[str | Path]) -> list[RecordsInput]:
    """Read records files for :func:`fit_costmodel` (name = file name, hash of the bytes)."""
    out = []
    for p in paths:
        path = Path(p)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise InputError(
                str(path), None, None, f"cannot read records: {e.strerror or e}"
            ) from None
        out.append(RecordsInput(path.name, digest, read_records(path)))
    return out


# --- efficiency-curve fitting ----------------------------------------------------------

_LN2 = math.log(2.0)
#: Smooth-max exponents tried for kernels with both compute and memory time.
P_GRID = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0)
#: Roofline seconds per decoding sequence tried for attention decode (0, then 2x steps).
PER_ITEM_GRID = (0.0, *(1e-8 * 2.0**i for i in range(12)))


def _knots(work: np.ndarray, per_octave: int) -> np.ndarray:
    """log(work) at ``per_octave`` knots per power of two spanning the data (>= 2 knots)."""
    lo = math.floor(math.log2(float(work.min())) * per_octave)
    hi = math.ceil(math.log2(float(work.max())) * per_octave)
    return np.arange(lo, max(hi, lo + 1) + 1, dtype=np.float64) * (_LN2 / per_octave)


def _hat_basis(lx: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """Linear-interpolation (hat) basis of points ``lx`` on knots ``kx``; constant outside."""
    x = np.clip(lx, kx[0], kx[-1])
    idx = np.clip(np.searchsorted(kx, x, side="right") - 1, 0, len(kx) - 2)
    frac = (x - kx[idx]) / (kx[idx + 1] - kx[idx])
    basis = np.zeros((len(lx), len(kx)))
    rows = np.arange(len(lx))
    basis[rows, idx] = 1.0 - frac
    basis[rows, idx + 1] += frac
    return basis


def _fit_log_curve(
    lx: np.ndarray, ly: np.ndarray, per_octave: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares of ``ly`` as a non-decreasing piecewise-linear function of ``lx``.

    Returns the knots that have data, their values, and the sum of squared residuals.
    The fit is constrained (bounded linear least squares on knot increments), so the
    curve it returns is monotone without any after-the-fact clipping; a small ridge on
    second differences keeps sparse knots well determined.
    """
    from scipy.optimize import lsq_linear

    kx = _knots(np.exp(lx), per_octave)
    basis = _hat_basis(lx, kx)
    used = basis.sum(axis=0) > 1e-9
    kx, basis = kx[used], basis[:, used]
    nk = len(kx)
    cum = np.tril(np.ones((nk, nk)))  # knot values = cumsum(first value, increments)
    a, b = basis @ cum, ly
    if nk > 2:
        d2 = np.zeros((nk - 2, nk))
        for i in range(nk - 2):
            d2[i, i : i + 3] = (1.0, -2.0, 1.0)
        a = np.vstack((a, 1e-2 * (d2 @ cum)))
        b = np.concatenate((ly, np.zeros(nk - 2)))
    lo = np.concatenate(([-np.inf], np.zeros(nk - 1)))
    sol = lsq_linear(a, b, bounds=(lo, np.full(nk, np.inf)), method="bvls")
    coef = cum @ sol.x
    sse = float(np.sum((basis @ coef - ly) ** 2))
    return kx, coef, sse


@dataclass
class _Family:
    """Arrays of one operator family's rows: flops, bytes, items, measured seconds."""

    flops: np.ndarray
    nbytes: np.ndarray
    items: np.ndarray
    y: np.ndarray


def _fit_opmodel(
    fam: _Family,
    peak_flops: float,
    peak_bytes: float,
    *,
    compute: bool,
    per_item: bool,
    per_octave: int,
) -> OpModel:
    """Fit the efficiency curve (monotone least squares of log time on log roofline
    seconds), choosing the smooth-max exponent and per-item cost from fixed grids."""
    best: tuple[float, OpModel] | None = None
    flat = Curve.constant(1.0)
    for p in P_GRID if compute else (4.0,):
        for pi in PER_ITEM_GRID if per_item else (0.0,):
            trial = OpModel(peak_flops, peak_bytes, flat, p=p, per_item=pi)
            r = trial.rooflines(
                fam.flops if compute else np.zeros_like(fam.y), fam.nbytes, fam.items
            )
            lr = np.log(r)
            kx, lt, sse = _fit_log_curve(lr, np.log(fam.y), per_octave)
            if best is None or sse < best[0] - 1e-12:
                eff = Curve.from_table(list(np.exp(kx)), list(np.exp(kx - lt)))
                best = (sse, OpModel(peak_flops, peak_bytes, eff, p=p, per_item=pi))
    assert best is not None
    return OpModel.from_table(best[1].to_table())  # round exactly as the TOML will


def _fit_netcurve(size: np.ndarray, secs: np.ndarray, per_octave: int) -> NetCurve:
    """Piecewise-linear least squares of log time on log size."""
    kx, coef, _ = _fit_log_curve(np.log(size), np.log(secs), per_octave)
    curve = NetCurve.from_table(list(np.exp(kx)), list(np.exp(coef)))
    return NetCurve.from_table(**curve.to_table())


# --- per-GPU fit -----------------------------------------------------------------------


def _family_arrays(rows: Sequence[Row]) -> dict[str, _Family]:
    """Group operator rows into fit families with their work sizes."""
    from sim.calibration.fitted import Geometry

    acc: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in rows:
        if r.op in GEMM_OPS:
            g = Geometry.of(r.cfg, r.tp)
            n, k = g.gemm_nk(r.op)
            f, b = gemm_work(float(r.shape["num_tokens"]), n, k, g.dt)
            acc.setdefault(r.op, []).append((f, b, 0.0, r.value_s))
        elif r.op in ELEMENTWISE_OPS:
            g = Geometry.of(r.cfg, r.tp)
            b = g.elementwise_bytes(r.op, float(r.shape["num_tokens"]))
            acc.setdefault(r.op, []).append((0.0, b, 0.0, r.value_s))
        elif r.op == "attn_prefill":
            g = Geometry.of(r.cfg, r.tp)
            f, b = g.prefill_work(
                r.shape["prefill_chunk_size"],
                r.shape["kv_cache_size"],
                r.shape.get("batch_size", 1),
            )
            acc.setdefault(r.op, []).append((f, b, 0.0, r.value_s))
        elif r.op == "attn_decode":
            g = Geometry.of(r.cfg, r.tp)
            n = float(r.shape["batch_size"])
            acc.setdefault(r.op, []).append(
                (0.0, g.decode_bytes(n * r.shape["kv_cache_size"]), n, r.value_s)
            )
    out: dict[str, _Family] = {}
    for fam, vals in acc.items():
        arr = np.array(vals, dtype=np.float64)
        out[fam] = _Family(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
    return out


def _peaks(gpu: str) -> tuple[float, float]:
    """Datasheet (FLOP/s, HBM bytes/s) the rooflines of ``gpu`` use.  A device that is
    not a known GPU (e.g. ``cpu`` records) gets nominal 1 TFLOP/s and 100 GB/s; its
    fitted efficiencies absorb the difference."""
    spec = GPUS.get(gpu)
    return (spec.peak_flops, spec.hbm_bandwidth) if spec else (1e12, 1e11)


def _roofline_constant(
    gpu: str, e_gemm: float, e_mem: float, e_attn: float, c0: float, c1: float
) -> GPUParams:
    """Constant-efficiency parameters (used when only whole iterations are measured)."""
    pf, pb = _peaks(gpu)
    one = Curve.constant(1.0)
    gemm = OpModel(pf * e_gemm, pb * e_mem, one, p=8.0)
    stream = OpModel(pf * e_gemm, pb * e_mem, one)
    return GPUParams(
        gemm=dict.fromkeys(GEMM_OPS, gemm),
        elementwise=dict.fromkeys(ELEMENTWISE_OPS, stream),
        attn_prefill=OpModel(pf * e_attn, pb * e_mem, one, p=8.0),
        attn_decode=stream,
        iteration_s=c0,
        per_seq_s=c1,
        origin="roofline efficiencies and overhead fitted to whole-iteration records",
    )


def _fit_overhead(rows: Sequence[Row], params: GPUParams) -> tuple[float, float]:
    """Non-negative least squares of (measured - predicted) = c0 + c1 * seqs."""
    base = GPUParams(**{**params.__dict__, "iteration_s": 0.0, "per_seq_s": 0.0})
    pred = predict_rows(rows, base)
    meas = np.array([r.value_s for r in rows])
    seqs = np.array([iteration_batch(r.shape).num_seqs for r in rows], dtype=np.float64)
    w = 1.0 / meas  # relative error
    a = np.stack([w, w * seqs], axis=1)
    coef, *_ = np.linalg.lstsq(a, w * (meas - pred), rcond=None)
    c0, c1 = float(coef[0]), float(coef[1])
    if c1 < 0:
        c1 = 0.0
        c0 = float(np.sum(w * w * (meas - pred)) / np.sum(w * w))
    return max(c0, 0.0), c1


def _fit_iteration_only(gpu: str, rows: Sequence[Row], max_nfev: int) -> GPUParams:
    from scipy.optimize import least_squares

    logy = np.log([r.value_s for r in rows])

    def params_of(th: np.ndarray) -> GPUParams:
        e = 1.0 / (1.0 + np.exp(-th[:3]))
        return _roofline_constant(
            gpu, float(e[0]), float(e[1]), float(e[2]), math.exp(th[3]), math.exp(th[4])
        )

    def resid(th: np.ndarray) -> np.ndarray:
        return np.log(predict_rows(rows, params_of(th))) - logy

    x0 = np.array([0.85, 1.4, 0.0, math.log(1e-3), math.log(1e-5)])
    sol = least_squares(resid, x0, method="trf", max_nfev=max_nfev)
    fitted = params_of(sol.x)
    return GPUParams.from_table(fitted.to_table())


def fit_gpu(gpu: str, rows: Sequence[Row], options: FitOptions) -> GPUParams:
    """Fit one GPU's parameters from its rows (see module docstring)."""
    fams = _family_arrays(rows)
    iters = [r for r in rows if r.op == "iteration"]
    if not any(op in fams for op in GEMM_OPS):
        if not iters:
            raise InputError(gpu, None, "gpu", "no GEMM operator rows and no iteration rows to fit")
        return _fit_iteration_only(gpu, iters, options.max_nfev)
    pf, pb = _peaks(gpu)
    kw: dict[str, Any] = {
        "peak_flops": pf,
        "peak_bytes": pb,
        "per_octave": options.knots_per_octave,
    }
    fitted = {
        op: _fit_opmodel(fams[op], compute=True, per_item=False, **kw)
        for op in GEMM_OPS
        if op in fams
    }
    gemm = {op: fitted.get(op) or next(iter(fitted.values())) for op in GEMM_OPS}
    up = gemm["mlp_up_proj"]
    stream = replace(up, p=4.0)
    ew = {
        op: _fit_opmodel(fams[op], compute=False, per_item=False, **kw) if op in fams else stream
        for op in ELEMENTWISE_OPS
    }
    prefill = (
        _fit_opmodel(fams["attn_prefill"], compute=True, per_item=False, **kw)
        if "attn_prefill" in fams
        else up
    )
    decode = (
        _fit_opmodel(fams["attn_decode"], compute=False, per_item=True, **kw)
        if "attn_decode" in fams
        else stream
    )
    ar: dict[int, NetCurve] = {}
    sr: NetCurve | None = None
    net = [
        r
        for r in rows
        if r.op in ("all_reduce", "send_recv") and network_row_used(r, options.network_topology)
    ]
    for op in ("all_reduce", "send_recv"):
        for w in sorted({int(r.shape["num_workers"]) for r in net if r.op == op}):
            sel = [r for r in net if r.op == op and int(r.shape["num_workers"]) == w]
            curve = _fit_netcurve(
                np.array([r.shape["size_bytes"] for r in sel]),
                np.array([r.value_s for r in sel]),
                options.knots_per_octave,
            )
            if op == "all_reduce":
                ar[w] = curve
            elif w == 2:
                sr = curve
    params = GPUParams(
        gemm=gemm,
        elementwise=ew,
        attn_prefill=prefill,
        attn_decode=decode,
        all_reduce=ar,
        send_recv=sr,
        iteration_s=options.iteration_overhead_s,
        per_seq_s=options.per_seq_overhead_s,
        origin="operator efficiency curves fitted to per-operator records"
        + ("" if iters else "; overhead from fit options (not measured)"),
    )
    if iters:
        c0, c1 = _fit_overhead(iters, params)
        params = GPUParams(**{**params.__dict__, "iteration_s": c0, "per_seq_s": c1})
        params = GPUParams.from_table(params.to_table())
    return params


def fit_all(rows: Sequence[Row], options: FitOptions) -> dict[str, GPUParams]:
    """Parameters for every GPU that has rows."""
    gpus = sorted({r.gpu for r in rows})
    return {g: fit_gpu(g, [r for r in rows if r.gpu == g], options) for g in gpus}


# --- validation ------------------------------------------------------------------------


def _usable(rows: Sequence[Row], options: FitOptions) -> list[Row]:
    """Rows a fit uses and validation scores (network rows: intra-node of the topology)."""
    return [
        r
        for r in rows
        if r.op not in ("all_reduce", "send_recv") or network_row_used(r, options.network_topology)
    ]


def random_split_validation(rows: Sequence[Row], options: FitOptions) -> dict[str, Any]:
    """Fit on a seeded random (1 - holdout) share of rows, report errors on the rest."""
    rng = np.random.default_rng(options.seed)
    held = rng.random(len(rows)) < options.holdout_fraction
    train = [r for r, h in zip(rows, held, strict=True) if not h]
    test = [r for r, h in zip(rows, held, strict=True) if h]
    params = fit_all(train, options)
    test = [r for r in test if r.gpu in params]
    preds = np.concatenate(
        [predict_rows([r for r in test if r.gpu == g], params[g]) for g in sorted(params)]
    )
    ordered = [r for g in sorted(params) for r in test if r.gpu == g]
    rep = error_report(ordered, preds).to_dict()
    rep.pop("skipped")
    return {"holdout_fraction": options.holdout_fraction, "seed": options.seed, **rep}


def leave_one_model_out(rows: Sequence[Row], options: FitOptions) -> list[dict[str, Any]]:
    """For each GPU with per-layer operator rows of several models: fit on one model's
    rows (all its operators), predict another model's per-layer (mlp-table) operators."""
    out = []
    for gpu in sorted({r.gpu for r in rows}):
        mlp_rows = [r for r in rows if r.gpu == gpu and r.op in MLP_TABLE_OPS]
        models = sorted({r.model for r in mlp_rows})
        for fit_m in models:
            params = fit_gpu(gpu, [r for r in mlp_rows if r.model == fit_m], options)
            for eval_m in models:
                if eval_m == fit_m:
                    continue
                test = [r for r in mlp_rows if r.model == eval_m]
                rep = error_report(test, predict_rows(test, params)).to_dict()
                rep.pop("skipped")
                out.append({"gpu": gpu, "fit_model": fit_m, "eval_model": eval_m, **rep})
    return out


# --- TOML ------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _toml_table(prefix: list[str], d: dict[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and not _is_table_list(v)}
    for k in sorted(scalars):
        out.append(f"{_toml_key(k)} = {_toml_value(scalars[k])}")
    for k in sorted(d):
        v = d[k]
        path = [*prefix, _toml_key(k)]
        if isinstance(v, dict):
            out.append("")
            out.append(f"[{'.'.join(path)}]")
            _toml_table(path, v, out)
        elif _is_table_list(v):
            for item in v:
                out.append("")
                out.append(f"[[{'.'.join(path)}]]")
                _toml_table(path, item, out)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_dumps(d: dict[str, Any]) -> str:
    """Deterministic TOML of nested dicts (sorted keys, ``repr`` floats)."""
    out: list[str] = []
    _toml_table([], d, out)
    return "\n".join(out).lstrip("\n") + "\n"


def fit_costmodel(
    inputs: Sequence[RecordsInput], name: str, options: FitOptions | None = None
) -> str:
    """Fit, validate and serialise a cost model.  Pure: same inputs, same TOML bytes."""
    options = options or FitOptions()
    rows = _usable(rows_of(s for inp in inputs for s in inp.sections), options)
    if not rows:
        raise InputError(",".join(i.file for i in inputs), None, None, "no rows the fit can use")
    gpus = fit_all(rows, options)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "fitted_from": [
            {
                "file": i.file,
                "sha256": i.sha256,
                "sections": len(i.sections),
                "samples": sum(len(s.samples) for s in i.sections),
            }
            for i in inputs
        ],
        "fit_options": asdict(options),
        "validation": {
            "random_split": random_split_validation(rows, options),
            "leave_one_model_out": leave_one_model_out(rows, options),
        },
        "gpu": {g: p.to_table() for g, p in sorted(gpus.items())},
    }
    if not doc["validation"]["leave_one_model_out"]:
        del doc["validation"]["leave_one_model_out"]
    return toml_dumps(doc)


def fit_files(paths: Sequence[str | Path], name: str, options: FitOptions | None = None) -> str:
    """:func:`fit_costmodel` of records files (what ``calibrate fit`` and ``replay`` run)."""
    return fit_costmodel(load_inputs(paths), name, options)
