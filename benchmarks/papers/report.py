"""What every paper reproduction writes: ``results/papers/NAME.md``.

A reproduction module ``benchmarks/papers/NAME.py`` builds the paper's main experiment on
agentsim, runs it and returns a :class:`PaperResult`; :func:`main` gives it the common
command line (``--fast`` for the CI-sized version, ``--out``, ``--seed``) and writes the
markdown atomically.  A reproduction starts like this, so that it runs both as
``python benchmarks/papers/NAME.py`` and as ``papers.NAME`` under pytest::

    import sys
    from pathlib import Path

    if __package__ in (None, ""):  # run as a script
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from papers.report import Headline, PaperResult, main  # noqa: E402

and ends with ``if __name__ == "__main__": main(run)``.  The markdown has the setup table, the side-by-side table (the paper's
numbers next to agentsim's on the same axes), the headline ratio both report, and notes on
what matches and what does not.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sim.common.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "results" / "papers"


@dataclass(frozen=True)
class Headline:
    """The ratio a paper headlines and the one agentsim gets on the same setup.

    ``metric`` says what the ratio is (e.g. "JCT speedup of Continuum over vLLM, x");
    ``paper`` is the published value or range as written (e.g. "1.1x-3.7x"); ``agentsim``
    is the simulated ratio.  ``same_direction`` is whether agentsim's effect goes the way
    the paper's does (``better_if`` says which side of 1.0 the paper's effect lies on).
    """

    metric: str
    paper: str
    agentsim: float
    better_if: str = ">1"

    @property
    def same_direction(self) -> bool:
        if not math.isfinite(self.agentsim):
            return False
        return self.agentsim > 1.0 if self.better_if == ">1" else self.agentsim < 1.0


@dataclass
class PaperResult:
    """One reproduction's outcome.

    ``rows`` is the side-by-side table: each row a dict with the same keys (e.g.
    ``{"system": "vLLM", "load": "1 rps", "paper JCT (s)": 120, "agentsim JCT (s)": 131.2}``);
    a value of None prints as "-".  ``setup`` maps a setup item to its value (model, GPU,
    engine limits, workload, baseline, metric, and what was assumed).
    """

    name: str
    title: str
    citation: str
    setup: dict[str, str]
    rows: list[dict[str, object]]
    headlines: list[Headline]
    notes: str = ""
    figure: str | None = None  # a file name next to the markdown, if the module saved one
    extra: dict[str, str] = field(default_factory=dict)

    def markdown(self, fast: bool, seconds: float) -> str:
        out = [f"# {self.title}", "", f"Paper: {self.citation}", ""]
        scale = "fast (CI scale, one seed)" if fast else "full"
        out += [f"Scale: {scale}. Simulated in {seconds:.1f} s.", ""]
        out += ["## Setup", "", "| item | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in self.setup.items()]
        out += ["", "## Paper vs agentsim", ""]
        out += _table(self.rows)
        out += ["", "## Headline", "", "| metric | paper | agentsim | same direction |"]
        out += ["|---|---|---|---|"]
        for h in self.headlines:
            yes = "yes" if h.same_direction else "**no**"
            out.append(f"| {h.metric} | {h.paper} | {h.agentsim:.2f}x | {yes} |")
        if self.figure:
            out += ["", f"![{self.name}]({self.figure})"]
        for heading, text in self.extra.items():
            out += ["", f"## {heading}", "", text.strip()]
        if self.notes:
            out += ["", "## What matches and what does not", "", self.notes.strip()]
        return "\n".join(out) + "\n"


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _table(rows: Sequence[dict[str, object]]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return lines


Run = Callable[[bool, int, Path], PaperResult]


def main(run: Run, argv: Sequence[str] | None = None) -> PaperResult:
    """Command line of a reproduction: ``python benchmarks/papers/NAME.py [--fast]``.

    ``run(fast, seed, out_dir)`` builds and runs the experiment (it may save a figure into
    ``out_dir``); the markdown goes to ``out_dir/NAME.md``.
    """
    p = argparse.ArgumentParser(description=(run.__doc__ or "").strip().split("\n")[0])
    p.add_argument("--fast", action="store_true", help="CI-sized version: small scale, one seed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for NAME.md")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run(args.fast, args.seed, args.out)
    seconds = time.perf_counter() - t0
    path = args.out / f"{result.name}.md"
    atomic_write_text(path, result.markdown(args.fast, seconds))
    for h in result.headlines:
        verdict = "same direction" if h.same_direction else "OPPOSITE direction"
        print(f"{result.name}: {h.metric}: paper {h.paper}, agentsim {h.agentsim:.2f}x ({verdict})")
    print(f"wrote {path}", file=sys.stderr)
    return result
