"""The self-contained HTML report: one file, inline CSS, inline SVG charts, base64 images.

No scripts and no external resources. Every text taken from the store is escaped with
:func:`html.escape`; each cell's exact configuration sits in a collapsible ``<details>``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from html import escape
from itertools import groupby
from typing import TYPE_CHECKING, Any

from encshield.budgets import format_budget
from encshield.report.aggregate import (
    THREAT_MODELS,
    Column,
    ResultTable,
    backdoor_matrix,
    fooling_matrix,
    format_duration,
    short_name,
    table_matrix,
)
from encshield.report.export import slim
from encshield.report.markdown import WORST_CASE_NOTE
from encshield.report.svg import Chart, report_charts

if TYPE_CHECKING:
    from encshield.report import PerturbationImage, ReportData

__all__ = ["STYLE", "render_html"]

STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #4e79a7; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; }
table { border-collapse: collapse; margin: .8em 0 1.5em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: top; text-align: left; padding-bottom: .4em; color: #555; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: .88em; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; border: 1px solid #e1e4e8; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
.gallery figure { margin: 0; border: 1px solid #ddd; padding: .5em; text-align: center; }
.gallery img { width: 160px; height: 160px; image-rendering: pixelated;
               background: #f0f0f0; object-fit: contain; }
figure.chart { margin: 1em 0; }
figcaption { font-size: .85em; color: #555; }
details { border: 1px solid #ddd; margin: .4em 0; padding: .3em .6em; }
summary { cursor: pointer; }
.muted { color: #777; }
th.worst, td.worst { background: #f3f6fb; }
th.wc, td.wc { border-left: 3px solid #4e79a7; }
table.results td.worst { font-weight: bold; }
section.verdict { border: 2px solid #4e79a7; padding: 0 1em .5em; margin: 1.5em 0; }
section.verdict h3 { font-size: 1.05em; margin-bottom: .2em; }
li.caveat { color: #a33; }
.gallery.examples figure { font-size: .85em; }
.gallery img.pair { width: 198px; height: 96px; }
"""

_KIND_LABELS = {"universal": "RA under universal attacks (DAEs, public encoder)",
                "encoder_public": "RA under encoder attacks on the public encoder (transferred)",
                "encoder_deployed": "RA under encoder attacks on the deployed encoder (adaptive)",
                "whitebox": "RA under white-box attacks on the deployed model (adaptive)",
                "worst_case": "per-sample worst-case RA"}


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _header(data: ReportData) -> str:
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(data.cell_counts.items()))
    encoders = "<br>".join(f"<code>{_e(spec)}</code> sha256 <code>{_e(sha or 'unknown')}</code>"
                           for spec, sha in data.encoders.items())
    items = [("date", f"{data.generated} (report)"
              + (f", store created {data.created}" if data.created else "")),
             ("results store", str(data.db_path)),
             ("cells", f"{len(data.cells)} ({counts})"),
             ("total wall time", format_duration(data.total_wall_time_s))]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return (f"<header><h1>encshield bench report: {_e(data.name)}</h1>"
            f'<dl class="meta">{rows}<dt>encoders</dt><dd>{encoders}</dd></dl></header>')


def _threat_model(kind: str) -> str:
    """The threat-model group of a row kind (``other`` for kinds not listed)."""
    return next((label for label, kinds in THREAT_MODELS.items() if kind in kinds), "other")


def _classes(columns: Sequence[Column], i: int) -> list[str]:
    """CSS classes of attack column ``i``: ``worst`` for a worst-case column, plus ``wc`` for
    the first of them (a rule sets the group apart)."""
    if columns[i].kind != "worst_case":
        return []
    return ["worst", "wc"] if i == 0 or columns[i - 1].kind != "worst_case" else ["worst"]


def _wc(columns: Sequence[Column], i: int) -> str:
    """The ``class`` attribute of attack column ``i`` (empty when it has none)."""
    classes = _classes(columns, i)
    return f' class="{" ".join(classes)}"' if classes else ""


def _head_rows(table: ResultTable) -> str:
    """Three header rows over the attack columns: threat model, row kind, row name."""
    columns = table.attack_columns
    first = '<tr><th rowspan="3">defense</th><th rowspan="3">BA</th>'
    start = 0
    for model, group in groupby(columns, key=lambda c: _threat_model(c.kind)):
        span = len(list(group))
        first += f'<th colspan="{span}"{_wc(columns, start)}>{_e(model)}</th>'
        start += span
    second, start = "", 0
    for kind, group in groupby(columns, key=lambda c: c.kind):
        span = len(list(group))
        second += (f'<th colspan="{span}"{_wc(columns, start)}>'
                   f"{_e(_KIND_LABELS.get(kind, kind))}</th>")
        start += span
    third = "".join(f"<th{_wc(columns, i)}><code>{_e(c.row)}</code></th>"
                    for i, c in enumerate(columns))
    if not columns:
        return first + "</tr><tr></tr><tr></tr>"
    return f"{first}</tr><tr>{second}</tr><tr>{third}</tr>"


def _body(rows: Sequence[Sequence[str]], columns: Sequence[Column] = ()) -> str:
    """Table rows: a header cell, then numbers; the last ``len(columns)`` cells are those of the
    attack ``columns`` (worst-case ones marked, see :func:`_classes`)."""
    out = []
    for row in rows:
        skip = len(row) - len(columns)
        cells = [" ".join(["num", *(_classes(columns, i - skip) if i >= skip else [])])
                 for i in range(1, len(row))]
        out.append("<tr><th>" + _e(row[0]) + "</th>" + "".join(
            f'<td class="{c}">{_e(v)}</td>' for c, v in zip(cells, row[1:])) + "</tr>")
    return "".join(out)


def _table_section(table: ResultTable) -> str:
    _, rows = table_matrix(table)
    note = table.seeds_note
    columns = table.attack_columns
    worst = [c.row for c in columns if c.kind == "worst_case"]
    wc_note = ("" if not worst else
               f" {WORST_CASE_NOTE} ({', '.join(worst)}: see the group headers).")
    out = [f"<section><h2>{_e(short_name(table.encoder))} on {_e(table.dataset)}</h2>",
           (f'<table class="results"><caption>Accuracy (%), {_e(note)}. BA = clean accuracy; '
            f"the other columns are the robust accuracy under each attack, grouped by threat "
            f"model.{_e(wc_note)}</caption>"),
           f"<thead>{_head_rows(table)}</thead><tbody>{_body(rows, columns)}</tbody></table>"]
    fooling = fooling_matrix(table)
    if fooling is not None:
        headers, frows = fooling
        head = "".join(f"<th{_wc(columns, i)}><code>{_e(h)}</code></th>"
                       for i, h in enumerate(headers[1:]))
        out.append('<table class="fooling"><caption>Fooling rate (%): share of test images whose '
                   f"prediction the attack changed.</caption><thead><tr><th>defense</th>{head}"
                   f"</tr></thead><tbody>{_body(frows, columns)}</tbody></table>")
    asr = backdoor_matrix(table)
    if asr is not None:
        headers, arows = asr
        head = "".join(f"<th><code>{_e(h)}</code></th>" for h in headers[1:])
        out.append('<table class="backdoor"><caption>Backdoor (%): BA and the attack success '
                   "rate of each trigger (share of all triggered test images classified as the "
                   "attacker's target class, BadEncoder's ASR).</caption><thead><tr>"
                   f"<th>defense</th>{head}</tr></thead><tbody>"
                   + "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
                             for row in arows)
                   + "</tbody></table>")
    out.append("</section>")
    return "".join(out)


def _charts(charts: Sequence[Chart]) -> str:
    if not charts:
        return ""
    figures = "".join(f'<figure class="chart">{chart.svg}<figcaption>{_e(chart.title)}'
                      f"</figcaption></figure>" for chart in charts)
    return f"<section><h2>Charts</h2>{figures}</section>"


def _image(image: PerturbationImage) -> str:
    try:
        payload = base64.b64encode(image.path.read_bytes()).decode("ascii")
    except OSError as error:
        return f'<figure><p class="muted">{_e(image.row)}: unreadable ({_e(error)})</p></figure>'
    budget = format_budget(image.eps)
    kind = f"{image.kind}, " if image.kind else ""
    caption = (f"<code>{_e(image.row)}</code> ({_e(kind)}eps {_e(budget)})"
               f"<br>{_e(short_name(image.encoder))}")
    return (f'<figure><img src="data:image/png;base64,{payload}" '
            f'alt="{_e(image.row)} perturbation of {_e(short_name(image.encoder))}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _images(data: ReportData) -> str:
    if not data.images and not data.missing_images:
        return ""
    out = ["<section><h2>Universal perturbations and patches</h2>",
           '<div class="gallery">', *(_image(i) for i in data.images), "</div>"]
    if data.missing_images:
        out.append('<p class="muted">Missing image files: '
                   + ", ".join(f"<code>{_e(p)}</code>" for p in data.missing_images) + "</p>")
    out.append("</section>")
    return "".join(out)


def _pre(value: Any) -> str:
    return f"<pre>{_e(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"


def _cell(cell: Any) -> str:
    facts = [("id", cell.id), ("config hash", cell.config_hash),
             ("wall time", format_duration(cell.wall_time_s)), ("device", cell.device),
             ("finished", cell.finished), ("depends on", ", ".join(cell.deps) or "-")]
    rows = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in facts)
    return (f"<details><summary><strong>{_e(cell.kind)}</strong> {_e(cell.title)} "
            f'<span class="muted">({_e(cell.id)}, {_e(format_duration(cell.wall_time_s))})'
            f'</span></summary><dl class="meta">{rows}</dl>'
            f"<h4>params</h4>{_pre(cell.params)}<h4>result</h4>{_pre(slim(cell.result))}"
            f"<h4>artifacts</h4>{_pre(cell.artifacts)}<h4>versions</h4>{_pre(cell.versions)}"
            f"<h4>machine</h4>{_pre(cell.machine)}</details>")


def _cells(data: ReportData) -> str:
    return ("<section><h2>Cells</h2><p>The exact configuration of every finished cell.</p>"
            + "".join(_cell(c) for c in data.cells)
            + f"<details><summary>bench config</summary>{_pre(data.config)}</details></section>")


def render_html(data: ReportData, charts: Sequence[Chart] | None = None) -> str:
    """The whole report as one self-contained HTML page: header, verdict, tables, charts
    (the trade-off first), perturbations, example test images, cells."""
    from encshield.report import examples, sections, verdict

    charts = report_charts(data.tables, data.verdicts) if charts is None else charts
    extra = sections.render_html(sections.build_sections(data.cells, data.metric_rows))
    body = "".join([_header(data), verdict.render_html(data.verdicts) if data.verdicts else "",
                    *(_table_section(t) for t in data.tables), extra, _charts(charts),
                    _images(data),
                    examples.render_html(data.examples, data.missing_examples), _cells(data)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>encshield report: {_e(data.name)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>\n")
