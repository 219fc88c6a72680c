"""The fitted cost model: roofline operators with efficiency curves fitted to real timings.

Every operator of a transformer layer is priced from its *shape*, never looked up by
model name, so an architecture nobody profiled is predicted from its config alone.
Each kernel (:class:`OpModel`) has a roofline time at the GPU's datasheet peaks,

    roofline = smoothmax(flops / peak_flops, bytes / peak_bytes) + per_item x items,
    smoothmax(a, b) = (a^p + b^p)^(1/p),

and a fitted efficiency curve (:class:`Curve`, achieved fraction of the roofline as a
function of the roofline time): ``time = roofline / efficiency(roofline)``.  Achieved
FLOP/s and bytes/s are thus functions of the kernel's shape.  Kernels:

- GEMMs (QKV, attention output, MLP up/gate, MLP down; the LM head, MoE experts and
  router use the MLP-up kernel's fit).  FLOPs count the token dimension padded to the
  GEMM tile (64 rows up to 256 tokens, 128 above), which is what makes measured GEMM
  time a staircase in the token count; bytes are weights + input + output.
- element-wise kernels (norms, residual add x2, activation, RoPE, embedding): bytes only.
- attention prefill: causal FLOPs ``4 x q_width x new x (context + (new+1)/2)`` and KV
  bytes; decode: KV bytes read plus a fitted roofline cost per sequence.
- TP all-reduce (2 per layer): measured NVLink curves (bytes -> seconds per world size)
  when the replica's TP group is on NVLink and the GPU has them, else the ring formula
  over the topology's bottleneck bandwidth and latency (:func:`sim.costmodel.base.allreduce_time`).
- per iteration: embedding, final norm, LM head for each sequence's last token,
  pipeline sends between stages, and a fixed plus per-sequence CPU overhead.

Where the records cover a kernel at several shapes, its :class:`OpModel` also has a
:class:`Surface`: measured seconds on a log-log grid of (size, width) -- tokens and
``N x K`` for GEMMs, tokens and bytes per token for element-wise kernels, chunk and
FLOPs per chunk token for prefill -- which captures kernel switches and shape effects
that one curve over roofline time cannot.  Shapes outside the surface's widths (a new
architecture) are priced by the roofline curve, capped by the surface's edge so time
stays monotone; on another GPU only the roofline curve transfers.

A :class:`Curve` is piecewise-linear in log(work) vs log(throughput) between knots,
with the first knot's time as a floor below them and the last knot's throughput above.
Its log-log slope is at most 1 (fitted under that constraint, and clipped when loaded),
so ``time = work / throughput`` never decreases as work grows: more tokens or more
context never predicts less time.

Units: seconds, bytes, FLOPs.
"""

from __future__ import annotations

import math
import re
import tomllib
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sim.common.errors import ConfigError, InputError
from sim.costmodel.base import (
    BatchShape,
    IterationModel,
    ReplicaHardware,
    allreduce_time,
    gemm_peak_flops,
)
from sim.specs.hardware import GPUS, GPUSpec
from sim.specs.models import DTYPE_BYTES, ModelSpec, expected_experts_touched

FORMAT = "agentsim-costmodel"
VERSION = 1

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = (
    "input_layernorm",
    "post_attention_layernorm",
    "add",
    "mlp_act",
    "attn_rope",
    "emb",
)
ATTENTION_OPS = ("attn_prefill", "attn_decode")
NETWORK_OPS = ("all_reduce", "send_recv")

#: Operator family of each op name, for error reports.
FAMILY = {
    **{op: "gemm" for op in GEMM_OPS},
    **{op: "elementwise" for op in ELEMENTWISE_OPS},
    "attn_prefill": "attn_prefill",
    "attn_decode": "attn_decode",
    "all_reduce": "all_reduce",
    "send_recv": "send_recv",
    "iteration": "iteration",
}

#: Entries of an iteration model's prefill-attention memo before it is cleared.
PREFILL_MEMO_MAX = 1 << 18


# --- curves --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Curve:
    """Achieved throughput as a function of work (piecewise-linear in log-log).

    Below the first knot the time is the first knot's (a latency floor); above the
    last knot the throughput stays at the last knot's.

    For an :class:`OpModel` the work is roofline seconds and the throughput the achieved
    efficiency (fraction of the roofline), so ``time(work) = work / efficiency``.

    Attributes:
        lx: natural log of the knot work sizes, increasing.
        ly: natural log of the achieved throughput (work per second) at each knot.
    """

    lx: tuple[float, ...]
    ly: tuple[float, ...]

    @classmethod
    def from_table(cls, work: list[float], throughput: list[float]) -> Curve:
        """Build from knots in natural units, enforcing the monotone-time envelope
        (log-log slope <= 1, so time = work / throughput is non-decreasing)."""
        if len(work) != len(throughput) or not work:
            raise ValueError("curve needs equally many work and throughput knots (at least one)")
        lx = [math.log(w) for w in work]
        ly = [math.log(t) for t in throughput]
        for j in range(1, len(lx)):
            if lx[j] <= lx[j - 1]:
                raise ValueError("curve work knots must increase")
            ly[j] = min(ly[j], ly[j - 1] + (lx[j] - lx[j - 1]))
        return cls(tuple(lx), tuple(ly))

    @classmethod
    def constant(cls, throughput: float) -> Curve:
        """A flat curve (its single knot at 1e-30 work, so no latency floor in practice)."""
        return cls((math.log(1e-30),), (math.log(throughput),))

    def to_table(self) -> dict[str, list[float]]:
        return {
            "work": [_sig(math.exp(x)) for x in self.lx],
            "throughput": [_sig(math.exp(y)) for y in self.ly],
        }

    def scaled(self, factor: float) -> Curve:
        """The curve with every throughput multiplied by ``factor``."""
        d = math.log(factor)
        return Curve(self.lx, tuple(y + d for y in self.ly))

    def time(self, work: float) -> float:
        """Seconds to do ``work`` (0 for no work)."""
        if work <= 0.0:
            return 0.0
        lx, ly = self.lx, self.ly
        x = math.log(work)
        if x <= lx[0]:
            return math.exp(lx[0] - ly[0])  # latency floor: the first knot's time
        if x >= lx[-1]:
            y = ly[-1]
        else:
            j = bisect_right(lx, x) - 1
            y = ly[j] + (ly[j + 1] - ly[j]) * (x - lx[j]) / (lx[j + 1] - lx[j])
        return math.exp(x - y)

    def times(self, work: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`time`."""
        w = np.asarray(work, dtype=np.float64)
        safe = np.where(w > 0, w, 1.0)
        x = np.maximum(np.log(safe), self.lx[0])
        y = np.interp(x, self.lx, self.ly)
        return np.where(w > 0, np.exp(x - y), 0.0)


@dataclass(frozen=True, slots=True)
class Surface:
    """Seconds of a kernel as a function of its size and its width (log-log grid).

    The size ``x`` is what grows with the batch (tokens for GEMMs and element-wise
    kernels, the chunk for prefill attention, the batch for decode attention); the width
    ``z`` is the rest of the shape (GEMM ``N x K``, element-wise bytes per token, prefill
    FLOPs per chunk token, decode KV bytes per sequence).  A decode surface treats the
    batch as uniform, so adding a sequence shorter than the batch's mean context can
    predict slightly less time; the committed fit therefore leaves decode to the roofline
    curve (``FitOptions.decode_surface``).  ``log seconds`` is bilinear in
    (log x, log z) between knots, with non-decreasing values along both axes (enforced by
    a cumulative maximum when built).  Above the last knot of either axis the time grows
    in proportion (``x`` and ``z`` are work multipliers there); below the first knot it is
    the first knot's (a floor; :class:`OpModel` also caps it by its roofline curve), so
    a larger size or width never predicts less time.

    Attributes:
        lx: natural log of the size knots, increasing.
        lz: natural log of the width knots, increasing.
        lt: natural log of seconds, ``lt[i][j]`` at (``lx[i]``, ``lz[j]``).
    """

    lx: tuple[float, ...]
    lz: tuple[float, ...]
    lt: tuple[tuple[float, ...], ...]

    @classmethod
    def from_table(cls, x: list[float], width: list[float], seconds: list[list[float]]) -> Surface:
        """Build from knots in natural units, enforcing the monotone envelope."""
        if (
            not x
            or not width
            or len(seconds) != len(x)
            or any(len(r) != len(width) for r in seconds)
        ):
            raise ValueError("surface needs a len(x) x len(width) table of seconds")
        lx = [math.log(v) for v in x]
        lz = [math.log(v) for v in width]
        if any(b <= a for a, b in zip(lx, lx[1:], strict=False)) or any(
            b <= a for a, b in zip(lz, lz[1:], strict=False)
        ):
            raise ValueError("surface knots must increase")
        g = np.log(np.array(seconds, dtype=np.float64))
        g = np.maximum.accumulate(np.maximum.accumulate(g, axis=0), axis=1)
        return cls(tuple(lx), tuple(lz), tuple(tuple(float(v) for v in r) for r in g))

    def to_table(self) -> dict[str, Any]:
        return {
            "x": [_sig(math.exp(v)) for v in self.lx],
            "width": [_sig(math.exp(v)) for v in self.lz],
            "seconds": [[_sig(math.exp(v)) for v in r] for r in self.lt],
        }

    @property
    def min_width(self) -> float:
        return math.exp(self.lz[0])

    @property
    def max_width(self) -> float:
        return math.exp(self.lz[-1])

    def row(self, x: float) -> tuple[float, ...]:
        """log seconds at the width knots for size ``x`` (``x`` > 0)."""
        lx = self.lx
        v = math.log(x)
        if v <= lx[0]:
            return self.lt[0]
        if v >= lx[-1]:
            d = v - lx[-1]
            return tuple(t + d for t in self.lt[-1])
        i = bisect_right(lx, v) - 1
        f = (v - lx[i]) / (lx[i + 1] - lx[i])
        return tuple(p + (q - p) * f for p, q in zip(self.lt[i], self.lt[i + 1], strict=True))

    def time_on_row(self, row: tuple[float, ...], width: float) -> float:
        """Seconds at ``width`` (> 0) on a :meth:`row`."""
        lz = self.lz
        y = math.log(width)
        if y <= lz[0]:
            return math.exp(row[0])
        if y >= lz[-1]:
            return math.exp(row[-1])
        j = bisect_right(lz, y) - 1
        return math.exp(row[j] + (row[j + 1] - row[j]) * (y - lz[j]) / (lz[j + 1] - lz[j]))

    def time(self, x: float, width: float) -> float:
        """Seconds of a kernel of size ``x`` and width ``width`` (both > 0).

        Equals ``time_on_row(row(x), width)`` to the last bit, but interpolates only
        the two width columns it needs (this runs for every prefill chunk).
        """
        lz = self.lz
        y = math.log(width)
        if y <= lz[0]:
            j, g = 0, None
        elif y >= lz[-1]:
            j, g = len(lz) - 1, None
        else:
            j = bisect_right(lz, y) - 1
            g = y - lz[j]
        lx = self.lx
        v = math.log(x)
        if v <= lx[0]:
            r = self.lt[0]
            a, b = r[j], (r[j + 1] if g is not None else 0.0)
        elif v >= lx[-1]:
            d = v - lx[-1]
            r = self.lt[-1]
            a, b = r[j] + d, (r[j + 1] + d if g is not None else 0.0)
        else:
            i = bisect_right(lx, v) - 1
            f = (v - lx[i]) / (lx[i + 1] - lx[i])
            p, q = self.lt[i], self.lt[i + 1]
            a = p[j] + (q[j] - p[j]) * f
            b = p[j + 1] + (q[j + 1] - p[j + 1]) * f if g is not None else 0.0
        if g is None:
            return math.exp(a)
        return math.exp(a + (b - a) * g / (lz[j + 1] - lz[j]))

    def times_on_row(self, row: tuple[float, ...], width: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`time_on_row` (widths > 0)."""
        y = np.log(np.asarray(width, dtype=np.float64))
        lz = np.asarray(self.lz)
        return np.exp(np.interp(np.clip(y, lz[0], lz[-1]), lz, row))

    def times(self, x: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`time` over arrays of sizes and widths (both > 0)."""
        lx, lz = np.asarray(self.lx), np.asarray(self.lz)
        grid = np.asarray(self.lt)
        u = np.log(np.asarray(x, dtype=np.float64))
        y = np.log(np.asarray(width, dtype=np.float64))
        uc, yc = np.clip(u, lx[0], lx[-1]), np.clip(y, lz[0], lz[-1])
        i = np.clip(np.searchsorted(lx, uc, side="right") - 1, 0, max(len(lx) - 2, 0))
        j = np.clip(np.searchsorted(lz, yc, side="right") - 1, 0, max(len(lz) - 2, 0))
        i1, j1 = np.minimum(i + 1, len(lx) - 1), np.minimum(j + 1, len(lz) - 1)
        fx = np.where(i1 > i, (uc - lx[i]) / np.where(i1 > i, lx[i1] - lx[i], 1.0), 0.0)
        fy = np.where(j1 > j, (yc - lz[j]) / np.where(j1 > j, lz[j1] - lz[j], 1.0), 0.0)
        g = (
            (1 - fx) * (1 - fy) * grid[i, j]
            + fx * (1 - fy) * grid[i1, j]
            + (1 - fx) * fy * grid[i, j1]
            + fx * fy * grid[i1, j1]
        )
        return np.exp(g + np.maximum(u - lx[-1], 0.0))


@dataclass(frozen=True, slots=True)
class NetCurve:
    """Measured collective time vs message size (piecewise-linear in log-log).

    Below the first knot the time is the first knot's (latency floor); above the last
    it grows linearly with size at the last knot's bandwidth.

    Attributes:
        lx: natural log of message sizes (bytes), increasing.
        lt: natural log of seconds at each size, non-decreasing.
    """

    lx: tuple[float, ...]
    lt: tuple[float, ...]

    @classmethod
    def from_table(cls, size_bytes: list[float], seconds: list[float]) -> NetCurve:
        lx = [math.log(s) for s in size_bytes]
        lt = [math.log(t) for t in seconds]
        for j in range(1, len(lt)):
            lt[j] = max(lt[j], lt[j - 1])
        return cls(tuple(lx), tuple(lt))

    def to_table(self) -> dict[str, list[float]]:
        return {
            "size_bytes": [_sig(math.exp(x)) for x in self.lx],
            "seconds": [_sig(math.exp(t)) for t in self.lt],
        }

    def time(self, nbytes: float) -> float:
        if nbytes <= 0.0:
            return 0.0
        lx, lt = self.lx, self.lt
        x = math.log(nbytes)
        if x <= lx[0]:
            return math.exp(lt[0])
        if x >= lx[-1]:
            return math.exp(lt[-1] + x - lx[-1])
        j = bisect_right(lx, x) - 1
        return math.exp(lt[j] + (lt[j + 1] - lt[j]) * (x - lx[j]) / (lx[j + 1] - lx[j]))

    def times(self, nbytes: np.ndarray) -> np.ndarray:
        return np.array([self.time(float(b)) for b in np.asarray(nbytes, dtype=np.float64)])


@dataclass(frozen=True, slots=True)
class OpModel:
    """One kernel: roofline time divided by a fitted efficiency curve.

    ``roofline = smoothmax(flops / peak_flops, bytes / peak_bytes) + per_item x items``
    (seconds at datasheet peaks; ``smoothmax(a, b) = (a^p + b^p)^(1/p)``), and
    ``time = roofline / efficiency(roofline)``: achieved FLOP/s and bytes/s are the
    peaks times the efficiency, a :class:`Curve` of the kernel's size.

    Attributes:
        peak_flops: FLOP/s the roofline uses (the GPU's datasheet dense peak).
        peak_bytes: bytes/s the roofline uses (the GPU's datasheet HBM bandwidth).
        efficiency: achieved fraction of the roofline vs roofline seconds.
        p: smooth-max exponent (large p -> hard max of compute and memory time).
        per_item: roofline seconds per item, e.g. per decoding sequence.
    """

    peak_flops: float
    peak_bytes: float
    efficiency: Curve
    p: float = 4.0
    per_item: float = 0.0
    surface: Surface | None = None

    def roofline(self, flops: float, nbytes: float, items: float = 0.0) -> float:
        tm = nbytes / self.peak_bytes
        tc = flops / self.peak_flops
        if tc > 0.0:
            p = self.p
            tm = (tm**p + tc**p) ** (1.0 / p)
        return tm + self.per_item * items

    def time(
        self,
        flops: float,
        nbytes: float,
        items: float = 0.0,
        size: float = 0.0,
        width: float = 0.0,
    ) -> float:
        """Seconds of a kernel.  With a :class:`Surface`, ``size`` and ``width`` (see
        there) price it; below the surface's widths the roofline curve caps the time."""
        r = self.roofline(flops, nbytes, items)
        sf = self.surface
        if sf is None or r <= 0.0 or size <= 0.0 or width <= 0.0:
            return self.efficiency.time(r)
        t = sf.time(size, width)
        if width < sf.min_width:
            t = min(t, self.efficiency.time(r))
        elif width > sf.max_width:
            t = max(t, self.efficiency.time(r))
        return t

    def rooflines(
        self, flops: np.ndarray, nbytes: np.ndarray, items: np.ndarray | float = 0.0
    ) -> np.ndarray:
        tm = np.asarray(nbytes, dtype=np.float64) / self.peak_bytes
        tc = np.asarray(flops, dtype=np.float64) / self.peak_flops
        core = np.where(tc > 0.0, (tm**self.p + tc**self.p) ** (1.0 / self.p), tm)
        return core + self.per_item * np.asarray(items, dtype=np.float64)

    def times(
        self,
        flops: np.ndarray,
        nbytes: np.ndarray,
        items: np.ndarray | float = 0.0,
        size: np.ndarray | float = 0.0,
        width: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Vectorised :meth:`time`."""
        r = self.rooflines(flops, nbytes, items)
        base = self.efficiency.times(r)
        sf = self.surface
        if sf is None:
            return base
        x = np.broadcast_to(np.asarray(size, dtype=np.float64), r.shape)
        z = np.broadcast_to(np.asarray(width, dtype=np.float64), r.shape)
        ok = (r > 0) & (x > 0) & (z > 0)
        t = sf.times(np.where(ok, x, 1.0), np.where(ok, z, 1.0))
        t = np.where(z < sf.min_width, np.minimum(t, base), t)
        t = np.where(z > sf.max_width, np.maximum(t, base), t)
        return np.where(ok, t, base)

    def scaled(self, flops_factor: float, bytes_factor: float) -> OpModel:
        """The same efficiency curve on a GPU with peaks scaled by the given factors."""
        return replace(
            self,
            peak_flops=self.peak_flops * flops_factor,
            peak_bytes=self.peak_bytes * bytes_factor,
            surface=None,  # measured seconds do not transfer; the roofline curve does
        )

    def to_table(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "peak_flops": _sig(self.peak_flops),
            "peak_bytes": _sig(self.peak_bytes),
            "p": _sig(self.p),
            "per_item_s": _sig(self.per_item),
            "efficiency": self.efficiency.to_table(),
        }
        if self.surface is not None:
            d["surface"] = self.surface.to_table()
        return d

    @classmethod
    def from_table(cls, d: dict[str, Any]) -> OpModel:
        eff = d["efficiency"]
        return cls(
            peak_flops=float(d["peak_flops"]),
            peak_bytes=float(d["peak_bytes"]),
            efficiency=Curve.from_table(eff["work"], eff["throughput"]),
            p=float(d.get("p", 4.0)),
            per_item=float(d.get("per_item_s", 0.0)),
            surface=None
            if (sf := d.get("surface")) is None
            else Surface.from_table(sf["x"], sf["width"], sf["seconds"]),
        )


@dataclass(frozen=True, slots=True)
class GPUParams:
    """Everything the fitted model knows about one GPU type.

    Attributes:
        gemm: GEMM kernel model per GEMM op name (shared by every model).
        elementwise: per element-wise op name.
        attn_prefill, attn_decode: attention kernel models.
        all_reduce: measured NVLink all-reduce curves by world size (may be empty).
        send_recv: measured NVLink point-to-point curve (or None).
        iteration_s, per_seq_s: CPU/scheduling/sampling overhead per iteration and per sequence.
        origin: how these were obtained (for reports).
    """

    gemm: dict[str, OpModel]
    elementwise: dict[str, OpModel]
    attn_prefill: OpModel
    attn_decode: OpModel
    all_reduce: dict[int, NetCurve] = field(default_factory=dict)
    send_recv: NetCurve | None = None
    iteration_s: float = 0.0
    per_seq_s: float = 0.0
    origin: str = ""

    def scaled(self, flops_factor: float, bytes_factor: float, origin: str) -> GPUParams:
        """Transfer to another GPU: compute curves x flops_factor, memory x bytes_factor.
        Measured collective curves do not transfer (the replica's topology prices them)."""
        return GPUParams(
            gemm={k: v.scaled(flops_factor, bytes_factor) for k, v in self.gemm.items()},
            elementwise={
                k: v.scaled(flops_factor, bytes_factor) for k, v in self.elementwise.items()
            },
            attn_prefill=self.attn_prefill.scaled(flops_factor, bytes_factor),
            attn_decode=self.attn_decode.scaled(flops_factor, bytes_factor),
            iteration_s=self.iteration_s,
            per_seq_s=self.per_seq_s,
            origin=origin,
        )

    def to_table(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "origin": self.origin,
            "iteration_s": _sig(self.iteration_s),
            "per_seq_s": _sig(self.per_seq_s),
            "gemm": {k: v.to_table() for k, v in sorted(self.gemm.items())},
            "elementwise": {k: v.to_table() for k, v in sorted(self.elementwise.items())},
            "attn_prefill": self.attn_prefill.to_table(),
            "attn_decode": self.attn_decode.to_table(),
        }
        if self.all_reduce:
            d["all_reduce"] = {str(w): c.to_table() for w, c in sorted(self.all_reduce.items())}
        if self.send_recv is not None:
            d["send_recv"] = self.send_recv.to_table()
        return d

    @classmethod
    def from_table(cls, d: dict[str, Any]) -> GPUParams:
        sr = d.get("send_recv")
        return cls(
            gemm={k: OpModel.from_table(v) for k, v in d["gemm"].items()},
            elementwise={k: OpModel.from_table(v) for k, v in d["elementwise"].items()},
            attn_prefill=OpModel.from_table(d["attn_prefill"]),
            attn_decode=OpModel.from_table(d["attn_decode"]),
            all_reduce={
                int(w): NetCurve.from_table(c["size_bytes"], c["seconds"])
                for w, c in d.get("all_reduce", {}).items()
            },
            send_recv=None if sr is None else NetCurve.from_table(sr["size_bytes"], sr["seconds"]),
            iteration_s=float(d.get("iteration_s", 0.0)),
            per_seq_s=float(d.get("per_seq_s", 0.0)),
            origin=str(d.get("origin", "")),
        )


def _sig(x: float) -> float:
    """``x`` rounded to 7 significant digits (keeps the TOML stable across platforms)."""
    return float(f"{x:.7g}")


# --- operator shapes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Geometry:
    """The per-GPU dimensions of one model at one TP degree (elements, not bytes)."""

    hidden: int
    q: float  # query width per GPU (heads x head_dim / tp)
    kv: float  # key (= value) width per GPU
    inter: float  # MLP intermediate width per GPU
    gated: bool
    dt: int  # bytes per element (activations; weights and KV unless set below)
    wdt: int = 0  # bytes per linear-layer weight when it differs from dt (FP8: 1)
    kvdt: int = 0  # bytes per KV element when it differs from dt (FP8 KV cache: 1)
    shared_inter: float = 0.0  # shared-expert MLP width per GPU (Llama 4 MoE; 0: none)

    @classmethod
    def of(cls, cfg: dict[str, Any], tp: int) -> Geometry:
        """From an HF-style config dict (see :class:`sim.specs.models.ModelSpec`)."""
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        kvh = int(cfg.get("num_key_value_heads") or heads)
        hd = int(cfg.get("head_dim") or h // heads)
        act = str(cfg.get("hidden_act", "silu"))
        return cls(
            hidden=h,
            q=heads * hd / tp,
            kv=max(kvh, tp) * hd / tp,  # KV heads are replicated when TP exceeds them
            inter=float(cfg.get("intermediate_size", 0)) / tp,
            gated=act in ("silu", "swiglu", "gelu_pytorch_tanh", "geglu")
            or bool(cfg.get("use_gated_mlp", False)),
            dt=DTYPE_BYTES.get(str(cfg.get("torch_dtype") or "float16"), 2),
        )

    @classmethod
    def of_spec(cls, m: ModelSpec, tp: int) -> Geometry:
        return cls(
            hidden=m.hidden_size,
            q=m.q_size / tp,
            kv=max(m.num_kv_heads, tp) * m.head_dim / tp,
            inter=m.intermediate_size / tp,
            gated=True,
            dt=m.dtype_bytes,
            wdt=0 if m.weight_bytes_per_param == m.dtype_bytes else m.weight_bytes_per_param,
            kvdt=0 if m.kv_bytes_per_element == m.dtype_bytes else m.kv_bytes_per_element,
            shared_inter=m.shared_expert_intermediate / tp,
        )

    def gemm_nk(self, op: str) -> tuple[float, float]:
        """(N, K) of a GEMM op: output width and reduction width per GPU."""
        h = self.hidden
        if op == "attn_pre_proj":
            return self.q + 2 * self.kv, h
        if op == "attn_post_proj":
            return h, self.q
        if op == "mlp_up_proj":
            return (2 if self.gated else 1) * self.inter, h
        if op == "mlp_down_proj":
            return h, self.inter
        raise KeyError(op)

    def elementwise_bytes(self, op: str, tokens: float) -> float:
        """Bytes an element-wise op moves for ``tokens`` tokens (reads + writes)."""
        h, dt = self.hidden, self.dt
        if op in ("input_layernorm", "post_attention_layernorm"):
            return 2.0 * tokens * h * dt
        if op == "add":
            return 3.0 * tokens * h * dt
        if op == "mlp_act":
            return (3.0 if self.gated else 2.0) * tokens * self.inter * dt
        if op == "attn_rope":
            return 2.0 * tokens * (self.q + self.kv) * dt
        if op == "emb":
            return 1.0 * tokens * h * dt
        raise KeyError(op)

    def prefill_work(self, new: float, ctx: float, batch: float = 1.0) -> tuple[float, float]:
        """(FLOPs, bytes) of causal attention over ``new`` tokens after ``ctx`` cached ones."""
        flops = batch * 4.0 * self.q * new * (ctx + (new + 1) / 2.0)
        if self.kvdt:
            kv_b = self.kvdt * 2.0 * self.kv * (ctx + new)
            return flops, batch * (kv_b + self.dt * 2.0 * self.q * new)
        nbytes = batch * self.dt * (2.0 * self.kv * (ctx + new) + 2.0 * self.q * new)
        return flops, nbytes

    def decode_bytes(self, context_sum: float) -> float:
        """KV bytes one layer reads for decode sequences with ``context_sum`` total context."""
        return 2.0 * self.kv * (self.kvdt or self.dt) * context_sum


def gemm_work(m: float, n: float, k: float, dt: int, wdt: int = 0) -> tuple[float, float]:
    """(FLOPs, bytes) of an ``m x k`` by ``k x n`` GEMM: weights, input and output
    (weights at ``wdt`` bytes when given, e.g. FP8; activations at ``dt``)."""
    if wdt and wdt != dt:
        return 2.0 * m * n * k, wdt * n * k + dt * (m * k + m * n)
    return 2.0 * m * n * k, dt * (n * k + m * k + m * n)


def predict_op(
    params: GPUParams, cfg: dict[str, Any], op: str, tp: int, shape: dict[str, float]
) -> float:
    """Predicted seconds of one recorded operator (see :mod:`sim.calibration.records`)."""
    if op in NETWORK_OPS:
        size = float(shape["size_bytes"])
        w = int(shape["num_workers"])
        if op == "all_reduce":
            curve = params.all_reduce.get(w)
            if curve is None:
                raise ConfigError(f"no all-reduce curve for {w} workers")
            return curve.time(size)
        if params.send_recv is None:
            raise ConfigError("no send/recv curve")
        return params.send_recv.time(size)
    g = Geometry.of(cfg, tp)
    if op in GEMM_OPS:
        n, k = g.gemm_nk(op)
        m = float(shape["num_tokens"])
        return params.gemm[op].time(*gemm_work(m, n, k, g.dt), 0.0, m, n * k)
    if op in ELEMENTWISE_OPS:
        t = float(shape["num_tokens"])
        return params.elementwise[op].time(
            0.0, g.elementwise_bytes(op, t), 0.0, t, g.elementwise_bytes(op, 1.0)
        )
    if op == "attn_prefill":
        c = float(shape["prefill_chunk_size"])
        f, b = g.prefill_work(c, shape["kv_cache_size"], shape.get("batch_size", 1))
        return params.attn_prefill.time(f, b, 0.0, c, f / c)
    if op == "attn_decode":
        n = float(shape["batch_size"])
        b = g.decode_bytes(n * shape["kv_cache_size"])
        return params.attn_decode.time(0.0, b, n, n, b / n)
    raise ConfigError(f"operator {op!r} has no prediction")


# --- the iteration model -------------------------------------------------------------


class FittedIterationModel:
    """Iteration time of one replica from fitted operator curves (module docstring)."""

    def __init__(
        self, hw: ReplicaHardware, params: GPUParams, *, nvlink_tables: bool = True
    ) -> None:
        m = hw.model
        m.check_tp(hw.tp)
        if hw.pp < 1 or m.num_layers % hw.pp:
            raise ConfigError(
                f"model {m.name}: PP={hw.pp} does not divide num_layers={m.num_layers}"
            )
        self.hw = hw
        self.params = params
        g = Geometry.of_spec(m, hw.tp)
        self._g = g
        self._layers = m.num_layers
        self._tp = hw.tp
        self._pp = hw.pp
        self._experts = m.num_experts
        self._k = m.experts_per_token
        self._act_bytes_per_token = hw.model.hidden_size * m.dtype_bytes
        self._attn_gemms = (g.gemm_nk("attn_pre_proj"), g.gemm_nk("attn_post_proj"))
        self._mlp_gemms = (g.gemm_nk("mlp_up_proj"), g.gemm_nk("mlp_down_proj"))
        self._head_nk = (m.vocab_size / hw.tp, float(m.hidden_size))
        self._qkv = params.gemm["attn_pre_proj"]
        self._o = params.gemm["attn_post_proj"]
        self._up = params.gemm["mlp_up_proj"]
        self._down = params.gemm["mlp_down_proj"]
        # LM head and MoE router: 16-bit GEMMs even in FP8 checkpoints
        self._head_op = self._up
        peak = gemm_peak_flops(m, hw.gpu)
        if peak != hw.gpu.peak_flops:
            # FP8 weights on FP8 tensor cores: the fitted efficiency curves on the FP8
            # peak (measured 16-bit surfaces do not transfer, so they are dropped)
            r = peak / hw.gpu.peak_flops
            self._qkv, self._o = self._qkv.scaled(r, 1.0), self._o.scaled(r, 1.0)
            self._up, self._down = self._up.scaled(r, 1.0), self._down.scaled(r, 1.0)
        self._shared_gemms = (
            (
                ((2 if g.gated else 1) * g.shared_inter, float(g.hidden)),
                (float(g.hidden), g.shared_inter),
            )
            if g.shared_inter > 0
            else None
        )
        ew = params.elementwise
        self._norm1 = ew["input_layernorm"]
        self._norm2 = ew["post_attention_layernorm"]
        self._add = ew["add"]
        self._act = ew["mlp_act"]
        self._rope = ew["attn_rope"]
        self._emb = ew["emb"]
        self._prefill = params.attn_prefill
        self._decode = params.attn_decode
        ar = params.all_reduce.get(hw.tp) if nvlink_tables and hw.link == "nvlink" else None
        self._ar_curve = ar
        self._p2p_curve = params.send_recv if nvlink_tables and hw.link == "nvlink" else None
        self._decode_bytes_per_ctx = g.decode_bytes(1.0)
        self._linear_memo: dict[int, float] = {}
        self._decode_rows: dict[int, tuple[float, ...]] = {}
        self._prefill_rows: dict[int, tuple[float, ...]] = {}
        self._prefill_memo: dict[tuple[int, int], float] = {}
        self._head_memo: dict[int, float] = {}

    # -- components (all seconds) --
    def _elementwise(self, model: OpModel, op: str, tokens: float) -> float:
        g = self._g
        return model.time(
            0.0, g.elementwise_bytes(op, tokens), 0.0, tokens, g.elementwise_bytes(op, 1.0)
        )

    def allreduce(self, nbytes: float) -> float:
        """One TP all-reduce of ``nbytes`` (0 without TP)."""
        if self._tp <= 1:
            return 0.0
        if self._ar_curve is not None:
            return self._ar_curve.time(nbytes)
        return allreduce_time(
            nbytes, self._tp, self.hw.allreduce_bandwidth, self.hw.allreduce_latency
        )

    def p2p(self, nbytes: float) -> float:
        """One activation send between pipeline stages."""
        if self._p2p_curve is not None:
            return self._p2p_curve.time(nbytes)
        return self.hw.pp_latency + nbytes / self.hw.pp_bandwidth

    def layer_breakdown(self, tokens: int) -> dict[str, float]:
        """Seconds of one layer's non-attention work for ``tokens`` tokens, by component."""
        t = float(tokens)
        g, dt, wdt = self._g, self._g.dt, self._g.wdt
        (qn, qk), (on, ok) = self._attn_gemms
        (un, uk), (dn, dk) = self._mlp_gemms
        attn_gemm = self._qkv.time(*gemm_work(t, qn, qk, dt, wdt), 0.0, t, qn * qk) + self._o.time(
            *gemm_work(t, on, ok, dt, wdt), 0.0, t, on * ok
        )
        if self._experts > 1:
            routed = t * self._k
            # the experts the batch touches, each multiplying its share of the routed
            # tokens (uniform routing: sim.specs.models.expected_experts_touched)
            hit = expected_experts_touched(t, self._experts, self._k)
            per = routed / hit
            mlp_gemm = hit * (
                self._up.time(*gemm_work(per, un, uk, dt, wdt), 0.0, per, un * uk)
                + self._down.time(*gemm_work(per, dn, dk, dt, wdt), 0.0, per, dn * dk)
            )
            router = gemm_work(t, float(self._experts), float(g.hidden), dt)
            mlp_gemm += self._head_op.time(*router, 0.0, t, float(self._experts * g.hidden))
            if self._shared_gemms is not None:
                (sn, sk), (sdn, sdk) = self._shared_gemms
                mlp_gemm += self._up.time(
                    *gemm_work(t, sn, sk, dt, wdt), 0.0, t, sn * sk
                ) + self._down.time(*gemm_work(t, sdn, sdk, dt, wdt), 0.0, t, sdn * sdk)
                routed += t * g.shared_inter / g.inter  # its activation, in expert widths
        else:
            routed = t
            mlp_gemm = self._up.time(
                *gemm_work(t, un, uk, dt, wdt), 0.0, t, un * uk
            ) + self._down.time(*gemm_work(t, dn, dk, dt, wdt), 0.0, t, dn * dk)
        ew = (
            self._elementwise(self._norm1, "input_layernorm", t)
            + self._elementwise(self._norm2, "post_attention_layernorm", t)
            + 2.0 * self._elementwise(self._add, "add", t)
            + self._elementwise(self._act, "mlp_act", routed)
            + self._elementwise(self._rope, "attn_rope", t)
        )
        return {
            "gemm": attn_gemm + mlp_gemm,
            "elementwise": ew,
            "all_reduce": 2.0 * self.allreduce(t * self._act_bytes_per_token),
        }

    def breakdown(self, batch: BatchShape) -> dict[str, float]:
        """Seconds of one iteration by component; :meth:`iteration_time` is their sum."""
        tokens, seqs = batch.num_tokens, batch.num_seqs
        if tokens < 0 or seqs < 0 or batch.decode_context_sum < 0:
            raise ConfigError(f"batch shape has negative sizes: {batch}")
        if tokens == 0:
            return dict.fromkeys(
                (
                    "gemm",
                    "elementwise",
                    "all_reduce",
                    "attention",
                    "emb",
                    "lm_head",
                    "pp_transfer",
                    "overhead",
                ),
                0.0,
            )
        L, g = float(self._layers), self._g
        layer = self.layer_breakdown(tokens)
        attn = 0.0
        for new, ctx in zip(batch.prefill_tokens, batch.prefill_context, strict=True):
            attn += self._prefill_attn(new, ctx)
        if batch.num_decode:
            attn += self._decode_attn(batch.num_decode, batch.decode_context_sum)
        t = float(tokens)
        hn, hk = self._head_nk
        return {
            "gemm": L * layer["gemm"],
            "elementwise": L * layer["elementwise"]
            + self._elementwise(self._norm1, "input_layernorm", t),
            "all_reduce": L * layer["all_reduce"],
            "attention": L * attn,
            "emb": self._elementwise(self._emb, "emb", t),
            "lm_head": self._head_op.time(
                *gemm_work(float(seqs), hn, hk, g.dt), 0.0, float(seqs), hn * hk
            ),
            "pp_transfer": (self._pp - 1) * self.p2p(t * self._act_bytes_per_token),
            "overhead": self.params.iteration_s + self.params.per_seq_s * seqs,
        }

    def _linear(self, tokens: int) -> float:
        """Memoised token-dependent part: layers' GEMMs, element-wise ops, all-reduces,
        embedding, final norm, pipeline transfers."""
        v = self._linear_memo.get(tokens)
        if v is None:
            # breakdown()'s token-dependent terms, in its order (the same floats),
            # without the attention and LM-head terms it would also compute
            L, t = float(self._layers), float(tokens)
            layer = self.layer_breakdown(tokens)
            v = (
                L * layer["gemm"]
                + (L * layer["elementwise"] + self._elementwise(self._norm1, "input_layernorm", t))
                + L * layer["all_reduce"]
                + self._elementwise(self._emb, "emb", t)
                + (self._pp - 1) * self.p2p(t * self._act_bytes_per_token)
            )
            self._linear_memo[tokens] = v
        return v

    def _per_seq(self, seqs: int) -> float:
        """Memoised sequence-dependent part: LM head and CPU overhead."""
        v = self._head_memo.get(seqs)
        if v is None:
            hn, hk = self._head_nk
            v = self._head_op.time(
                *gemm_work(float(seqs), hn, hk, self._g.dt), 0.0, float(seqs), hn * hk
            )
            v += self.params.iteration_s + self.params.per_seq_s * seqs
            self._head_memo[seqs] = v
        return v

    def iteration_time(self, batch: BatchShape) -> float:
        tokens = batch.num_tokens
        if tokens <= 0:
            if tokens < 0:
                raise ConfigError(f"batch shape has negative sizes: {batch}")
            return 0.0
        t = self._linear(tokens) + self._per_seq(batch.num_seqs)
        attn = 0.0
        if batch.prefill_tokens:
            for new, ctx in zip(batch.prefill_tokens, batch.prefill_context, strict=True):
                attn += self._prefill_attn(new, ctx)
        if batch.num_decode:
            attn += self._decode_attn(batch.num_decode, batch.decode_context_sum)
        return t + self._layers * attn

    def decode_time(self, num_decode: int, context_sum: float) -> float:
        if num_decode <= 0:
            return 0.0
        base = self._linear(num_decode) + self._per_seq(num_decode)
        return base + self._layers * self._decode_attn(num_decode, float(context_sum))

    def decode_times(self, num_decode: int, context_sums: np.ndarray) -> np.ndarray:
        cs = np.asarray(context_sums, dtype=np.float64)
        if num_decode <= 0:
            return np.zeros_like(cs)
        if cs.size <= 16:
            # short spans: a scalar loop beats the fixed cost of the vectorised path's
            # numpy calls, and equals iteration_time exactly
            return np.array([self.decode_time(num_decode, c) for c in cs.tolist()])
        base = self._linear(num_decode) + self._per_seq(num_decode)
        dec = self._decode
        kv = self._decode_bytes_per_ctx * cs
        attn = dec.times(np.zeros_like(cs), kv, float(num_decode))
        if dec.surface is not None:
            sf = dec.surface
            z = kv / num_decode
            ok = z > 0
            t = sf.times_on_row(self._decode_row(num_decode), np.where(ok, z, 1.0))
            t = np.where(z < sf.min_width, np.minimum(t, attn), t)
            t = np.where(z > sf.max_width, np.maximum(t, attn), t)
            attn = np.where(ok, t, attn)
        return base + self._layers * attn

    def _decode_row(self, n: int) -> tuple[float, ...]:
        """Memoised decode-surface row for batch ``n``."""
        row = self._decode_rows.get(n)
        if row is None:
            assert self._decode.surface is not None
            row = self._decode_rows[n] = self._decode.surface.row(float(n))
        return row

    def _decode_attn(self, n: int, context_sum: float) -> float:
        """One layer's decode attention for ``n`` sequences with ``context_sum`` context."""
        dec, sf = self._decode, self._decode.surface
        kv = self._decode_bytes_per_ctx * context_sum
        if sf is None or kv <= 0.0:
            return dec.time(0.0, kv, n)
        z = kv / n
        t = sf.time_on_row(self._decode_row(n), z)
        if z < sf.min_width:
            t = min(t, dec.efficiency.time(dec.roofline(0.0, kv, n)))
        elif z > sf.max_width:
            t = max(t, dec.efficiency.time(dec.roofline(0.0, kv, n)))
        return t

    def _prefill_attn(self, new: int, ctx: int) -> float:
        """One layer's prefill attention for ``new`` tokens after ``ctx`` cached ones
        (memoised: prompt lengths and cached prefixes repeat across calls)."""
        memo = self._prefill_memo
        v = memo.get((new, ctx))
        if v is None:
            if len(memo) >= PREFILL_MEMO_MAX:
                memo.clear()
            v = memo[new, ctx] = self._prefill_attn_uncached(new, ctx)
        return v

    def _prefill_attn_uncached(self, new: int, ctx: int) -> float:
        pre, sf = self._prefill, self._prefill.surface
        f, b = self._g.prefill_work(new, ctx)
        if sf is None or new <= 0:
            return pre.time(f, b)
        row = self._prefill_rows.get(new)
        if row is None:
            row = self._prefill_rows[new] = sf.row(float(new))
        z = f / new
        t = sf.time_on_row(row, z)
        if z < sf.min_width:
            t = min(t, pre.efficiency.time(pre.roofline(f, b)))
        elif z > sf.max_width:
            t = max(t, pre.efficiency.time(pre.roofline(f, b)))
        return t


# --- the cost model ------------------------------------------------------------------


@dataclass
class FittedCostModel:
    """A cost model loaded from a fitted TOML (see :mod:`sim.calibration.fit`).

    Attributes:
        name: the model's name (the TOML's ``name``).
        gpus: fitted parameters per GPU name.
        meta: the TOML's provenance tables (records, options, validation).
        path: where it was loaded from.
    """

    name: str
    gpus: dict[str, GPUParams]
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    # Iteration models are pure functions of the hardware with memo tables: replicas
    # on identical hardware share one, so they share its memoised components too.
    _models: dict[ReplicaHardware, FittedIterationModel] = field(
        default_factory=dict, repr=False, compare=False
    )

    def params_for(self, gpu: GPUSpec) -> GPUParams:
        """The GPU's fitted parameters, or those of the closest fitted GPU scaled by
        datasheet ratios (peak FLOP/s for compute curves, HBM bandwidth for memory)."""
        if gpu.name in self.gpus:
            return self.gpus[gpu.name]
        # a CPU fit (the harness's nominal "cpu" device) says nothing about a GPU's
        # kernels: it is never scaled to one by datasheet ratios
        known = [n for n in sorted(self.gpus) if n in GPUS and GPUS[n].form_factor != "cpu"]
        if not known:
            raise ConfigError(self._no_parameters(gpu.name))
        base_name = min(known, key=lambda n: abs(math.log(GPUS[n].peak_flops / gpu.peak_flops)))
        base = GPUS[base_name]
        return self.gpus[base_name].scaled(
            gpu.peak_flops / base.peak_flops,
            gpu.hbm_bandwidth / base.hbm_bandwidth,
            origin=f"scaled from {base_name} by datasheet peak FLOP/s and HBM bandwidth",
        )

    def _no_parameters(self, gpu: str) -> str:
        """Why this model cannot price ``gpu``, what it was fitted for, and what to do."""
        fitted = ", ".join(sorted(self.gpus)) or "no device"
        files = ", ".join(str(f.get("file")) for f in self.meta.get("fitted_from", []))
        where = f" ({self.path})" if self.path else ""
        src = f", fitted from {files}" if files else ""
        msg = (
            f"cost model {self.name!r}{where} has parameters only for {fitted}{src}, "
            f"not for GPU {gpu!r}"
        )
        gpus = [n for n in sorted(self.gpus) if n != "cpu"]
        if "cpu" in self.gpus and not gpus:
            return (
                msg + ", and a CPU fit is not scaled to a GPU: it prices the calibration "
                "harness's 'cpu' device, for `agentsim calibrate validate --costmodel FILE "
                "RECORDS` and `agentsim calibrate compare-e2e`; to simulate GPUs, fit records "
                "measured on a GPU (see 'Using a fitted cost model' in calibration/README.md)"
            )
        if gpus:
            return (
                msg + f" ({', '.join(gpus)}: not in agentsim's GPU list, so none to scale "
                "from); fit records of a listed GPU (`agentsim run --gpu` names them)"
            )
        return msg + " and none to scale from"

    def for_replica(self, hw: ReplicaHardware) -> IterationModel:
        model = self._models.get(hw)
        if model is None:
            model = self._models[hw] = FittedIterationModel(hw, self.params_for(hw.gpu))
        return model

    def describe(self) -> dict[str, Any]:
        fitted = self.meta.get("fitted_from", [])
        return {
            "name": self.name,
            "kind": "fitted roofline (efficiency curves)",
            "source": (
                f"{self.path or self.name}: fitted from "
                + ", ".join(f"{f['file']} (sha256 {f['sha256'][:12]})" for f in fitted)
            ),
            "gpus": sorted(self.gpus),
            "validation": self.meta.get("validation"),
        }


#: Largest number a fitted parameter may hold (FLOP/s and bytes stay far below), and
#: the longest time (s) any fitted kernel, iteration or transfer term may take.
_MAX_PARAM = 1e30
_MAX_PARAM_S = 3600.0


def _param_line(text: str, where: list[str]) -> int | None:
    """Line of ``where[-1] = ...`` in the table ``[where[:-1]]`` of ``text`` (the
    table's header line if the key is not found; None if neither is)."""
    header = "[" + ".".join(where[:-1]) + "]"
    lines = text.splitlines()
    start = next((i for i, s in enumerate(lines) if s.strip() == header), None)
    if start is None:
        return None
    for i in range(start + 1, len(lines)):
        s = lines[i].strip()
        if s.startswith("["):
            break
        if s.split("=", 1)[0].strip() == where[-1]:
            return i + 1
    return start + 1


def _check_params(path: str, text: str, node: Any, where: list[str]) -> None:
    """Every number under ``[gpu]`` is finite, >= 0 and not enormous (times at most an
    hour); raise naming its dotted field and line."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_params(path, text, v, [*where, str(k)])
        return
    if isinstance(node, list):
        for v in node:
            _check_params(path, text, v, where)
        return
    if isinstance(node, bool | str):
        return
    if isinstance(node, int | float):
        key = where[-1]
        top = _MAX_PARAM_S if key.endswith("_s") or key == "seconds" else _MAX_PARAM
        if not (math.isfinite(node) and 0 <= node <= top):
            raise InputError(
                path,
                _param_line(text, where),
                ".".join(where),
                f"expected a finite number in [0, {top:g}], got {node!r}",
            )


def parse_costmodel(text: str, path: str = "<string>") -> FittedCostModel:
    """Parse a fitted cost model TOML; a malformed one raises :class:`InputError`
    naming the file, the line where known and the dotted field."""
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        raise InputError(
            path, int(m.group(1)) if m else None, None, f"not valid TOML: {e}"
        ) from None
    if d.get("format") != FORMAT or d.get("version") != VERSION:
        raise InputError(path, None, "format", f"expected format {FORMAT!r} version {VERSION}")
    gtab = d.get("gpu", {})
    if not isinstance(gtab, dict) or not all(isinstance(t, dict) for t in gtab.values()):
        raise InputError(path, _param_line(text, ["gpu", ""]), "gpu", "expected [gpu.NAME] tables")
    for name, t in gtab.items():
        for k, v in t.items():
            where = ["gpu", name, k]
            if k in ("iteration_s", "per_seq_s") and (
                isinstance(v, bool) or not isinstance(v, int | float)
            ):
                raise InputError(
                    path, _param_line(text, where), ".".join(where), f"expected a number, got {v!r}"
                )
    _check_params(path, text, gtab, ["gpu"])
    gpus = {}
    for name, t in gtab.items():
        try:
            gpus[name] = GPUParams.from_table(t)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                path,
                _param_line(text, ["gpu", name, ""]),
                f"gpu.{name}",
                f"malformed fitted parameters: {e!r}",
            ) from None
    meta = {k: v for k, v in d.items() if k != "gpu"}
    return FittedCostModel(
        name=str(d.get("name", Path(path).stem)), gpus=gpus, meta=meta, path=path
    )


def load_costmodel(path: str | Path) -> FittedCostModel:
    """Load a fitted cost model TOML file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(str(p), None, None, f"cannot read cost model: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            str(p), line, "encoding", f"not UTF-8 text (byte {e.start}: {e.reason})"
        ) from None
    return parse_costmodel(text, str(p))


DEFAULT_NAME = "vidur-a100"


def default_costmodel_path() -> Path:
    """The committed default cost model, shipped as package data (``sim/data/costmodels``)."""
    return Path(__file__).resolve().parent.parent / "data" / "costmodels" / f"{DEFAULT_NAME}.toml"


@cache
def default_fitted_costmodel() -> FittedCostModel:
    """The default fitted cost model, loaded once."""
    return load_costmodel(default_costmodel_path())
