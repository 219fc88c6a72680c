"""The measured serving-runs CSV: one row per run and load stage (``stage`` = 0, 1, ...
or ``all`` for the whole run).

Columns (see ``../shared/data/vllm-serving-measurements/README.md`` for the set this
format was made for): the server (``model``, ``gpu``, ``precision``, ``tp``,
``max_num_batched_tokens``, ``max_num_seqs``, ``gpu_kv_blocks``, ``cpu_kv_offload``,
``gpu_memory_utilization``), the workload (``workload``, ``stage``, ``rate_rps``,
``duration_s``, ``stages`` as ``RATExSECONDS;...``, ``prefix_groups``,
``users_per_group``, ``system_prompt_tokens``, ``question_tokens``, ``output_tokens``)
and the measured client-side latencies in milliseconds (``ttft_mean_ms``,
``ttft_p90_ms``, ``ttft_p99_ms``, ``e2e_mean_ms``, ``e2e_p90_ms``, ``e2e_p99_ms``,
``itl_mean_ms``).  Every bad value raises :class:`~sim.common.errors.InputError` naming
``file:line: field``.  Units: seconds in the parsed objects (the file is in ms).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from sim.common.errors import InputError

#: GPU names used in measured-run files -> agentsim GPU presets.
GPU_ALIASES = {
    "h100": "h100-80gb",
    "h100-sxm": "h100-80gb",
    "h100-80gb": "h100-80gb",
    "a100-80gb": "a100-80gb",
    "a100": "a100-80gb",
    "a100-40gb": "a100-40gb",
    "l40s": "l40s-48gb",
    "l40s-48gb": "l40s-48gb",
    "h200": "h200-141gb",
    "h200-141gb": "h200-141gb",
    "b200": "b200-180gb",
    "b200-180gb": "b200-180gb",
}

#: Measured metric columns (milliseconds in the file) -> metric keys (seconds here).
METRIC_COLUMNS = {
    "ttft_mean_ms": "ttft_mean",
    "ttft_p90_ms": "ttft_p90",
    "ttft_p99_ms": "ttft_p99",
    "e2e_mean_ms": "e2e_mean",
    "e2e_p90_ms": "e2e_p90",
    "e2e_p99_ms": "e2e_p99",
    "itl_mean_ms": "itl_mean",
}

REQUIRED = (
    "run_id",
    "model",
    "gpu",
    "tp",
    "max_num_batched_tokens",
    "stage",
    "stages",
    "prefix_groups",
    "users_per_group",
    "system_prompt_tokens",
    "question_tokens",
    "output_tokens",
    *METRIC_COLUMNS,
)

#: Per-run columns that must agree on every row of a run.
RUN_FIELDS = (
    "model",
    "gpu",
    "precision",
    "tp",
    "max_num_batched_tokens",
    "max_num_seqs",
    "gpu_kv_blocks",
    "cpu_kv_offload",
    "gpu_memory_utilization",
    "workload",
    "stages",
    "prefix_groups",
    "users_per_group",
    "system_prompt_tokens",
    "question_tokens",
    "output_tokens",
)


@dataclass(frozen=True, slots=True)
class Stage:
    """One load stage: Poisson arrivals at ``rate_rps`` for ``duration_s`` seconds."""

    rate_rps: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Measured:
    """Measured client-side latencies of one stage (or ``all``), seconds.

    Attributes:
        stage: the stage index, or None for the whole run (``all``).
        line: the CSV line it came from.
        metrics: ``ttft_mean``, ``ttft_p90``, ``ttft_p99``, ``e2e_mean``, ``e2e_p90``,
            ``e2e_p99``, ``itl_mean`` in seconds.
    """

    stage: int | None
    line: int
    metrics: dict[str, float]

    @property
    def label(self) -> str:
        return "all" if self.stage is None else str(self.stage)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One measured serving run: the server, its workload and the measured stages.

    Attributes:
        run_id: the run's id in the file.
        model: the served model as named in the file (an HF name or a preset).
        gpu: the agentsim GPU preset (from :data:`GPU_ALIASES`).
        precision: ``FP16`` / ``BF16`` / ``FP8`` (weights).
        tp: tensor-parallel degree.
        max_num_batched_tokens, max_num_seqs: vLLM scheduler limits.
        gpu_kv_blocks: KV blocks the server reported (None: derive from memory).
        cpu_kv_offload: a CPU KV tier was on (None: not recorded).
        gpu_memory_utilization: vLLM's memory fraction (None: not recorded).
        workload: the load generator's workload name.
        stages: the load stages, run back to back.
        prefix_groups, users_per_group, system_prompt_tokens, question_tokens,
        output_tokens: the inference-perf ``shared_prefix`` shape.
        measured: the measured stage rows (and the ``all`` row), in file order.
        path, line: where the run's first row is.
    """

    run_id: str
    model: str
    gpu: str
    precision: str
    tp: int
    max_num_batched_tokens: int
    max_num_seqs: int
    gpu_kv_blocks: int | None
    cpu_kv_offload: bool | None
    gpu_memory_utilization: float | None
    workload: str
    stages: tuple[Stage, ...]
    prefix_groups: int
    users_per_group: int
    system_prompt_tokens: int
    question_tokens: int
    output_tokens: int
    measured: tuple[Measured, ...] = field(default=())
    path: str = ""
    line: int = 0

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)

    @property
    def label(self) -> str:
        short = self.model.rsplit("/", 1)[-1]
        return f"{self.run_id} {short} {self.gpu} tp{self.tp} {self.workload}"


def _int(path: str, line: int, name: str, raw: str, lo: int = 0) -> int:
    try:
        v = int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            raise InputError(path, line, name, f"expected an integer, got {raw!r}") from None
        if not f.is_integer():
            raise InputError(path, line, name, f"expected an integer, got {raw!r}") from None
        v = int(f)
    if v < lo:
        raise InputError(path, line, name, f"must be >= {lo}, got {v}")
    return v


def _float(path: str, line: int, name: str, raw: str, positive: bool = True) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise InputError(path, line, name, f"expected a number, got {raw!r}") from None
    if not math.isfinite(v) or (positive and v <= 0) or v < 0:
        raise InputError(
            path,
            line,
            name,
            f"expected a {'positive' if positive else 'non-negative'} number, got {raw!r}",
        )
    return v


def _bool(path: str, line: int, name: str, raw: str) -> bool | None:
    low = raw.strip().lower()
    if low in ("", "?", "none", "na"):
        return None
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise InputError(path, line, name, f"expected True, False or empty, got {raw!r}")


def parse_stages(path: str, line: int, raw: str) -> tuple[Stage, ...]:
    """``8x600;20x600`` -> stages (rate 8 rps for 600 s, then 20 rps for 600 s)."""
    out = []
    for part in raw.split(";"):
        part = part.strip()
        rate, sep, dur = part.partition("x")
        if not sep:
            raise InputError(path, line, "stages", f"expected RATExSECONDS;..., got {raw!r}")
        out.append(
            Stage(
                _float(path, line, "stages", rate.strip()),
                _float(path, line, "stages", dur.strip()),
            )
        )
    if not out:
        raise InputError(path, line, "stages", "no stages")
    return tuple(out)


def _gpu(path: str, line: int, raw: str) -> str:
    key = raw.strip().lower()
    if key not in GPU_ALIASES:
        raise InputError(
            path, line, "gpu", f"unknown GPU {raw!r}; known: {', '.join(sorted(GPU_ALIASES))}"
        )
    return GPU_ALIASES[key]


# long: one validation per CSV column, each naming file:line:column on failure
def read_runs(path: str | Path) -> list[RunSpec]:
    """Read a measured-runs CSV into one :class:`RunSpec` per ``run_id`` (file order)."""
    p = str(path)
    try:
        text = Path(p).read_text()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InputError(p, None, None, f"cannot read runs file: {why or e}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(p, 1, missing[0], "missing column (required: " + ", ".join(REQUIRED) + ")")
    first: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    rows: dict[str, list[Measured]] = {}
    order: list[str] = []
    for row in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in row.values()):
            continue
        rid = (row.get("run_id") or "").strip()
        if not rid:
            raise InputError(p, line, "run_id", "empty")
        if rid not in first:
            first[rid] = row
            first_line[rid] = line
            rows[rid] = []
            order.append(rid)
        else:
            for f in RUN_FIELDS:
                if f in row and (row.get(f) or "").strip() != (first[rid].get(f) or "").strip():
                    raise InputError(
                        p,
                        line,
                        f,
                        f"{row.get(f)!r} differs from {first[rid].get(f)!r} on line "
                        f"{first_line[rid]} of the same run {rid}",
                    )
        stage_raw = (row.get("stage") or "").strip().lower()
        stages = parse_stages(p, line, row["stages"])
        if stage_raw == "all":
            stage: int | None = None
        else:
            stage = _int(p, line, "stage", stage_raw)
            if stage >= len(stages):
                raise InputError(
                    p, line, "stage", f"stage {stage} but 'stages' lists {len(stages)}"
                )
            rate_raw = (row.get("rate_rps") or "").strip()
            if rate_raw:
                rate = _float(p, line, "rate_rps", rate_raw)
                if abs(rate - stages[stage].rate_rps) > 1e-9 * max(1.0, rate):
                    raise InputError(
                        p,
                        line,
                        "rate_rps",
                        f"{rate} differs from stage {stage} of 'stages' ({stages[stage].rate_rps})",
                    )
        metrics = {
            key: _float(p, line, col, (row.get(col) or "").strip()) / 1000.0
            for col, key in METRIC_COLUMNS.items()
        }
        if any(m.stage == stage for m in rows[rid]):
            raise InputError(p, line, "stage", f"run {rid} has stage {stage_raw!r} twice")
        rows[rid].append(Measured(stage, line, metrics))
    runs = []
    for rid in order:
        r, line = first[rid], first_line[rid]
        kv = (r.get("gpu_kv_blocks") or "").strip()
        gmu = (r.get("gpu_memory_utilization") or "").strip()
        mns = (r.get("max_num_seqs") or "").strip()
        gmu_v = _float(p, line, "gpu_memory_utilization", gmu) if gmu not in ("", "?") else None
        if gmu_v is not None and gmu_v > 1:
            raise InputError(p, line, "gpu_memory_utilization", f"must be in (0, 1], got {gmu}")
        runs.append(
            RunSpec(
                run_id=rid,
                model=r["model"].strip(),
                gpu=_gpu(p, line, r["gpu"]),
                precision=(r.get("precision") or "FP16").strip().upper() or "FP16",
                tp=_int(p, line, "tp", r["tp"], lo=1),
                max_num_batched_tokens=_int(
                    p, line, "max_num_batched_tokens", r["max_num_batched_tokens"], lo=1
                ),
                max_num_seqs=_int(p, line, "max_num_seqs", mns, lo=1) if mns else 128,
                gpu_kv_blocks=_int(p, line, "gpu_kv_blocks", kv, lo=1) if kv else None,
                cpu_kv_offload=_bool(p, line, "cpu_kv_offload", r.get("cpu_kv_offload") or ""),
                gpu_memory_utilization=gmu_v,
                workload=(r.get("workload") or "").strip(),
                stages=parse_stages(p, line, r["stages"]),
                prefix_groups=_int(p, line, "prefix_groups", r["prefix_groups"], lo=1),
                users_per_group=_int(p, line, "users_per_group", r["users_per_group"], lo=1),
                system_prompt_tokens=_int(
                    p, line, "system_prompt_tokens", r["system_prompt_tokens"]
                ),
                question_tokens=_int(p, line, "question_tokens", r["question_tokens"]),
                output_tokens=_int(p, line, "output_tokens", r["output_tokens"], lo=1),
                measured=tuple(rows[rid]),
                path=p,
                line=line,
            )
        )
    if not runs:
        raise InputError(p, None, None, "no runs in the file")
    return runs
