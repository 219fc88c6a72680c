"""Self-contained HTML reports: the markdown report plus plots embedded as base64 PNG.

The HTML is rendered from the same markdown as ``report.md`` (one source of truth)
by a converter for the subset our reports use: ``#``/``##`` headings, ``- `` lists,
pipe tables, ``> `` warnings (a highlighted box), paragraphs and inline ``code``.  Figures are inserted at the end of the
section they illustrate.  No external files, scripts or fonts: one file to mail.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sim.simulation import SimResult

Figures = Mapping[str, Sequence[tuple[str, bytes]]]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}
.warning{background:#fff3cd;border-left:5px solid #d39e00;margin:1em 0;padding:.6em 1em}
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def markdown_to_html(md: str, figures: Figures | None = None) -> str:
    """Convert report markdown to an HTML fragment; ``figures`` maps an ``##`` heading
    to ``(caption, png)`` pairs placed at the end of that section."""
    figures = figures or {}
    out: list[str] = []
    lines = md.splitlines()
    section: str | None = None
    para: list[str] = []
    i = 0

    def flush_para() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    def close_section() -> None:
        flush_para()
        if section is not None:
            out.extend(figure_html(c, p) for c, p in figures.get(section, ()))

    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            close_section()
            section = line[3:].strip()
            out.append(f"<h2>{_inline(section)}</h2>")
        elif line.startswith("# "):
            flush_para()
            out.append(f"<h1>{_inline(line[2:].strip())}</h1>")
        elif line.startswith("- "):
            flush_para()
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.startswith(">"):
            flush_para()
            quote = []
            while i < len(lines) and lines[i].startswith(">"):
                quote.append(lines[i][1:].strip())
                i += 1
            out.append('<div class="warning">' + _inline(" ".join(quote)) + "</div>")
            continue
        elif line.startswith("|"):
            flush_para()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            body = [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            trs = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            continue
        elif not line.strip():
            flush_para()
        else:
            para.append(line.strip())
        i += 1
    close_section()
    return "\n".join(out)


def figure_html(caption: str, png: bytes) -> str:
    """An ``<figure>`` with the PNG inlined as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    cap = html.escape(caption)
    return (
        f'<figure><img alt="{cap}" src="data:image/png;base64,{data}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body``."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def report_figures(
    result: SimResult, summary: Mapping[str, Any]
) -> dict[str, list[tuple[str, bytes]]]:
    """The plots of one run as PNG bytes, keyed by the report section they belong to."""
    from sim.report import plots
    from sim.specs.hardware import get_gpu

    makespan = float(summary["makespan_s"])
    tl = result.timeline
    price = get_gpu(result.config["cluster"]["gpu"]).price_per_hour
    figs: dict[str, list[tuple[str, bytes]]] = {
        "Configuration": [
            (
                "Cluster topology",
                plots.png_bytes(plots.topology_figure(result.config, result.replicas)),
            )
        ],
        "Latency": [
            (
                "Latency CDFs",
                plots.png_bytes(plots.latency_cdfs({"": (result.calls, result.sessions)})),
            )
        ],
        "Cost": [
            (
                "GPU-hours per replica",
                plots.png_bytes(plots.cost_figure(summary, result.replicas, price)),
            )
        ],
    }
    if not tl.empty:
        figs["KV cache"] = [
            ("KV occupancy", plots.png_bytes(plots.kv_figure(tl, result.replicas, makespan)))
        ]
        figs["Replicas"] = [
            ("Utilisation heatmap", plots.png_bytes(plots.heatmap_figure(tl, makespan))),
            ("Queue length timelines", plots.png_bytes(plots.timeline_figure(tl, makespan))),
        ]
    return figs


def render_report_html(md: str, result: SimResult, summary: Mapping[str, Any]) -> str:
    """``report.html``: the markdown report with the run's plots embedded."""
    title = md.splitlines()[0].lstrip("# ").strip() if md else "agentsim run"
    return page(title, markdown_to_html(md, report_figures(result, summary)))
