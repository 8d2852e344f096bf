"""Hand-written SVG charts of the report (no plotting library, no scripts).

* :func:`bar_chart`: per table, grouped bars (one group per defense) of BA and of RA under every
  attack column, with mean +- sample-std error bars over the seeds.
* :func:`budget_chart`: RA against the budget (in /255) of a universal attack evaluated at more
  than one budget, one line per defense, with error bars.
* :func:`encshield.report.tradeoff.tradeoff_chart`: BA against worst-case RA, one labelled point
  per defense (first of its table's charts when the verdicts are given).

Every text is XML-escaped. The SVG strings carry ``xmlns`` so they work as ``.svg`` files and
inline in HTML alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from encshield.report.aggregate import (
    Column,
    ResultTable,
    Stat,
    budget_series,
    format_stat,
    short_name,
    slug,
)

if TYPE_CHECKING:
    from encshield.report.verdict import Verdict

__all__ = ["PALETTE", "Chart", "bar_chart", "budget_chart", "report_charts"]

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")
"""Series colours (cycled)."""

_LEFT, _RIGHT, _TOP, _PLOT_H, _AXIS_H, _LEGEND_ROW = 56, 20, 40, 240, 44, 18
_FONT = "font-family=\"Helvetica, Arial, sans-serif\""


@dataclass(frozen=True)
class Chart:
    """One chart: its title, a file name for the ``.svg`` copy, and the SVG text."""

    title: str
    file_name: str
    svg: str


@dataclass(frozen=True)
class _Series:
    label: str
    color: str
    values: Sequence[Stat | None]


def _y(value: float) -> float:
    """A fraction in [0, 1] -> the y pixel of the plot area."""
    return _TOP + _PLOT_H * (1.0 - min(max(value, 0.0), 1.0))


def _num(value: float) -> str:
    return f"{value:.1f}"


def _open(width: float, height: float, title: str) -> list[str]:
    return [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
         f'viewBox="0 0 {_num(width)} {_num(height)}" role="img" {_FONT} font-size="12">'),
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{_num(width)}" height="{_num(height)}" fill="#ffffff"/>',
        (f'<text x="{_num(width / 2)}" y="20" text-anchor="middle" font-size="14" '
         f'font-weight="bold">{escape(title)}</text>'),
    ]


def _y_axis(x0: float, x1: float, label: str) -> list[str]:
    parts = []
    for tick in range(0, 101, 20):
        y = _y(tick / 100)
        parts.append(f'<line x1="{_num(x0)}" y1="{_num(y)}" x2="{_num(x1)}" y2="{_num(y)}" '
                     f'stroke="#dddddd" stroke-width="1"/>')
        parts.append(f'<text x="{_num(x0 - 6)}" y="{_num(y + 4)}" text-anchor="end">{tick}</text>')
    middle = _TOP + _PLOT_H / 2
    parts.append(f'<text x="14" y="{_num(middle)}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {_num(middle)})">{escape(label)}</text>')
    parts.append(f'<line x1="{_num(x0)}" y1="{_num(_y(0))}" x2="{_num(x1)}" y2="{_num(_y(0))}" '
                 f'stroke="#333333" stroke-width="1"/>')
    return parts


def _error_bar(at: float, stat: Stat, scale: Callable[[float], float] = _y, *,
               vertical: bool = True, cap: float = 4.0) -> list[str]:
    """The mean +- sample-std bar of ``stat`` with caps of half-width ``cap`` (nothing with one
    seed): vertical at the x pixel ``at`` with ``scale`` the y axis, or horizontal at the y pixel
    ``at`` with ``scale`` an x axis (a fraction -> a pixel)."""
    if stat.std is None:
        return []
    low, high = scale(stat.mean - stat.std), scale(stat.mean + stat.std)
    lines = [(at, low, at, high), (at - cap, low, at + cap, low), (at - cap, high, at + cap, high)]
    if not vertical:
        lines = [(y1, x1, y2, x2) for x1, y1, x2, y2 in lines]
    return [f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'stroke="#222222" stroke-width="1.2"/>' for x1, y1, x2, y2 in lines]


def _legend(series: Sequence[_Series], top: float) -> list[str]:
    parts = []
    for i, item in enumerate(series):
        y = top + i * _LEGEND_ROW
        parts.append(f'<rect x="{_LEFT}" y="{_num(y)}" width="12" height="12" '
                     f'fill="{item.color}"/>')
        parts.append(f'<text x="{_LEFT + 18}" y="{_num(y + 10)}">{escape(item.label)}</text>')
    return parts


def _clip(text: str, width: float) -> str:
    """Shorten ``text`` to about ``width`` pixels of 11-px characters."""
    limit = max(4, int(width / 6.5))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _bar_series(table: ResultTable) -> list[_Series]:
    clean = next((c for c in table.columns if c.kind == "clean"), None)
    series = [_Series("BA (clean)", PALETTE[0], [
        _stat(table, d, clean, "benign_accuracy") for d in table.defenses])]
    for i, column in enumerate(table.attack_columns, start=1):
        series.append(_Series(f"RA {column.row}", PALETTE[i % len(PALETTE)], [
            _stat(table, d, column, "robust_accuracy") for d in table.defenses]))
    return series


def _stat(table: ResultTable, defense: str, column: Column | None, metric: str) -> Stat | None:
    if column is None:
        return None
    row = table.get(defense, column.row)
    return None if row is None else row.stat(metric)


def bar_chart(table: ResultTable) -> str:
    """Grouped bars: one group per defense, one bar for BA and one for RA per attack column."""
    series = _bar_series(table)
    bar_w = 16.0
    min_group_w = len(series) * bar_w + 28
    plot_w = max(360.0, min_group_w * len(table.defenses))
    width = _LEFT + plot_w + _RIGHT
    legend_top = _TOP + _PLOT_H + _AXIS_H
    height = legend_top + len(series) * _LEGEND_ROW + 8
    title = f"BA and RA (%) on {table.dataset}: {short_name(table.encoder)}"
    parts = _open(width, height, title)
    parts += _y_axis(_LEFT, _LEFT + plot_w, "accuracy (%)")
    group_w = plot_w / max(1, len(table.defenses))
    for g, defense in enumerate(table.defenses):
        x0 = _LEFT + g * group_w + (group_w - len(series) * bar_w) / 2
        for s, item in enumerate(series):
            stat = item.values[g]
            if stat is None:
                continue
            x = x0 + s * bar_w
            top = _y(stat.mean)
            parts.append(
                f'<rect x="{_num(x)}" y="{_num(top)}" width="{_num(bar_w - 2)}" '
                f'height="{_num(_y(0) - top)}" fill="{item.color}">'
                f"<title>{escape(f'{defense} / {item.label}: {format_stat(stat)}')}</title></rect>")
            parts += _error_bar(x + (bar_w - 2) / 2, stat, cap=3.0)
        center = _LEFT + (g + 0.5) * group_w
        parts.append(f'<text x="{_num(center)}" y="{_num(_y(0) + 18)}" text-anchor="middle" '
                     f'font-size="11">{escape(_clip(defense, group_w))}</text>')
    parts += _legend(series, legend_top)
    parts.append("</svg>")
    return "\n".join(parts)


def budget_chart(table: ResultTable, base: str, columns: Sequence[Column]) -> str:
    """RA (%) of ``base`` against its budgets (x in /255), one line per defense."""
    budgets = [255.0 * (c.eps or 0.0) for c in columns]
    x_max = max(budgets) * 1.08 or 1.0
    plot_w = 420.0
    width = _LEFT + plot_w + _RIGHT
    legend_top = _TOP + _PLOT_H + _AXIS_H
    series = [_Series(defense, PALETTE[i % len(PALETTE)],
                      [_stat(table, defense, c, "robust_accuracy") for c in columns])
              for i, defense in enumerate(table.defenses)]
    height = legend_top + len(series) * _LEGEND_ROW + 8
    title = f"RA (%) of {base} against its budget on {table.dataset}: {short_name(table.encoder)}"
    parts = _open(width, height, title)
    parts += _y_axis(_LEFT, _LEFT + plot_w, "robust accuracy (%)")

    def x_of(budget: float) -> float:
        return _LEFT + plot_w * budget / x_max

    for budget in budgets:
        parts.append(f'<text x="{_num(x_of(budget))}" y="{_num(_y(0) + 16)}" '
                     f'text-anchor="middle" font-size="11">{budget:g}</text>')
    parts.append(f'<text x="{_num(_LEFT + plot_w / 2)}" y="{_num(_y(0) + 34)}" '
                 f'text-anchor="middle">budget eps (/255)</text>')
    for item in series:
        points = [(x_of(b), s) for b, s in zip(budgets, item.values, strict=True) if s is not None]
        if len(points) > 1:
            coords = " ".join(f"{_num(x)},{_num(_y(s.mean))}" for x, s in points)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{item.color}" '
                         f'stroke-width="2"/>')
        for x, stat in points:
            parts += _error_bar(x, stat)
            parts.append(f'<circle cx="{_num(x)}" cy="{_num(_y(stat.mean))}" r="4" '
                         f'fill="{item.color}"><title>'
                         f"{escape(f'{item.label}: {format_stat(stat)}')}</title></circle>")
    parts += _legend(series, legend_top)
    parts.append("</svg>")
    return "\n".join(parts)


def report_charts(tables: Sequence[ResultTable], verdicts: Sequence[Verdict] = ()) -> list[Chart]:
    """Every chart of the report, per table: the BA against worst-case RA trade-off (when its
    verdict is in ``verdicts`` and has a robustness row), the bar chart, a budget chart per
    budget sweep."""
    from encshield.report.tradeoff import tradeoff_charts

    charts: list[Chart] = []
    for i, table in enumerate(tables, start=1):
        charts += tradeoff_charts([v for v in verdicts if (v.encoder, v.dataset)
                                   == (table.encoder, table.dataset)], index=i)
        name = slug(f"{short_name(table.encoder)}-{table.dataset}")
        charts.append(Chart(f"BA and RA on {table.dataset}: {short_name(table.encoder)}",
                            f"bars-{i}-{name}.svg", bar_chart(table)))
        for base, columns in budget_series(table).items():
            charts.append(Chart(
                f"RA of {base} against its budget on {table.dataset}: {short_name(table.encoder)}",
                f"budget-{i}-{name}-{slug(base)}.svg", budget_chart(table, base, columns)))
    return charts
