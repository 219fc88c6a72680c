"""Fit a cost model (TOML) to calibration records, with held-out validation.

:func:`fit_costmodel` is a pure function of the records and :class:`FitOptions`: the
same inputs give byte-identical TOML on one machine (fixed optimiser start points, a
seeded split, sorted keys, fixed-order scalar reductions, ``repr`` floats).  Parameters
are rounded to 7 significant digits, and those of the whole-iteration fit to
:data:`ITERATION_FIT_DIGITS` (its optimiser stops at a point that moves by ~1e-5
relative with the machine's BLAS kernels and SIMD math, where the linear operator fits
move by ~1e-12).  No rounding can make every machine's bytes equal (a value near a
rounding boundary flips a digit), so "the same cost model" means equal within the
per-coefficient tolerances of :mod:`sim.calibration.check`, which ``calibrate replay
--check`` applies.

Per GPU in the records:

- operator families present (GEMM, element-wise kernels, attention) are fitted by
  least squares on log time (relative error) to the forms in
  :mod:`sim.costmodel.fitted`: a monotone roofline efficiency curve (knots per octave
  of work inside the measured range, constant outside; one curve shared by the GEMM
  ops), then per op a (size, width) :class:`~sim.costmodel.fitted.Surface` of log
  seconds, regularised towards that curve and made monotone by a cumulative maximum;
- NVLink collective curves come from the intra-node rows of ``options.network_topology``;
- ``iteration`` rows fit the per-iteration and per-sequence overhead when operator rows
  exist.  Without operator rows (e.g. the ``torch`` engine's grid) they fit, by robust
  least squares of log time, one constant roofline efficiency per kernel family (GEMM
  FLOP/s, weight and activation bandwidth, prefill attention FLOP/s, decode attention
  KV bandwidth, which differ several-fold in an eager engine), a latency floor per
  family (the efficiency curve's first knot: every call of the kernel takes at least
  that long, which is how a launch-bound eager engine's ~constant small-batch
  iteration time appears), decode attention's cost per sequence, and the overhead;
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

from sim.calibration.records import Section, read_records
from sim.calibration.validate import (
    Row,
    error_report,
    iteration_batch,
    network_row_used,
    predict_rows,
    rows_of,
)
from sim.common.errors import InputError
from sim.costmodel.fitted import (
    ELEMENTWISE_OPS,
    FORMAT,
    GEMM_OPS,
    VERSION,
    Curve,
    GPUParams,
    NetCurve,
    OpModel,
    Surface,
    gemm_work,
)
from sim.specs.hardware import GPUS

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
        network_knots_per_octave: collective-curve knots per doubling of message size.
        robust_iterations: reweighting passes that turn the collective curves' least
            squares into least absolute percentage error (the tables' bimodal
            small-message timings then pull less); 0 is plain least squares.
        max_nfev: optimiser evaluation budget of a whole-iteration-only fit.
        size_knots_per_octave: size-axis knots per doubling of a kernel's leading size
            (tokens, chunk, batch) on the per-operator :class:`Surface`; 0 fits only the
            one-variable efficiency curves.
        width_knots_per_octave: width-axis knots per doubling on a :class:`Surface`.
        surface_smoothing: weight of the surface's second-difference penalties on log
            seconds (towards a local power law), which fill grid cells without data.
        decode_surface: fit decode attention on a (batch, KV bytes per sequence)
            surface (random-split MAPE about 4.6% instead of about 10%).  Off by default:
            the records time uniform batches, in which fewer, longer sequences are often
            slower than more, shorter ones of the same total, so such a surface predicts
            up to about 5% less iteration time when a sequence shorter than the batch's
            mean context joins it, and more sequences must never predict less time.
            A surface over (batch, total KV bytes) made monotone does worse than the
            roofline curve (about 13-25%).
        shared_gemm_curve: fit one roofline efficiency curve to all GEMM ops' rows (it
            prices GEMM shapes outside an op's measured widths; pooling gives it the
            widest range of shapes), with a surface per op.
    """

    seed: int = 0
    holdout_fraction: float = 0.2
    network_topology: str = "a100_dgx"
    iteration_overhead_s: float = 2.0e-3
    per_seq_overhead_s: float = 2.0e-5
    knots_per_octave: int = 6
    network_knots_per_octave: int = 8
    robust_iterations: int = 5
    shared_gemm_curve: bool = True
    max_nfev: int = 200
    size_knots_per_octave: int = 12
    width_knots_per_octave: int = 6
    surface_smoothing: float = 0.1
    decode_surface: bool = False


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
    lx: np.ndarray, ly: np.ndarray, per_octave: int, robust: int = 0
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
    lo = np.concatenate(([-np.inf], np.zeros(nk - 1)))
    pen = np.zeros((0, nk))
    if nk > 2:
        d2 = np.zeros((nk - 2, nk))
        for i in range(nk - 2):
            d2[i, i : i + 3] = (1.0, -2.0, 1.0)
        pen = 1e-2 * (d2 @ cum)
    w = np.ones(len(ly))
    for _ in range(robust + 1):
        a = np.vstack((np.sqrt(w)[:, None] * (basis @ cum), pen))
        b = np.concatenate((np.sqrt(w) * ly, np.zeros(len(pen))))
        sol = lsq_linear(a, b, bounds=(lo, np.full(nk, np.inf)), method="bvls")
        w = _l1_weights(basis @ (cum @ sol.x) - ly)
    coef = cum @ sol.x
    sse = float(np.sum((basis @ coef - ly) ** 2))
    return kx, coef, sse


def _size_knots(size: np.ndarray, per_octave: int) -> np.ndarray:
    """log of the measured sizes, thinned to at most ``per_octave`` knots per doubling
    (always keeping the smallest and largest)."""
    lv = np.unique(np.log(size))
    gap = _LN2 / per_octave
    keep = [float(lv[0])]
    for v in lv[1:]:
        if v - keep[-1] >= gap - 1e-12:
            keep.append(float(v))
    if lv[-1] > keep[-1]:
        if len(keep) > 1 and lv[-1] - keep[-1] < 0.5 * gap:
            keep[-1] = float(lv[-1])
        else:
            keep.append(float(lv[-1]))
    return np.array(keep)


def _bilinear(
    u: np.ndarray, v: np.ndarray, kx: np.ndarray, ky: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, weights) of the bilinear basis of points (u, v) on the knot grid
    (flattened row-major, ``i * len(ky) + j``); points outside are clamped."""

    def axis(p: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(k) == 1:
            z = np.zeros(len(p), dtype=np.int64)
            return z, z, np.zeros(len(p))
        q = np.clip(p, k[0], k[-1])
        i = np.clip(np.searchsorted(k, q, side="right") - 1, 0, len(k) - 2)
        return i, i + 1, (q - k[i]) / (k[i + 1] - k[i])

    i0, i1, fx = axis(u, kx)
    j0, j1, fy = axis(v, ky)
    ny = len(ky)
    n = len(u)
    rows = np.tile(np.arange(n), 4)
    cols = np.concatenate((i0 * ny + j0, i1 * ny + j0, i0 * ny + j1, i1 * ny + j1))
    w = np.concatenate(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy))
    return rows, cols, w


def _l1_weights(resid: np.ndarray) -> np.ndarray:
    """Iteratively-reweighted least-squares weights that minimise the absolute
    percentage error ``|exp(resid) - 1|`` of log-time residuals."""
    r = np.where(np.abs(resid) < 1e-3, np.copysign(1e-3, resid), resid)
    return np.abs(np.expm1(r)) / (r * r)


def _fit_surface(
    fam: _Family,
    base: OpModel,
    width_per_octave: int,
    size_per_octave: int,
    smoothing: float,
    size_smoothing: float | None = None,
) -> Surface:
    """Log seconds on a (log size, log width) grid by regularised least squares.

    Knots: the measured sizes thinned to ``size_per_octave`` per doubling, and widths on
    the ``width_per_octave`` lattice.  The penalty (weight ``smoothing``) is on second
    differences of the grid's departure from ``base`` (the roofline efficiency curve), so
    cells between and beyond the measured shapes follow the roofline's shape; a
    cumulative maximum along both axes makes the grid monotone.  The base curve needs
    each node's roofline seconds: log roofline is smoothed onto the grid the same way
    (it is close to a plane in these coordinates)."""
    from scipy.sparse import coo_matrix, diags, identity, kron
    from scipy.sparse.linalg import splu

    u, v = np.log(fam.size), np.log(fam.width)
    kx = _size_knots(fam.size, size_per_octave)
    kz = _knots(fam.width, width_per_octave)
    kx[0] -= 1e-4  # so that rounding to 7 digits keeps the data inside
    kx[-1] += 1e-4
    kz[0] -= 1e-4
    kz[-1] += 1e-4
    nx, nz = len(kx), len(kz)
    rows, cols, w = _bilinear(u, v, kx, kz)
    a = coo_matrix((w, (rows, cols)), shape=(len(u), nx * nz)).tocsr()

    def diff(n: int, order: int) -> Any:
        if order == 1:
            return diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(n - 1, n))
        return diags(
            [np.ones(n - 2), -2.0 * np.ones(n - 2), np.ones(n - 2)], [0, 1, 2], shape=(n - 2, n)
        )

    reg = 1e-9 * identity(nx * nz, format="csr")
    sx = smoothing if size_smoothing is None else size_smoothing
    for order, wx, wz in ((1, 1e-3 * sx, 1e-3 * smoothing), (2, sx, smoothing)):
        if nx > order:
            d = kron(diff(nx, order), identity(nz))
            reg = reg + wx * (d.T @ d)
        if nz > order:
            d = kron(identity(nx), diff(nz, order))
            reg = reg + wz * (d.T @ d)
    lu = splu((a.T @ a + reg).tocsc())
    lr = lu.solve(a.T @ np.log(base.rooflines(fam.flops, fam.nbytes, fam.items)))
    prior = np.log(base.efficiency.times(np.exp(lr)))
    sol = lu.solve(a.T @ np.log(fam.y) + reg @ prior)
    grid = np.exp(np.asarray(sol).reshape(nx, nz))
    return Surface.from_table(
        [float(x) for x in np.exp(kx)], [float(z) for z in np.exp(kz)], grid.tolist()
    )


@dataclass
class _Family:
    """Arrays of one operator family's rows: flops, bytes, items, measured seconds."""

    flops: np.ndarray
    nbytes: np.ndarray
    items: np.ndarray
    y: np.ndarray
    size: np.ndarray
    width: np.ndarray


def _fit_opmodel(
    fam: _Family,
    peak_flops: float,
    peak_bytes: float,
    *,
    compute: bool,
    per_item: bool,
    per_octave: int,
    size_per_octave: int = 0,
    width_per_octave: int = 6,
    smoothing: float = 0.0,
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
    model = best[1]
    if size_per_octave > 0:
        model = replace(
            model, surface=_fit_surface(fam, model, width_per_octave, size_per_octave, smoothing)
        )
    return OpModel.from_table(model.to_table())  # round exactly as the TOML will


def _fit_netcurve(size: np.ndarray, secs: np.ndarray, per_octave: int, robust: int = 0) -> NetCurve:
    """Piecewise-linear least squares of log time on log size."""
    kx, coef, _ = _fit_log_curve(np.log(size), np.log(secs), per_octave, robust)
    curve = NetCurve.from_table(list(np.exp(kx)), list(np.exp(coef)))
    return NetCurve.from_table(**curve.to_table())


# --- per-GPU fit -----------------------------------------------------------------------


def _family_arrays(rows: Sequence[Row]) -> dict[str, _Family]:
    """Group operator rows into fit families with their work sizes."""
    from sim.costmodel.fitted import Geometry

    acc: dict[str, list[tuple[float, float, float, float, float, float]]] = {}
    for r in rows:
        if r.op in GEMM_OPS:
            g = Geometry.of(r.cfg, r.tp)
            n, k = g.gemm_nk(r.op)
            m = float(r.shape["num_tokens"])
            f, b = gemm_work(m, n, k, g.dt)
            acc.setdefault(r.op, []).append((f, b, 0.0, r.value_s, m, n * k))
        elif r.op in ELEMENTWISE_OPS:
            g = Geometry.of(r.cfg, r.tp)
            t = float(r.shape["num_tokens"])
            b = g.elementwise_bytes(r.op, t)
            acc.setdefault(r.op, []).append(
                (0.0, b, 0.0, r.value_s, t, g.elementwise_bytes(r.op, 1.0))
            )
        elif r.op == "attn_prefill":
            g = Geometry.of(r.cfg, r.tp)
            c = float(r.shape["prefill_chunk_size"])
            f, b = g.prefill_work(
                c,
                r.shape["kv_cache_size"],
                r.shape.get("batch_size", 1),
            )
            acc.setdefault(r.op, []).append((f, b, 0.0, r.value_s, c, f / c))
        elif r.op == "attn_decode":
            g = Geometry.of(r.cfg, r.tp)
            n = float(r.shape["batch_size"])
            b = g.decode_bytes(n * r.shape["kv_cache_size"])
            acc.setdefault(r.op, []).append((0.0, b, n, r.value_s, n, b / n))
    out: dict[str, _Family] = {}
    for fam, vals in acc.items():
        arr = np.array(vals, dtype=np.float64)
        out[fam] = _Family(*(arr[:, i] for i in range(6)))
    return out


def _peaks(gpu: str) -> tuple[float, float]:
    """Datasheet (FLOP/s, HBM bytes/s) the rooflines of ``gpu`` use.  ``cpu`` records
    use the nominal :data:`~sim.calibration.engines.devices.CPU_SPEC` (2 TFLOP/s,
    100 GB/s), registered here in :data:`GPUS` (pricing the rows needs it too), so a fit
    does not depend on whether the harness was imported first; another device that is
    not a known GPU gets nominal 1 TFLOP/s and 100 GB/s.  The fitted efficiencies absorb
    the difference."""
    from sim.calibration.engines.devices import register_cpu

    register_cpu()
    spec = GPUS.get(gpu)
    return (spec.peak_flops, spec.hbm_bandwidth) if spec else (1e12, 1e11)


def _floor_curve(floor_s: float) -> Curve:
    """An efficiency curve of constant throughput 1 (the peaks carry the efficiency)
    with a latency floor: a kernel takes at least ``floor_s`` seconds (none if 0)."""
    return Curve.from_table([floor_s], [1.0]) if floor_s > 0.0 else Curve.constant(1.0)


def _roofline_constant(
    gpu: str,
    e_gemm: float,
    e_mem: float,
    e_attn: float,
    c0: float,
    c1: float,
    *,
    e_decode: float | None = None,
    floors: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    decode_per_item: float = 0.0,
) -> GPUParams:
    """Constant-efficiency parameters (used when only whole iterations are measured).

    ``e_gemm``: GEMM (and LM head) fraction of peak FLOP/s; ``e_mem``: fraction of HBM
    bandwidth for weights and activations (GEMMs, element-wise kernels, prefill KV);
    ``e_attn``: prefill attention fraction of peak FLOP/s; ``e_decode``: decode
    attention's fraction of HBM bandwidth for the KV cache (default ``e_mem``);
    ``floors``: latency floors, seconds per kernel call, of (GEMM, element-wise,
    prefill attention, decode attention); ``c0``, ``c1``: overhead per iteration and per
    sequence."""
    pf, pb = _peaks(gpu)
    f_gemm, f_ew, f_pre, f_dec = floors
    gemm = OpModel(pf * e_gemm, pb * e_mem, _floor_curve(f_gemm), p=8.0)
    stream = OpModel(pf * e_gemm, pb * e_mem, _floor_curve(f_ew))
    decode = OpModel(
        pf * e_gemm,
        pb * (e_mem if e_decode is None else e_decode),
        _floor_curve(f_dec),
        per_item=decode_per_item,
    )
    return GPUParams(
        gemm=dict.fromkeys(GEMM_OPS, gemm),
        elementwise=dict.fromkeys(ELEMENTWISE_OPS, stream),
        attn_prefill=OpModel(pf * e_attn, pb * e_mem, _floor_curve(f_pre), p=8.0),
        attn_decode=decode,
        iteration_s=c0,
        per_seq_s=c1,
        origin="roofline efficiencies per kernel family, kernel latency floors and "
        "overhead fitted to whole-iteration records",
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


#: Start points of the whole-iteration fit's kernel latency floors, as divisors of the
#: fastest measured iteration's time per layer (the fit is not convex: a floor that
#: starts below every kernel's time has no gradient and stays there).
FLOOR_START_DIVISORS = (64.0, 8.0)
#: A later start point's fit replaces an earlier one only when its cost is lower by more
#: than this relative margin, so machine noise in the costs (~1e-8 relative) cannot
#: switch between two near-equal optima.
START_COST_MARGIN = 1e-6
#: Significant digits of the whole-iteration fit's parameters.  Measured cross-machine
#: noise of the fitted values is <= 2e-5 relative (OPENBLAS_CORETYPE Haswell /
#: SandyBridge / Prescott, perturbations of the records by 1e-14): 5x to 50x below the
#: unit of a 4th digit (1e-4 to 1e-3 relative); the fit's own error is 5-9% MAPE.
ITERATION_FIT_DIGITS = 4
#: Soft-L1 scale of the whole-iteration fit's log residuals: residuals beyond ~5% count
#: linearly, so shapes the model cannot express (a grid's "mixed" shape is two forward
#: passes) pull the fit less.
ITERATION_LOSS_SCALE = 0.05


def _iteration_params(gpu: str, th: np.ndarray) -> GPUParams:
    """Whole-iteration parameters from the optimiser's unconstrained vector: four
    efficiencies (logistic: GEMM FLOP/s, weight and activation bandwidth, prefill
    attention FLOP/s, decode attention KV bandwidth), then (log) the per-iteration and
    per-sequence overhead, the GEMM, element-wise, prefill and decode kernel floors and
    decode attention's roofline seconds per sequence."""
    e = 1.0 / (1.0 + np.exp(-th[:4]))
    x = np.exp(th[4:])
    return _roofline_constant(
        gpu,
        float(e[0]),
        float(e[1]),
        float(e[2]),
        float(x[0]),
        float(x[1]),
        e_decode=float(e[3]),
        floors=(float(x[2]), float(x[3]), float(x[4]), float(x[5])),
        decode_per_item=float(x[6]),
    )


def _fit_iteration_only(gpu: str, rows: Sequence[Row], max_nfev: int) -> GPUParams:
    """Fit :func:`_iteration_params` to whole-iteration rows: robust (soft-L1) least
    squares of log time from fixed start points, the best of them kept."""
    from scipy.optimize import least_squares

    # scalar libm logs (not numpy's SIMD loops, which differ between AVX2 and AVX-512)
    logy = [math.log(r.value_s) for r in rows]
    per_layer = min(r.value_s / max(r.layers, 1) for r in rows)

    def resid(th: np.ndarray) -> np.ndarray:
        pred = predict_rows(rows, _iteration_params(gpu, th)).tolist()
        return np.array([math.log(p) - ly for p, ly in zip(pred, logy, strict=True)])

    best = None
    for div in FLOOR_START_DIVISORS:
        x0 = np.array(
            [0.85, 1.4, 0.0, 0.0, math.log(1e-3), math.log(1e-5)]
            + [math.log(per_layer / div)] * 4
            + [math.log(1e-8)]
        )
        sol = least_squares(
            resid,
            x0,
            method="trf",
            loss="soft_l1",
            f_scale=ITERATION_LOSS_SCALE,
            max_nfev=max_nfev,
        )
        if best is None or sol.cost < best.cost * (1.0 - START_COST_MARGIN):
            best = sol
    assert best is not None
    table = _round_floats(_iteration_params(gpu, best.x).to_table(), ITERATION_FIT_DIGITS)
    return GPUParams.from_table(table)


def _round_floats(v: Any, digits: int) -> Any:
    """``v`` with every float (in nested dicts and lists) rounded to ``digits``
    significant digits."""
    if isinstance(v, float):
        return float(f"{v:.{digits - 1}e}") if math.isfinite(v) else v
    if isinstance(v, dict):
        return {k: _round_floats(x, digits) for k, x in v.items()}
    if isinstance(v, list):
        return [_round_floats(x, digits) for x in v]
    return v


def _fit_kernels(
    fams: dict[str, _Family], ops: Sequence[str], compute: bool, shared: bool, kw: dict[str, Any]
) -> dict[str, OpModel]:
    """Fit the kernels ``ops`` that have rows.  With ``shared``, one roofline efficiency
    curve is fitted to all their rows pooled (the curve prices shapes outside a kernel's
    surface, so pooling gives it the widest range of shapes) and each op gets its own
    surface."""
    present = [op for op in ops if op in fams]
    if not shared or not present:
        return {op: _fit_opmodel(fams[op], compute=compute, per_item=False, **kw) for op in present}
    pooled = _Family(
        *(
            np.concatenate([getattr(fams[op], f) for op in present])
            for f in _Family.__dataclass_fields__
        )
    )
    base = _fit_opmodel(pooled, compute=compute, per_item=False, **{**kw, "size_per_octave": 0})
    out = {}
    for op in present:
        m = base
        if kw["size_per_octave"] > 0:
            sf = _fit_surface(
                fams[op], base, kw["width_per_octave"], kw["size_per_octave"], kw["smoothing"]
            )
            m = replace(base, surface=sf)
        out[op] = OpModel.from_table(m.to_table())
    return out


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
        "size_per_octave": options.size_knots_per_octave,
        "width_per_octave": options.width_knots_per_octave,
        "smoothing": options.surface_smoothing,
    }
    fitted = _fit_kernels(fams, GEMM_OPS, True, options.shared_gemm_curve, kw)
    gemm = {op: fitted.get(op) or next(iter(fitted.values())) for op in GEMM_OPS}
    up = gemm["mlp_up_proj"]
    stream = replace(up, p=4.0, surface=None)
    ew_fit = _fit_kernels(fams, ELEMENTWISE_OPS, False, False, kw)
    ew = {op: ew_fit.get(op, stream) for op in ELEMENTWISE_OPS}
    prefill = (
        _fit_opmodel(fams["attn_prefill"], compute=True, per_item=False, **kw)
        if "attn_prefill" in fams
        else replace(up, surface=None)
    )
    decode = stream
    if "attn_decode" in fams:
        dkw = kw if options.decode_surface else {**kw, "size_per_octave": 0}
        decode = _fit_opmodel(fams["attn_decode"], compute=False, per_item=True, **dkw)
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
                options.network_knots_per_octave,
                options.robust_iterations,
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


#: Options that only shape per-operator fits (surfaces, shared curves, collective curves).
OPERATOR_FIT_OPTIONS = (
    "decode_surface",
    "network_knots_per_octave",
    "robust_iterations",
    "shared_gemm_curve",
    "size_knots_per_octave",
    "width_knots_per_octave",
    "surface_smoothing",
)


def _recorded_options(options: FitOptions, rows: Sequence[Row]) -> dict[str, Any]:
    """The options a fit depends on: all of them when it fits operator rows, else (only
    whole iterations) those of the iteration-only fit."""
    d = asdict(options)
    if not any(r.op != "iteration" for r in rows):
        for k in OPERATOR_FIT_OPTIONS:
            del d[k]
    return d


def fit_costmodel(
    inputs: Sequence[RecordsInput], name: str, options: FitOptions | None = None
) -> str:
    """Fit, validate and serialise a cost model.  Pure: same inputs, same TOML bytes on one machine
    (another CPU's BLAS: the same model within :mod:`sim.calibration.check`'s tolerances)."""
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
        "fit_options": _recorded_options(options, rows),
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
