"""The Markdown report: header, result tables, charts, perturbation images and the cell list.

Images and charts are linked relative to the report folder (``images/*.png``, ``charts/*.svg``;
:func:`encshield.report.write_report` copies / writes them there). The exact configuration of
every cell is in ``report.json`` and in the HTML page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from encshield.budgets import format_budget
from encshield.report.aggregate import (
    ResultTable,
    fooling_matrix,
    format_duration,
    short_name,
    table_matrix,
)

if TYPE_CHECKING:
    from encshield.report import ReportData
    from encshield.report.svg import Chart

__all__ = ["markdown_table", "render_markdown", "render_table", "render_tables"]


def _cell(value: object) -> str:
    """Text safe inside a Markdown table cell (pipes and HTML escaped, no line breaks)."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                   numeric_from: int = 1) -> str:
    """A GitHub-flavoured Markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _seeds_note(table: ResultTable) -> str:
    seeds = table.seeds
    if len(seeds) == 1:
        return f"one seed ({seeds[0]})"
    return f"mean ± sample std over {len(seeds)} seeds ({', '.join(map(str, seeds))})"


def _kinds_note(table: ResultTable) -> str:
    groups = {"universal": "universal (DAE)", "encoder": "encoder (feature space)",
              "whitebox": "white-box"}
    parts = []
    for kind, label in groups.items():
        rows = [c.row for c in table.attack_columns if c.kind == kind]
        if rows:
            parts.append(f"{label}: {', '.join(f'`{r}`' for r in rows)}")
    return "; ".join(parts)


def render_table(table: ResultTable, level: int = 2) -> str:
    """The section of one (encoder, dataset): accuracy table, then the fooling-rate table."""
    headers, rows = table_matrix(table)
    out = [f"{'#' * level} {short_name(table.encoder)} on {table.dataset}", "",
           (f"Accuracy (%), {_seeds_note(table)}. BA = clean (benign) accuracy; every other "
            f"column is the robust accuracy (RA) under that attack."), ""]
    if table.attack_columns:
        out += [f"Attacks: {_kinds_note(table)}.", ""]
    out += [markdown_table(headers, rows), ""]
    fooling = fooling_matrix(table)
    if fooling is not None:
        out += ["Fooling rate (%): share of test images whose prediction the attack changed.", "",
                markdown_table(*fooling), ""]
    return "\n".join(out)


def render_tables(data: ReportData, level: int = 2) -> str:
    """Every result table of the report as Markdown."""
    return "\n".join(render_table(table, level) for table in data.tables).rstrip() + "\n"


def _header(data: ReportData) -> list[str]:
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(data.cell_counts.items()))
    out = [f"# encshield bench report: {data.name}", "",
           f"- date: {data.generated} (report)" + (f", store created {data.created}"
                                                    if data.created else ""),
           f"- results store: `{data.db_path}`",
           f"- cells: {len(data.cells)} ({counts})",
           f"- total wall time: {format_duration(data.total_wall_time_s)}",
           "- encoders:"]
    out += [f"  - `{spec}` sha256 `{sha or 'unknown'}`" for spec, sha in data.encoders.items()]
    return [*out, ""]


def _charts(charts: Sequence[Chart]) -> list[str]:
    if not charts:
        return []
    out = ["## Charts", ""]
    for chart in charts:
        out += [f"![{_cell(chart.title)}](charts/{chart.file_name})", ""]
    return out


def _images(data: ReportData) -> list[str]:
    if not data.images and not data.missing_images:
        return []
    out = ["## Universal perturbations and patches", ""]
    rows = [[short_name(i.encoder), i.row, i.attack, format_budget(i.eps), i.kind or "-",
             f"![{i.row}](images/{i.file_name})"] for i in data.images]
    if rows:
        out += [markdown_table(["encoder", "row", "attack", "eps", "kind", "image"], rows, 99), ""]
    if data.missing_images:
        out += ["Missing image files (not rendered): " + ", ".join(
            f"`{p}`" for p in data.missing_images), ""]
    return out


def _cells(data: ReportData) -> list[str]:
    rows = [[c.id, c.kind, c.title, c.config_hash[:16], format_duration(c.wall_time_s), c.device,
             c.finished] for c in data.cells]
    return ["## Cells", "",
            ("The exact parameters, versions and machine of every cell are in `report.json` "
             "and `report.html`."), "",
            markdown_table(["id", "kind", "title", "config hash", "wall time", "device",
                            "finished"], rows, 99), ""]


def render_markdown(data: ReportData, charts: Sequence[Chart] = ()) -> str:
    """The whole Markdown report (images and charts linked under ``images/`` and ``charts/``)."""
    parts = [*_header(data), render_tables(data), *_charts(charts), *_images(data), *_cells(data)]
    return "\n".join(parts).rstrip() + "\n"
