"""The verdict: the answer a person reads first, computed from the stored results.

Per result table (one encoder on one dataset) a :class:`Verdict` says

* which defense has the best clean accuracy (BA);
* which defense has the best per-sample worst-case robust accuracy (RA), per threat model
  (``worst-case DAE``: the downstream-agnostic attacks on the public encoder; ``worst-case
  all``: every attack, adaptive ones included);
* for every defense its cost relative to no defense (the defense registered as ``none``): the
  BA change in points and its training time (the model cells' defense records ``time_s``, else
  their wall time, mean over seeds), and its robustness gain (worst-case RA change in points);
* which defenses *collapsed*: a BA within :data:`CHANCE_MARGIN` of chance (``1 / num_classes``).

Every number is taken from the :class:`~encshield.report.aggregate.ResultTable` (means over
seeds, formatted with :func:`~encshield.report.aggregate.format_stat` like the tables) and from
the store's cells; nothing is written in advance. :func:`render_markdown` and
:func:`render_html` escape every string from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from encshield.report.aggregate import (
    ResultTable,
    Stat,
    format_duration,
    format_percent,
    format_stat,
    short_name,
    summarize,
)

__all__ = [
    "CHANCE_MARGIN",
    "ROBUST_ROWS",
    "Best",
    "DefenseCost",
    "Verdict",
    "compute_verdicts",
    "render_html",
    "render_markdown",
    "robust_row",
]

CHANCE_MARGIN = 0.02
"""A defense whose mean BA is within this of chance (2 points) has *collapsed*."""

#: The per-sample worst-case rows, in table order, with the threat model each stands for.
ROBUST_ROWS: dict[str, str] = {
    "worst-case DAE": "downstream-agnostic attacks on the public encoder",
    "worst-case all": "every attack, adaptive ones on the deployed model included",
}

_TIE = 1e-12
_BASELINE = "none"


@dataclass(frozen=True)
class Best:
    """The defense(s) with the highest mean of one metric (several on a tie).

    Attributes:
        row, defenses, stat: the table row, the best defense(s) and their statistic.
        threat_model: what the row stands for (worst-case rows), in words.
        collapsed: every best defense collapsed (BA near chance).
        others, others_stat: then, the best among the defenses that did not collapse.
    """

    row: str
    defenses: tuple[str, ...]
    stat: Stat
    threat_model: str = ""
    collapsed: bool = False
    others: tuple[str, ...] = ()
    others_stat: Stat | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (means as fractions, ``text`` as in the tables)."""
        return {"row": self.row, "threat_model": self.threat_model,
                "defenses": list(self.defenses), "mean": self.stat.mean, "std": self.stat.std,
                "text": format_stat(self.stat), "collapsed": self.collapsed,
                "best_not_collapsed": list(self.others),
                "best_not_collapsed_mean": None if self.others_stat is None
                else self.others_stat.mean}


@dataclass(frozen=True)
class DefenseCost:
    """One defense against no defense: BA change, training time, worst-case RA changes."""

    defense: str
    ba: Stat | None
    ba_change: float | None
    train_time_s: float | None
    model_wall_time_s: float | None
    robust: Mapping[str, Stat | None]
    robust_change: Mapping[str, float | None]
    collapsed: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (changes in percentage points)."""
        return {"defense": self.defense, "ba_mean": None if self.ba is None else self.ba.mean,
                "ba_change_points": _points(self.ba_change), "train_time_s": self.train_time_s,
                "model_cell_wall_time_s": self.model_wall_time_s,
                "worst_case_mean": {r: None if s is None else s.mean
                                    for r, s in self.robust.items()},
                "worst_case_change_points": {r: _points(v)
                                             for r, v in self.robust_change.items()},
                "collapsed": self.collapsed}


@dataclass(frozen=True)
class Verdict:
    """The verdict on one result table (see the module docstring)."""

    encoder: str
    dataset: str
    seeds: tuple[int, ...]
    num_classes: int | None
    baseline: str | None
    best_ba: Best | None
    best_robust: list[Best]
    costs: list[DefenseCost]
    robust_rows: list[str] = field(default_factory=list)

    @property
    def chance(self) -> float | None:
        """Accuracy of a constant guess, ``1 / num_classes`` (``None``: unknown)."""
        return None if not self.num_classes else 1.0 / self.num_classes

    @property
    def collapsed(self) -> list[str]:
        """The defenses whose BA is within :data:`CHANCE_MARGIN` of chance."""
        return [c.defense for c in self.costs if c.collapsed]

    def cost(self, defense: str) -> DefenseCost | None:
        """The :class:`DefenseCost` of ``defense`` (``None`` when unknown)."""
        return next((c for c in self.costs if c.defense == defense), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``verdict`` entries of ``report.json``)."""
        return {"encoder": self.encoder, "dataset": self.dataset, "seeds": list(self.seeds),
                "num_classes": self.num_classes, "chance": self.chance,
                "chance_margin": CHANCE_MARGIN, "baseline": self.baseline,
                "robust_rows": list(self.robust_rows),
                "best_ba": None if self.best_ba is None else self.best_ba.to_dict(),
                "best_worst_case": [b.to_dict() for b in self.best_robust],
                "defenses": [c.to_dict() for c in self.costs], "collapsed": self.collapsed}


def _points(change: float | None) -> float | None:
    """A change as a fraction -> percentage points (``None`` stays)."""
    return None if change is None else 100.0 * change


# -------------------------------------------------------------------------------- computation

def robust_row(table: ResultTable) -> str | None:
    """The row whose RA stands for robustness: ``worst-case all`` when present, else
    ``worst-case DAE``, else the only attack column (its own worst case); ``None`` otherwise."""
    rows = robust_rows(table)
    return rows[-1] if rows else None


def robust_rows(table: ResultTable) -> list[str]:
    """The worst-case rows of ``table`` in :data:`ROBUST_ROWS` order (or its one attack row)."""
    present = {c.row for c in table.columns if c.kind == "worst_case"}
    rows = [r for r in ROBUST_ROWS if r in present]
    if not rows and len(table.attack_columns) == 1:
        rows = [table.attack_columns[0].row]
    return rows


def _stat(table: ResultTable, defense: str, row: str | None, metric: str) -> Stat | None:
    """The ``metric`` statistic of ``defense`` on ``row`` (``None`` when missing)."""
    cell = table.get(defense, row) if row is not None else None
    return None if cell is None else cell.stat(metric)


def _clean_row(table: ResultTable) -> str | None:
    """The name of the table's clean (BA) column."""
    return next((c.row for c in table.columns if c.kind == "clean"), None)


def _best(table: ResultTable, row: str | None, metric: str, collapsed: set[str],
          threat_model: str = "") -> Best | None:
    """The defense(s) with the highest mean ``metric`` on ``row``; when all of them collapsed, also
    the best of the others."""
    stats = {d: s for d in table.defenses if (s := _stat(table, d, row, metric)) is not None}
    if row is None or not stats:
        return None
    top = max(s.mean for s in stats.values())
    winners = tuple(d for d, s in stats.items() if s.mean >= top - _TIE)
    best = Best(row, winners, stats[winners[0]], threat_model,
                collapsed=all(d in collapsed for d in winners))
    rest = {d: s for d, s in stats.items() if d not in collapsed}
    if best.collapsed and rest:
        second = max(s.mean for s in rest.values())
        others = tuple(d for d, s in rest.items() if s.mean >= second - _TIE)
        best = Best(row, winners, best.stat, threat_model, True, others, rest[others[0]])
    return best


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict, else ``{}`` (stored JSON may be damaged)."""
    return value if isinstance(value, dict) else {}


def _matches(cell: Any, table: ResultTable) -> bool:
    """Whether a model cell belongs to ``table`` (same encoder spec and dataset)."""
    params = _dict(cell.params)
    return (_dict(params.get("encoder")).get("spec") == table.encoder
            and _dict(params.get("dataset")).get("name") == table.dataset)


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else ``None``."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _models(table: ResultTable, cells: Sequence[Any]) -> dict[str, list[Any]]:
    """``{defense label: its model cells}`` of ``table`` (label = the model cell's ``row``)."""
    found: dict[str, list[Any]] = {}
    for cell in cells:
        if cell.kind == "model" and _matches(cell, table):
            found.setdefault(str(cell.params.get("row") or cell.params.get("defense")),
                             []).append(cell)
    return found


def _num_classes(table: ResultTable, cells: Sequence[Any]) -> int | None:
    """The dataset's number of classes as recorded by an evaluation or a defense record."""
    for cell in cells:
        result = _dict(cell.result)
        candidates: list[Any] = []
        if (cell.kind == "evaluate" and result.get("encoder") == table.encoder
                and result.get("dataset") == table.dataset):
            config = _dict(_dict(result.get("record")).get("config"))
            candidates.append(_dict(config.get("dataset")).get("num_classes"))
        elif cell.kind == "model" and _matches(cell, table):
            candidates.append(result.get("num_classes"))
        for value in candidates:
            if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                return value
    return None


def _baseline(table: ResultTable, models: Mapping[str, list[Any]]) -> str | None:
    """The table's no-defense label: a defense whose model cells ran ``none`` (else one named
    ``none``)."""
    for defense in table.defenses:
        if any(c.params.get("defense") == _BASELINE for c in models.get(defense, [])):
            return defense
    return _BASELINE if _BASELINE in table.defenses else None


def _train_time(cells: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean over seeds of the defense records' ``time_s`` (else the cells' wall time), and the
    mean wall time of the model cells."""
    cells = list(cells)
    wall = summarize(_number(c.wall_time_s) for c in cells)
    record = summarize(_number(_dict(c.result).get("time_s")) for c in cells)
    chosen = record or wall
    return (None if chosen is None else chosen.mean), (None if wall is None else wall.mean)


def _difference(a: Stat | None, b: Stat | None) -> float | None:
    """``a.mean - b.mean`` (``None`` when either is missing)."""
    return None if a is None or b is None else a.mean - b.mean


def compute_verdict(table: ResultTable, cells: Sequence[Any]) -> Verdict:
    """The :class:`Verdict` on ``table``; ``cells``: the store's cells (model cells give the
    training times, evaluations or defense records the number of classes)."""
    clean = _clean_row(table)
    num_classes = _num_classes(table, cells)
    chance = None if num_classes is None else 1.0 / num_classes
    rows = robust_rows(table)
    models = _models(table, cells)
    baseline = _baseline(table, models)
    base_ba = _stat(table, baseline, clean, "benign_accuracy") if baseline else None
    costs = []
    for defense in table.defenses:
        ba = _stat(table, defense, clean, "benign_accuracy")
        robust = {r: _stat(table, defense, r, "robust_accuracy") for r in rows}
        base = {r: _stat(table, baseline, r, "robust_accuracy") if baseline else None
                for r in rows}
        time_s, wall_s = _train_time(models.get(defense, []))
        costs.append(DefenseCost(
            defense=defense, ba=ba, ba_change=_difference(ba, base_ba) if baseline else None,
            train_time_s=time_s, model_wall_time_s=wall_s, robust=robust,
            robust_change={r: _difference(robust[r], base[r]) for r in rows},
            collapsed=(chance is not None and ba is not None
                       and abs(ba.mean - chance) <= CHANCE_MARGIN + _TIE)))
    collapsed = {c.defense for c in costs if c.collapsed}
    best_robust = [b for r in rows if (b := _best(
        table, r, "robust_accuracy", collapsed,
        ROBUST_ROWS.get(r, "the only attack (its own worst case)"))) is not None]
    return Verdict(encoder=table.encoder, dataset=table.dataset, seeds=table.seeds,
                   num_classes=num_classes, baseline=baseline,
                   best_ba=_best(table, clean, "benign_accuracy", collapsed),
                   best_robust=best_robust, costs=costs, robust_rows=rows)


def compute_verdicts(tables: Sequence[ResultTable], cells: Sequence[Any]) -> list[Verdict]:
    """One :class:`Verdict` per result table, in table order."""
    return [compute_verdict(table, cells) for table in tables]


# ---------------------------------------------------------------------------------- rendering

class _Name(str):
    """A string from the store: escaped by each renderer (literal text around it is ours)."""


Line = list[str]


def _names(names: Sequence[str]) -> list[str]:
    """Store names as escapable parts separated by commas."""
    parts: list[str] = []
    for i, name in enumerate(names):
        parts += ([", "] if i else []) + [_Name(name)]
    return parts


def _seeds(seeds: Sequence[int]) -> str:
    """How the numbers were aggregated over seeds, in words."""
    if len(seeds) == 1:
        return f"one seed ({seeds[0]})"
    return f"means over {len(seeds)} seeds ({', '.join(map(str, seeds))})"


def _change(value: float | None) -> str:
    """A change as signed percentage points (``n/a`` when unknown)."""
    return "n/a" if value is None else f"{100 * value:+.1f} points"


def _best_line(prefix: Line, best: Best) -> Line:
    """``prefix`` + the best defense(s) and their value, flagged when collapsed."""
    line = [*prefix, *_names(best.defenses), f" ({format_stat(best.stat)} %"]
    line.append(", collapsed)" if best.collapsed else ")")
    if best.others and best.others_stat is not None:
        line += ["; among the defenses that did not collapse: ", *_names(best.others),
                 f" ({format_stat(best.others_stat)} %)"]
    return [*line, "."]


def _title(verdict: Verdict) -> tuple[Line, str]:
    """The verdict's heading (encoder on dataset) and its facts (seeds, classes, chance)."""
    facts = [_seeds(verdict.seeds)]
    if verdict.num_classes:
        facts.append(f"{verdict.num_classes} classes, chance {format_percent(verdict.chance)} %")
    return ([_Name(short_name(verdict.encoder)), " on ", _Name(verdict.dataset)],
            "; ".join(facts))


def verdict_lines(verdict: Verdict) -> list[Line]:
    """The verdict as lines of parts (store strings marked for escaping)."""
    lines: list[Line] = []
    if verdict.best_ba is not None:
        lines.append(_best_line(["Best BA: "], verdict.best_ba))
    for best in verdict.best_robust:
        lines.append(_best_line([f"Best worst-case RA under {best.threat_model} (",
                                 _Name(best.row), "): "], best))
    if not verdict.robust_rows:
        lines.append(["No per-sample worst-case rows are stored (evaluations made before they "
                      "existed, or a single defense-free row): robustness is not summarised."])
    base = verdict.cost(verdict.baseline) if verdict.baseline else None
    if base is None:
        lines.append(["No defense-free model (", _Name(_BASELINE), ") in these results: costs "
                      "relative to no defense are not computed."])
    else:
        facts: Line = [f"BA {format_stat(base.ba)} %"]
        for r, stat in base.robust.items():
            facts += [", ", _Name(r), f" {format_stat(stat)} %"]
        if base.train_time_s is not None:
            facts.append(f", training {format_duration(base.train_time_s)}")
        lines.append(["Each defense against no defense (", _Name(base.defense), ": ", *facts,
                      "):"])
    return lines


def cost_lines(verdict: Verdict) -> list[Line]:
    """One line per defense other than the baseline: its costs and gains."""
    if verdict.baseline is None or verdict.cost(verdict.baseline) is None:
        return []
    lines = []
    for cost in verdict.costs:
        if cost.defense == verdict.baseline:
            continue
        line: Line = [_Name(cost.defense), " (collapsed)" if cost.collapsed else "",
                      f": BA {_change(cost.ba_change)}"]
        if cost.train_time_s is not None:
            line.append(f", training {format_duration(cost.train_time_s)}")
        for i, (r, value) in enumerate(cost.robust_change.items()):
            line += ["; robustness: " if i == 0 else ", ", _Name(r), f" {_change(value)}"]
        lines.append([*line, "."])
    return lines


def caveat_lines(verdict: Verdict) -> list[Line]:
    """One caveat per collapsed defense (BA within :data:`CHANCE_MARGIN` of chance)."""
    lines = []
    for cost in verdict.costs:
        if cost.collapsed and verdict.chance is not None and cost.ba is not None:
            lines.append([
                "Caveat: ", _Name(cost.defense), f" collapsed: its BA {format_stat(cost.ba)} % "
                f"is within {100 * CHANCE_MARGIN:.0f} points of chance "
                f"({format_percent(verdict.chance)} % = 1/{verdict.num_classes} classes), so its "
                f"robust accuracies are those of a near-constant guess, not robustness."])
    return lines


def render_markdown(verdicts: Sequence[Verdict], level: int = 2) -> str:
    """The verdicts as a Markdown section (store strings escaped with ``md_text``)."""
    from encshield.report.markdown import md_text

    def text(line: Line) -> str:
        """The line as Markdown, store strings escaped."""
        return "".join(md_text(p) if isinstance(p, _Name) else p for p in line)

    out = [f"{'#' * level} Verdict", "",
           ("Computed from the result tables: means over seeds as in the tables; changes in "
            "percentage points against the model without defense."), ""]
    for verdict in verdicts:
        title, facts = _title(verdict)
        out += [f"{'#' * (level + 1)} {text(title)}", "", f"{facts[0].upper()}{facts[1:]}.", ""]
        out += [f"- {text(line)}" for line in verdict_lines(verdict)]
        out += [f"  - {text(line)}" for line in cost_lines(verdict)]
        out += [f"- {text(line)}" for line in caveat_lines(verdict)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_html(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as an HTML section (every string escaped)."""
    def text(line: Line) -> str:
        """The line as HTML, store strings escaped and emphasised."""
        return "".join(f"<strong>{escape(p)}</strong>" if isinstance(p, _Name) else escape(p)
                       for p in line)

    out = ['<section class="verdict"><h2>Verdict</h2><p>Computed from the result tables: means '
           "over seeds as in the tables; changes in percentage points against the model without "
           "defense.</p>"]
    for verdict in verdicts:
        title, facts = _title(verdict)
        items = [f"<li>{text(line)}</li>" for line in verdict_lines(verdict)]
        costs = "".join(f"<li>{text(line)}</li>" for line in cost_lines(verdict))
        if costs:
            items[-1] = items[-1][:-5] + f"<ul>{costs}</ul></li>"
        items += [f'<li class="caveat">{text(line)}</li>' for line in caveat_lines(verdict)]
        out.append(f"<h3>{text(title)}</h3><p class=\"muted\">{escape(facts)}</p>"
                   f"<ul>{''.join(items)}</ul>")
    out.append("</section>")
    return "".join(out)
