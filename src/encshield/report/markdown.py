"""The Markdown report: header, verdict, result tables, the extra sections (DAE detection,
inference cost, persistent robustness: :mod:`encshield.report.sections`), charts, perturbation
images, example test images and the cell list.

Images and charts are linked relative to the report folder (``images/*.png``, ``charts/*.svg``;
:func:`encshield.report.write_report` copies / writes them there). The exact configuration of
every cell is in ``report.json`` and in the HTML page.

Every string from the store (names, labels, titles, paths) is escaped where it lands: as text
(:func:`md_text`: Markdown punctuation backslash-escaped, HTML characters as entities, no line
breaks) in headings, paragraphs and table cells, or as a code span (:func:`md_code`) whose
fence is longer than any backtick run inside. A label such as ``a|b``, ``# x`` or ``<script>``
therefore shows as written and neither breaks a table nor injects markup or HTML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from encshield.budgets import format_budget
from encshield.report.aggregate import (
    THREAT_MODELS,
    ResultTable,
    backdoor_matrix,
    fooling_matrix,
    format_duration,
    short_name,
    table_matrix,
)

if TYPE_CHECKING:
    from encshield.report import ReportData
    from encshield.report.svg import Chart

__all__ = ["markdown_table", "md_code", "md_text", "render_markdown", "render_table",
           "render_tables"]

#: Characters with a Markdown meaning anywhere in a line (``_`` is handled apart: only at word
#: edges, so that ``pgd_at`` stays readable in the printed tables).
_PUNCTUATION = re.compile(r"([\\`*\[\]#|~!])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


class Markup(str):
    """Markdown that is already safe (built from escaped parts); tables keep it as it is."""


def _one_line(value: object) -> str:
    """``str(value)`` with line breaks as spaces (a break would end a table row or heading)."""
    return str(value).replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def md_text(value: object) -> str:
    """``value`` as literal inline text, safe in a heading, a paragraph or a table cell."""
    text = _PUNCTUATION.sub(r"\\\1", _one_line(value))
    text = _EDGE_UNDERSCORE.sub(r"\\_", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_code(value: object) -> Markup:
    """``value`` as a code span shown verbatim (outside tables: GFM splits cells at any ``|``).

    Text with ``<``, ``>`` or ``&`` becomes :func:`md_text` instead: CommonMark shows code spans
    literally, but not every renderer does, so no raw HTML character is ever written."""
    text = _one_line(value)
    if any(c in text for c in "<>&"):
        return Markup(md_text(text))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    if not text or text[0] in "` " or text[-1] in "` ":
        text = f" {text} "
    return Markup(f"{fence}{text}{fence}")


def _cell(value: object) -> str:
    """A table cell: :class:`Markup` as it is, anything else as :func:`md_text`."""
    return value if isinstance(value, Markup) else md_text(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                   numeric_from: int = 1) -> str:
    """A GitHub-flavoured Markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _kinds_note(table: ResultTable) -> str:
    """The attack columns grouped by threat model (never one group for both)."""
    parts = []
    for label, kinds in THREAT_MODELS.items():
        rows = [c.row for c in table.attack_columns if c.kind in kinds]
        if rows:
            parts.append(f"{label}: {', '.join(md_code(r) for r in rows)}")
    return "; ".join(parts)


#: What the per-sample worst-case columns mean (shown under a table that has them).
WORST_CASE_NOTE = ("The worst-case columns come last: per test sample, an image counts as robust "
                   "only if every attack of the group leaves its prediction correct (on the "
                   "samples all of them evaluated)")


def _worst_case_note(table: ResultTable) -> str:
    """The sentence explaining the table's worst-case columns ("" when it has none)."""
    groups = {"worst-case DAE": "the downstream-agnostic attacks",
              "worst-case all": "every attack, adaptive ones included"}
    rows = [c.row for c in table.attack_columns if c.kind == "worst_case"]
    if not rows:
        return ""
    meaning = "; ".join(f"{md_code(r)}: {groups.get(r, 'its group of attacks')}" for r in rows)
    return f"{WORST_CASE_NOTE}. {meaning}."


def render_table(table: ResultTable, level: int = 2) -> str:
    """The section of one (encoder, dataset): accuracy table, then the fooling-rate table."""
    headers, rows = table_matrix(table)
    out = [f"{'#' * level} {md_text(short_name(table.encoder))} on {md_text(table.dataset)}",
           "",
           (f"Accuracy (%), {table.seeds_note}. BA = clean (benign) accuracy; every other "
            f"column is the robust accuracy (RA) under that attack."), ""]
    if table.attack_columns:
        out += [f"Attacks: {_kinds_note(table)}.", ""]
    if note := _worst_case_note(table):
        out += [note, ""]
    out += [markdown_table(headers, rows), ""]
    fooling = fooling_matrix(table)
    if fooling is not None:
        out += ["Fooling rate (%): share of test images whose prediction the attack changed.", "",
                markdown_table(*fooling), ""]
    asr = backdoor_matrix(table)
    if asr is not None:
        out += ["Backdoor (%): BA and the attack success rate of each trigger (share of all "
                "triggered test images classified as the attacker's target class, BadEncoder's "
                "ASR).", "", markdown_table(*asr), ""]
    return "\n".join(out)


def render_tables(data: ReportData, level: int = 2) -> str:
    """Every result table of the report as Markdown."""
    return "\n".join(render_table(table, level) for table in data.tables).rstrip() + "\n"


def _header(data: ReportData) -> list[str]:
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(data.cell_counts.items()))
    out = [f"# encshield bench report: {md_text(data.name)}", "",
           f"- date: {md_text(data.generated)} (report)"
           + (f", store created {md_text(data.created)}" if data.created else ""),
           f"- results store: {md_code(data.db_path)}",
           f"- cells: {len(data.cells)} ({counts})",
           f"- total wall time: {format_duration(data.total_wall_time_s)}",
           "- encoders:"]
    out += [f"  - {md_code(spec)} sha256 {md_code(sha or 'unknown')}"
            for spec, sha in data.encoders.items()]
    return [*out, ""]


def _charts(charts: Sequence[Chart]) -> list[str]:
    if not charts:
        return []
    out = ["## Charts", ""]
    for chart in charts:
        out += [f"![{md_text(chart.title)}](charts/{chart.file_name})", ""]
    return out


def _images(data: ReportData) -> list[str]:
    if not data.images and not data.missing_images:
        return []
    out = ["## Universal perturbations and patches", ""]
    rows = [[short_name(i.encoder), i.row, i.attack, format_budget(i.eps), i.kind or "-",
             Markup(f"![{md_text(i.row)}](images/{i.file_name})")] for i in data.images]
    if rows:
        out += [markdown_table(["encoder", "row", "attack", "eps", "kind", "image"], rows, 99), ""]
    if data.missing_images:
        out += ["Missing image files (not rendered): " + ", ".join(
            md_code(p) for p in data.missing_images), ""]
    return out


def _cells(data: ReportData) -> list[str]:
    rows = [[c.id, c.kind, c.title, c.config_hash[:16], format_duration(c.wall_time_s), c.device,
             c.finished] for c in data.cells]
    return ["## Cells", "",
            ("The exact parameters, versions and machine of every cell are in `report.json` "
             "and `report.html`."), "",
            markdown_table(["id", "kind", "title", "config hash", "wall time", "device",
                            "finished"], rows, 99), ""]


def render_markdown(data: ReportData, charts: Sequence[Chart] = (),
                    example_files: Mapping[tuple[str, str], str] | None = None) -> str:
    """The whole Markdown report (images and charts linked under ``images/`` and ``charts/``;
    ``example_files``: the example strips written there, ``{(cell id, row): file name}``)."""
    from encshield.report import examples, sections, verdict

    extra = sections.build_sections(data.cells, data.metric_rows)
    parts = [*_header(data), verdict.render_markdown(data.verdicts) if data.verdicts else "",
             render_tables(data), *sections.render_markdown(extra), *_charts(charts),
             *_images(data),
             *examples.render_markdown(data.examples, dict(example_files or {}),
                                       data.missing_examples),
             *_cells(data)]
    return "\n".join(parts).rstrip() + "\n"
