"""Regression gate on scheduling metrics: rerun fixed scenarios, compare with a baseline.

The baseline is a JSON file (``results/baselines/ci.json`` for agentsim's own CI)::

    {
      "agentsim_regress": 1,
      "scenarios": {
        "agentic-round_robin": {
          "config": {"trace": "../../traces/default.jsonl", "router": "round_robin",
                     "replicas": 2, "load_scale": 4.0, "seed": 0},
          "metrics": {
            "ttft_s": {"p50": {"value": 0.0193, "better": "lower",
                               "rel_tol": 0.02, "abs_tol": 0.001}},
            "prefix_hit_rate": {"value": 0.817, "better": "higher",
                                "rel_tol": 0.0, "abs_tol": 0.005}
          }
        }
      }
    }

A scenario's ``config`` takes the keys of a sweep's ``[base]`` table (the
``agentsim run`` flags plus dotted config paths, see :mod:`sim.experiments.sweep`); its paths are
relative to the baseline file.  ``metrics`` mirrors ``summary.json``: every numeric
metric with its value and tolerance.  A metric passes when
``|now - baseline| <= max(abs_tol, rel_tol * |baseline|)``; beyond that it is
*regressed* when it moved in the bad direction (``better = "lower"``: latency, cost;
``"higher"``: hit rate, throughput), *improved* when it moved in the good direction
(not a failure), and *changed* (a failure) when ``better = "equal"`` (counts that
must not move, such as the number of requests).  A metric present on one side only,
or null on one side only, fails too.  ``--update`` gives a metric the baseline does not
list yet the direction and tolerance of the metric registry
(:mod:`sim.metrics.registry`, where ``"equal"`` is direction ``none``); tolerances
already in the file are kept.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.common.errors import ConfigError
from sim.common.io import atomic_write_text
from sim.experiments.runner import RunSpec, run_experiment
from sim.experiments.sweep import expand, parse_sweep
from sim.metrics.registry import metric, numeric_metrics
from sim.report.results import write_results
from sim.simulation import SimResult

FORMAT_VERSION = 1
BETTER = ("lower", "higher", "equal")

#: The file's word for :data:`sim.metrics.registry` direction ``none``: any move beyond
#: the tolerance is a change to look at.
_FILE_DIRECTION = {"lower": "lower", "higher": "higher", "none": "equal"}

_FAST = {"nodes": 1, "model": "llama-3.1-8b", "tp": 1, "max_num_seqs": 32}
#: The scenarios a new baseline file gets: three routers on the committed agentic
#: trace (a small cluster under 4x load) and on the Mooncake sample, one on Azure.
DEFAULT_SCENARIOS: dict[str, dict[str, Any]] = {
    **{
        f"agentic-{r}": {
            "trace": "../../traces/default.jsonl",
            "router": r,
            "replicas": 2,
            "load_scale": 4.0,
            "seed": 0,
            **_FAST,
        }
        for r in ("round_robin", "least_loaded", "session_affinity")
    },
    **{
        f"mooncake-{r}": {
            "trace": "../../traces/samples/mooncake_conversation_400s.jsonl.gz",
            "router": r,
            "replicas": 4,
            "load_scale": 1.0,
            "seed": 0,
            **_FAST,
        }
        for r in ("round_robin", "least_loaded", "session_affinity")
    },
    "azure-code-least_loaded": {
        "trace": "../../traces/samples/azure_code_1000.jsonl.gz",
        "router": "least_loaded",
        "replicas": 2,
        "load_scale": 1.0,
        "seed": 0,
        **_FAST,
    },
}


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move before it counts, and which way is good."""

    better: str
    rel_tol: float
    abs_tol: float

    def allowed(self, baseline: float) -> float:
        return max(self.abs_tol, self.rel_tol * abs(baseline))

    def describe(self) -> str:
        rel = f"{self.rel_tol * 100:.3g}%"
        if self.rel_tol and self.abs_tol:
            return f"±max({rel}, {self.abs_tol:.3g})"
        return f"±{rel}" if self.rel_tol else f"±{self.abs_tol:.3g}"


@dataclass(frozen=True)
class Row:
    """One metric's comparison."""

    scenario: str
    metric: str
    baseline: float | None
    now: float | None
    verdict: str
    tolerance: Tolerance | None

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.now is None:
            return None
        return self.now - self.baseline


OK, IMPROVED, REGRESSED, CHANGED, MISSING, NEW = (
    "ok",
    "improved",
    "REGRESSED",
    "CHANGED",
    "MISSING",
    "new",
)
FAILING = (REGRESSED, CHANGED, MISSING)


def rule_for(name: str) -> Tolerance:
    """The default tolerance and direction of a dotted metric name (``ttft_s.p50``),
    from the metric registry (:mod:`sim.metrics.registry`)."""
    m = metric(name)
    return Tolerance(_FILE_DIRECTION[m.better], m.rel_tol, m.abs_tol)


def judge(baseline: float | None, now: float | None, tol: Tolerance) -> str:
    """The verdict on one metric (see the module docstring)."""
    if baseline is None or now is None:
        return OK if baseline is None and now is None else CHANGED
    delta = now - baseline
    # A hair of slack so a move of exactly the tolerance passes despite rounding.
    slack = 1e-12 * max(1.0, abs(baseline))
    if abs(delta) <= tol.allowed(baseline) + slack:
        return OK
    if tol.better == "equal":
        return CHANGED
    worse = delta > 0 if tol.better == "lower" else delta < 0
    return REGRESSED if worse else IMPROVED


def flat_expectations(metrics: dict[str, Any], where: str) -> dict[str, tuple[Any, Tolerance]]:
    """A baseline scenario's nested ``metrics`` as ``{dotted name: (value, tolerance)}``."""
    out: dict[str, tuple[Any, Tolerance]] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {prefix or 'metrics'}: expected an object")
        if "value" in node:
            name = prefix
            better = node.get("better", rule_for(name).better)
            if better not in BETTER:
                raise ConfigError(
                    f"{where}: {name}.better: expected one of {', '.join(BETTER)}, got {better!r}"
                )
            tols = {}
            for key in ("rel_tol", "abs_tol"):
                v = node.get(key, 0.0)
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise ConfigError(f"{where}: {name}.{key}: expected a number >= 0, got {v!r}")
                tols[key] = float(v)
            value = node["value"]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ConfigError(
                    f"{where}: {name}.value: expected a number or null, got {value!r}"
                )
            out[name] = (value, Tolerance(better, tols["rel_tol"], tols["abs_tol"]))
            return
        for k, v in node.items():
            walk(v, f"{prefix}.{k}" if prefix else k)

    walk(metrics, "")
    return out


def nest_expectations(flat: dict[str, tuple[Any, Tolerance]]) -> dict[str, Any]:
    """The inverse of :func:`flat_expectations` (the JSON shape of summary.json)."""
    out: dict[str, Any] = {}
    for name, (value, tol) in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = {
            "value": value,
            "better": tol.better,
            "rel_tol": tol.rel_tol,
            "abs_tol": tol.abs_tol,
        }
    return out


def compare(
    scenario: str, expected: dict[str, tuple[Any, Tolerance]], now: dict[str, float | None]
) -> list[Row]:
    """Rows for every metric of the baseline (in its order), then metrics new now."""
    rows = []
    for name, (value, tol) in expected.items():
        if name not in now:
            rows.append(Row(scenario, name, value, None, MISSING, tol))
        else:
            rows.append(Row(scenario, name, value, now[name], judge(value, now[name], tol), tol))
    for name, v in now.items():
        if name not in expected:
            rows.append(Row(scenario, name, None, v, NEW, None))
    return rows


# ---- the baseline file and running scenarios ---------------------------------------------


@dataclass
class Baseline:
    """A parsed baseline file: scenario configs and their expected metrics."""

    path: Path
    configs: dict[str, dict[str, Any]]
    expected: dict[str, dict[str, tuple[Any, Tolerance]]]


def load_baseline(path: str | Path) -> Baseline:
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: file not found (create it with: agentsim regress --baseline {p} --update)"
        ) from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: invalid JSON: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("scenarios"), dict):
        raise ConfigError(f"{p}: expected an object with a 'scenarios' object")
    if raw.get("agentsim_regress", FORMAT_VERSION) != FORMAT_VERSION:
        raise ConfigError(f"{p}: agentsim_regress: unsupported version {raw['agentsim_regress']!r}")
    configs: dict[str, dict[str, Any]] = {}
    expected: dict[str, dict[str, tuple[Any, Tolerance]]] = {}
    for name, sc in raw["scenarios"].items():
        where = f"{p}: scenarios.{name}"
        if not isinstance(sc, dict) or not isinstance(sc.get("config"), dict):
            raise ConfigError(f"{where}: expected an object with a 'config' object")
        configs[name] = sc["config"]
        expected[name] = flat_expectations(sc.get("metrics", {}), where)
    if not configs:
        raise ConfigError(f"{p}: scenarios: no scenarios")
    return Baseline(p, configs, expected)


def scenario_spec(baseline_path: Path, name: str, config: dict[str, Any]) -> RunSpec:
    """The single run a scenario config describes (paths relative to the baseline)."""
    where = f"{baseline_path}: scenarios.{name}"
    sweep = parse_sweep({"base": config}, where, base_dir=baseline_path.parent, base_name="config")
    (spec,) = expand(sweep)
    return dataclasses.replace(spec, params={"scenario": name, **spec.params})


def run_scenarios(
    baseline_path: Path, configs: dict[str, dict[str, Any]], out: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Simulate every scenario in this process; their ``summary.json`` by scenario name.

    Each scenario's results are written to ``out/<scenario>/`` (a temporary directory
    when ``out`` is None) and its summary read back, so the metrics compared are
    exactly those of ``summary.json``.
    """
    specs = [scenario_spec(baseline_path, name, cfg) for name, cfg in configs.items()]
    summaries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="agentsim-regress-") as tmp:
        root = out if out is not None else Path(tmp)

        def save(spec: RunSpec, result: SimResult, _: dict[str, Any]) -> None:
            name = spec.params["scenario"]
            d = write_results(result, root / name, html=False)
            summaries[name] = json.loads((d / "summary.json").read_text(encoding="utf-8"))

        run_experiment(specs, on_run=save)
    return summaries


# ---- checking and updating ---------------------------------------------------------------


def check(baseline: Baseline, summaries: dict[str, dict[str, Any]]) -> list[Row]:
    """Every comparison row of every scenario."""
    rows: list[Row] = []
    for name, exp in baseline.expected.items():
        rows += compare(name, exp, numeric_metrics(summaries[name]))
    return rows


def updated(
    baseline: Baseline | None, summaries: dict[str, dict[str, Any]]
) -> dict[str, dict[str, tuple[Any, Tolerance]]]:
    """New expectations: values from ``summaries``, tolerances kept where they exist."""
    out: dict[str, dict[str, tuple[Any, Tolerance]]] = {}
    for name, summary in summaries.items():
        old = baseline.expected.get(name, {}) if baseline else {}
        out[name] = {
            m: (v, old[m][1] if m in old else rule_for(m))
            for m, v in numeric_metrics(summary).items()
        }
    return out


def baseline_json(
    configs: dict[str, dict[str, Any]], expected: dict[str, dict[str, tuple[Any, Tolerance]]]
) -> dict[str, Any]:
    return {
        "agentsim_regress": FORMAT_VERSION,
        "about": "agentsim regress baseline: per scenario, its config (paths relative to this "
        "file) and every summary.json metric with its tolerance; pass when "
        "|now - value| <= max(abs_tol, rel_tol * |value|). Regenerate with "
        "`agentsim regress --baseline THIS_FILE --update`.",
        "scenarios": {
            name: {"config": configs[name], "metrics": nest_expectations(expected[name])}
            for name in configs
        },
    }


def dumps_compact(obj: Any, indent: int = 0) -> str:
    """JSON with one line per object or array that holds only scalars (one per metric)."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        if all(not isinstance(v, dict | list) for v in obj.values()):
            return json.dumps(obj)
        items = [f"{pad}{json.dumps(k)}: {dumps_compact(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        items = [f"{pad}{dumps_compact(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(obj)


def write_baseline(
    path: Path,
    configs: dict[str, dict[str, Any]],
    expected: dict[str, dict[str, tuple[Any, Tolerance]]],
) -> None:
    atomic_write_text(path, dumps_compact(baseline_json(configs, expected)) + "\n")


def update_rows(
    baseline: Baseline | None, new: dict[str, dict[str, tuple[Any, Tolerance]]]
) -> list[Row]:
    """What an update changes: metrics whose value moved, appeared or went away."""
    rows: list[Row] = []
    for name, exp in new.items():
        old = baseline.expected.get(name, {}) if baseline else {}
        for m, (v, tol) in exp.items():
            if m not in old:
                rows.append(Row(name, m, None, v, NEW, tol))
            elif old[m][0] != v:
                rows.append(Row(name, m, old[m][0], v, judge(old[m][0], v, tol), tol))
        for m, (v, tol) in old.items():
            if m not in exp:
                rows.append(Row(name, m, v, None, "removed", tol))
    return rows


# ---- printing ------------------------------------------------------------------------------


def _num(x: float | None) -> str:
    return "null" if x is None else f"{x:.6g}"


def _delta(r: Row) -> str:
    d = r.delta
    if d is None:
        return ""
    rel = f" ({d / abs(r.baseline) * 100:+.2f}%)" if r.baseline else ""
    return f"{d:+.4g}{rel}"


HEADER = ("scenario", "metric", "baseline", "now", "delta", "tolerance", "better", "verdict")


def _cells(r: Row) -> tuple[str, ...]:
    tol = r.tolerance
    return (
        r.scenario,
        r.metric,
        _num(r.baseline),
        _num(r.now),
        _delta(r),
        tol.describe() if tol else "",
        tol.better if tol else "",
        r.verdict,
    )


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table (aligned columns) of comparison rows."""
    cells = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    right = {2, 3, 4}
    lines = []
    for k, c in enumerate(cells):
        lines.append(
            "  ".join(
                (c[i].rjust(widths[i]) if i in right else c[i].ljust(widths[i]))
                for i in range(len(c))
            ).rstrip()
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: Sequence[Row]) -> str:
    """The same table in Markdown (for a CI job summary)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        lines.append("| " + " | ".join(_cells(r)) + " |")
    return "\n".join(lines) + "\n"


def verdict_counts(rows: Iterable[Row]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    return counts


def write_markdown(path: Path, rows: Sequence[Row], title: str) -> None:
    counts = ", ".join(f"{n} {v}" for v, n in sorted(verdict_counts(rows).items()))
    atomic_write_text(path, f"## {title}\n\n{counts}\n\n{format_markdown(rows)}")
