"""The notebooks execute headless (nbclient, the environment's python3 kernel) and show
the comparison table, so they cannot rot unnoticed."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            for mime in ("text/markdown", "text/html", "text/plain"):
                if mime in out.get("data", {}):
                    parts.append(out["data"][mime])
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["policy_comparison.ipynb", "custom_policy.ipynb"])
def test_notebook_executes_and_shows_comparison_table(name: str, monkeypatch) -> None:
    monkeypatch.setenv("AGENTSIM_NOTEBOOK_SEEDS", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    text = _outputs_text(nb)
    assert "| policy | rank |" in text  # the comparison table (markdown display)
    assert "round_robin" in text and "session_affinity" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 1
