"""The keynote experiments: hand-checked helpers, the output files, and the notebook
executing headless on the reduced workload (every number computed in it)."""

from __future__ import annotations

from pathlib import Path

import keynote
import pandas as pd
import pytest

from sim.cluster.config import validate
from sim.workload.calls import Workload
from tests.helpers import chain_hashes, cluster, llm

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "keynote.ipynb"


def test_ideal_hits_are_the_prefix_an_earlier_call_of_the_session_computed() -> None:
    h = chain_hashes(0, 320)  # 20 blocks of 16 tokens
    other = chain_hashes(1, 320, salt=1)
    wl = Workload(
        [
            llm("a", "s", 160, 5, hashes=h[:10]),
            llm("b", "s", 320, 5, parents=("a",), hashes=h),  # 10 blocks seen before
            llm("c", "t", 320, 5, hashes=h),  # another session: nothing of its own seen
            llm("d", "s", 100, 5, parents=("b",), hashes=h[:6]),  # capped at input - 1
            llm("e", "s", 320, 5, parents=("d",), hashes=other),
        ],
        name="t",
    )
    assert keynote.ideal_hit_tokens(wl) == {"a": 0, "b": 160, "c": 0, "d": 96, "e": 0}


def test_prefill_price_scales_with_gpus_and_price() -> None:
    one = keynote.prefill_usd_per_token(cluster(model="llama-2-7b", tp=1), 0)
    assert one > 0
    two = keynote.prefill_usd_per_token(validate(cluster(model="llama-2-7b", tp=2)), 0)
    assert one < two < 2 * one  # two GPUs each doing half the work, plus the all-reduce


def test_write_answers_writes_tables_figures_and_headlines(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plot():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        return fig

    ans = keynote.Answer(
        "q9_demo", "9. A demo", "x saves 3 ± 1", pd.DataFrame({"a": [1.0]}), {"k": "v"}, [0, 1],
        plot, {"per_size": pd.DataFrame({"b": [2]})},
    )  # fmt: skip
    out = keynote.write_answers([ans], tmp_path / "k", keynote.CI)
    assert (out / "q9_demo.csv").read_text().startswith("a\n")
    assert (out / "q9_demo_per_size.csv").exists()
    assert (out / "q9_demo.png").stat().st_size > 0
    md = (out / "keynote.md").read_text()
    assert "seeds: 0, 1" in md and "1. x saves 3 ± 1" in md


def test_keynote_notebook_answers_the_seven_questions() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    texts = []
    images = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            texts.append(out.get("text", "") + data.get("text/markdown", ""))
    text = "\n".join(texts)
    assert "scale: ci" in text
    for q in ("1. KV-cache affinity", "2. Eviction cost", "3. Topology", "4. Cold starts",
              "5. Mesh tax", "6. Restarts", "7. Disaggregation"):  # fmt: skip
        assert q in text
    assert text.count("seeds: 0, 1 (95 % t-intervals across seeds)") == 7
    assert images >= 7
    closing = nb.cells[-1]["outputs"][0]["data"]["text/markdown"]
    assert [line.split(".")[0] for line in closing.splitlines()] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
    ]
