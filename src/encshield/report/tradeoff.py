"""The trade-off chart: clean accuracy (BA) against per-sample worst-case robust accuracy.

One labelled point per defense of a result table: x = mean BA, y = mean worst-case RA
(``worst-case all`` when the table has it, else ``worst-case DAE``; see
:func:`encshield.report.verdict.robust_row`; a table with both gets a second chart for
``worst-case DAE``, the downstream-agnostic threat model), with mean +- sample-std error bars
over the seeds in both directions and a dashed line at chance accuracy when the number of
classes is known. Drawn from the :class:`~encshield.report.verdict.Verdict`, so it shows the
verdict's numbers.
Hand-written SVG like :mod:`encshield.report.svg`; every text is XML-escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from encshield.report.aggregate import format_stat, short_name, slug
from encshield.report.svg import (
    _AXIS_H,
    _LEFT,
    _PLOT_H,
    _TOP,
    PALETTE,
    Chart,
    _error_bar,
    _num,
    _open,
    _y,
    _y_axis,
)
from encshield.report.verdict import Verdict

__all__ = ["tradeoff_chart", "tradeoff_charts"]

_PLOT_W, _RIGHT_MARGIN, _LABEL_H, _CHAR_W = 420.0, 130.0, 14.0, 6.6


def _x(value: float) -> float:
    """A fraction in [0, 1] -> the x pixel of the plot area."""
    return _LEFT + _PLOT_W * min(max(value, 0.0), 1.0)


def _x_axis() -> list[str]:
    """Vertical grid lines, x ticks (0..100) and the x axis title."""
    parts = []
    for tick in range(0, 101, 20):
        x = _x(tick / 100)
        parts.append(f'<line x1="{_num(x)}" y1="{_num(_TOP)}" x2="{_num(x)}" '
                     f'y2="{_num(_y(0))}" stroke="#eeeeee" stroke-width="1"/>')
        parts.append(f'<text x="{_num(x)}" y="{_num(_y(0) + 16)}" text-anchor="middle" '
                     f'font-size="11">{tick}</text>')
    parts.append(f'<text x="{_num(_x(0.5))}" y="{_num(_y(0) + 34)}" text-anchor="middle">'
                 f"BA: clean accuracy (%)</text>")
    return parts


def _place(label: str, cx: float, cy: float, taken: list[tuple[float, float, float, float]],
           right: float) -> tuple[float, float, str]:
    """Where a point's label goes: right of the point (left where it would leave the chart),
    moved down past labels already placed."""
    width = _CHAR_W * len(label)
    anchor, x0 = "start", cx + 8
    if x0 + width > right:
        anchor, x0 = "end", cx - 8 - width
    y = cy - 6
    while any(x0 < b[2] and x0 + width > b[0] and y - _LABEL_H < b[3] and y > b[1]
              for b in taken):
        y += _LABEL_H
    taken.append((x0, y - _LABEL_H + 3, x0 + width, y + 3))
    return (x0 if anchor == "start" else x0 + width), y, anchor


def tradeoff_chart(verdict: Verdict, row: str | None = None) -> str | None:
    """The SVG of ``verdict``'s trade-off with the RA of ``row`` (default: its robustness row,
    ``worst-case all`` when present); ``None`` when the table has no such row."""
    row = row or (verdict.robust_rows[-1] if verdict.robust_rows else None)
    if row is None or row not in verdict.robust_rows:
        return None
    width = _LEFT + _PLOT_W + _RIGHT_MARGIN
    height = _TOP + _PLOT_H + _AXIS_H + 8
    title = (f"BA against worst-case RA ({row}) on {verdict.dataset}: "
             f"{short_name(verdict.encoder)}")
    parts = _open(width, height, title)
    parts += _x_axis()
    parts += _y_axis(_LEFT, _LEFT + _PLOT_W, f"{row} RA (%)")
    if verdict.chance is not None:
        x = _x(verdict.chance)
        parts.append(f'<line class="chance" x1="{_num(x)}" y1="{_num(_TOP)}" x2="{_num(x)}" '
                     f'y2="{_num(_y(0))}" stroke="#999999" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{_num(x + 4)}" y="{_num(_TOP + 12)}" font-size="10" '
                     f'fill="#777777">chance</text>')
    taken: list[tuple[float, float, float, float]] = []
    for i, cost in enumerate(verdict.costs):
        ba, ra = cost.ba, cost.robust.get(row)
        if ba is None or ra is None:
            continue
        color = PALETTE[i % len(PALETTE)]
        cx, cy = _x(ba.mean), _y(ra.mean)
        label = cost.defense + (" (collapsed)" if cost.collapsed else "")
        lx, ly, anchor = _place(label, cx, cy, taken, width - 4)
        tip = f"{cost.defense}: BA {format_stat(ba)} %, {row} RA {format_stat(ra)} %"
        parts += [f'<g class="point" data-defense="{escape(cost.defense, quote=True)}">',
                  *_error_bar(cy, ba, _x, vertical=False), *_error_bar(cx, ra),
                  (f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="5" fill="{color}" '
                   f'stroke="#222222" stroke-width="0.8"><title>{escape(tip)}</title></circle>'),
                  (f'<text class="label" x="{_num(lx)}" y="{_num(ly)}" text-anchor="{anchor}" '
                   f'font-size="11">{escape(label)}</text>'),
                  "</g>"]
    parts.append("</svg>")
    return "\n".join(parts)


def tradeoff_charts(verdicts: Sequence[Verdict], index: int = 1) -> list[Chart]:
    """The :class:`~encshield.report.svg.Chart` s of each verdict: one per robustness row, the
    main one (``worst-case all`` when present) first; ``index`` numbers the file names like the
    other charts of the same table."""
    charts = []
    for i, verdict in enumerate(verdicts, start=index):
        name = slug(f"{short_name(verdict.encoder)}-{verdict.dataset}")
        for row in reversed(verdict.robust_rows):
            svg = tradeoff_chart(verdict, row)
            if svg is not None:
                charts.append(Chart(
                    f"BA against worst-case RA ({row}) on {verdict.dataset}: "
                    f"{short_name(verdict.encoder)}", f"tradeoff-{i}-{name}-{slug(row)}.svg", svg))
    return charts
