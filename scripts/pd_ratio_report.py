"""Table and figure of the P:D ratio sweep (examples/sweeps/pd_ratio.toml).

Usage: python scripts/pd_ratio_report.py [SWEEP_DIR]  (default results/sweeps/pd-ratio)
Writes docs/pd_ratio.md (the table) and docs/figures/pd_ratio.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RATIOS = ["colocated", "pd-1-3", "pd-1-1", "pd-3-1"]
METRICS = [
    ("goodput_calls_per_s", "goodput (calls/s)"),
    ("ttft_s.p90", "TTFT p90 (s)"),
    ("tpot_s.p90", "TPOT p90 (s)"),
    ("usd_per_m_tokens", "$ / M tokens"),
]


def load(sweep: Path) -> pd.DataFrame:
    t = pd.read_parquet(sweep / "sweep.parquet")
    t["trace"] = t["trace"].str.extract(r"([a-z_]+)\.jsonl")[0].str.replace("_trace", "")
    t["ratio"] = t["cluster"].str.extract(r"pd/(.+)\.toml")[0]
    return t


def table(t: pd.DataFrame) -> str:
    rows = [
        "| trace | load | router | P:D | goodput calls/s | TTFT p90 s | TPOT p90 s | $/M tokens | overloaded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    t = t.assign(order=t["ratio"].map(RATIOS.index))
    for r in t.sort_values(["trace", "load_scale", "policy", "order"]).itertuples():
        d = r._asdict()
        rows.append(
            f"| {r.trace} | {r.load_scale:g} | {r.policy} | {r.ratio} | "
            f"{d['goodput_calls_per_s']:.3f} | {t.loc[r.Index, 'ttft_s.p90']:.3g} | "
            f"{t.loc[r.Index, 'tpot_s.p90']:.3g} | {d['usd_per_m_tokens']:.3g} | "
            f"{'yes' if d['overloaded'] else ''} |"
        )
    return "\n".join(rows) + "\n"


def figure(t: pd.DataFrame, out: Path) -> None:
    panels = [("conversation", 0.25), ("miniswe", 1.0), ("magagent", 1.0)]
    fig, axes = plt.subplots(len(panels), len(METRICS), figsize=(15, 9))
    for i, (trace, load) in enumerate(panels):
        sub = t[(t["trace"] == trace) & (t["load_scale"] == load)]
        for j, (col, label) in enumerate(METRICS):
            ax = axes[i][j]
            for k, pol in enumerate(sorted(sub["policy"].unique())):
                s = sub[sub["policy"] == pol].set_index("ratio").reindex(RATIOS)
                x = [n + (k - 0.5) * 0.38 for n in range(len(RATIOS))]
                ax.bar(x, s[col], width=0.38, label=pol)
            ax.set_xticks(range(len(RATIOS)), RATIOS, fontsize=8)
            if col == "ttft_s.p90":
                ax.set_yscale("log")
            ax.set_title(f"{trace} x{load:g}: {label}", fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("P:D ratio at 32 A100 GPUs (Llama-3.1-70B TP4 x 8): examples/sweeps/pd_ratio.toml")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    sweep = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results/sweeps/pd-ratio"
    t = load(sweep)
    figure(t, ROOT / "docs/figures/pd_ratio.png")
    md = ROOT / "docs/pd_ratio.md"
    head = md.read_text().split("<!-- table -->")[0] if md.exists() else ""
    md.write_text(head + "<!-- table -->\n\n" + table(t))


if __name__ == "__main__":
    main()
