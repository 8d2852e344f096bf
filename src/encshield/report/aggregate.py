"""Pure aggregation of the bench's metric rows into report tables.

Input: the rows of the store's ``metrics`` table (one per evaluate cell x attack row, see
:data:`encshield.bench.store.METRIC_COLUMNS`) and the bench config dict. Output:

* :class:`AggregateRow`: one per (encoder, dataset, defense, row) with, for every metric of
  :data:`METRICS`, a :class:`Stat` over the seeds (mean, sample standard deviation or ``None`` with
  one seed, number of seeds, min, max);
* :class:`ResultTable`: one per (encoder, dataset), with its defenses and attack columns in report
  order (clean first, universal attacks in config order and by budget, then encoder attacks,
  then white-box attacks; defenses in config order).

Nothing here touches files; :mod:`encshield.report` reads the store and calls these functions.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KIND_ORDER",
    "METRICS",
    "THREAT_MODELS",
    "backdoor_matrix",
    "AggregateRow",
    "Column",
    "ResultTable",
    "Stat",
    "aggregate",
    "budget_series",
    "build_tables",
    "fooling_matrix",
    "format_duration",
    "format_percent",
    "format_stat",
    "short_name",
    "slug",
    "summarize",
    "table_matrix",
    "universal_base",
]

METRICS = ("benign_accuracy", "robust_accuracy", "fooling_rate", "attack_success_rate",
           "target_hit_rate")
"""The metric columns aggregated over seeds (fractions in [0, 1] or ``None``)."""

KIND_ORDER = {"clean": 0, "universal": 1, "encoder_public": 2, "encoder_deployed": 3,
              "whitebox": 4, "backdoor": 5, "worst_case": 7}
"""Rank of a row kind in the tables: the downstream-agnostic rows (crafted on the public
encoder), then the adaptive ones (on the deployed model), then unknown kinds
(:data:`_UNKNOWN_KIND`), and always last the per-sample worst cases."""

_UNKNOWN_KIND = 6

#: Row kinds by threat model, in table order (see :mod:`encshield.evaluation.specs`).
THREAT_MODELS = {
    "downstream-agnostic (crafted on the public encoder)": ("universal", "encoder_public"),
    "adaptive (on the deployed model)": ("encoder_deployed", "whitebox"),
    "backdoor trigger (planted in the public encoder)": ("backdoor",),
    "per-sample worst case": ("worst_case",),
}

_LAST = 10**9


@dataclass(frozen=True)
class Stat:
    """A metric over seeds: mean, sample std (``None`` with one value), count, min and max."""

    mean: float
    std: float | None
    n: int
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class AggregateRow:
    """One (encoder, dataset, defense, row) cell of a report table, aggregated over seeds."""

    encoder: str
    dataset: str
    defense: str
    row: str
    kind: str
    attack: str | None
    eps: float | None
    seeds: tuple[int, ...]
    num_samples: int
    stats: Mapping[str, Stat | None]

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def stat(self, metric: str) -> Stat | None:
        return self.stats.get(metric)

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-ready dict (metric stats nested by metric name)."""
        return {
            "encoder": self.encoder, "dataset": self.dataset, "defense": self.defense,
            "row": self.row, "kind": self.kind, "attack": self.attack, "eps": self.eps,
            "seeds": list(self.seeds), "n_seeds": self.n_seeds, "num_samples": self.num_samples,
            **{m: (s.to_dict() if (s := self.stats.get(m)) else None) for m in METRICS},
        }


@dataclass(frozen=True)
class Column:
    """An attack column of a table: the metric row's name, kind, attack name and budget."""

    row: str
    kind: str
    attack: str | None
    eps: float | None


@dataclass
class ResultTable:
    """The results of one encoder on one dataset: defenses x columns (clean row first)."""

    encoder: str
    dataset: str
    defenses: list[str]
    columns: list[Column]
    cells: dict[tuple[str, str], AggregateRow] = field(default_factory=dict)

    def get(self, defense: str, row: str) -> AggregateRow | None:
        return self.cells.get((defense, row))

    @property
    def attack_columns(self) -> list[Column]:
        """The columns other than ``clean`` (its BA is the table's first column)."""
        return [c for c in self.columns if c.kind != "clean"]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({s for row in self.cells.values() for s in row.seeds}))

    @property
    def seeds_note(self) -> str:
        """What the numbers are over the seeds: ``one seed (0)`` or ``mean ± sample std over 2
        seeds (0, 1)``."""
        seeds = self.seeds
        if len(seeds) == 1:
            return f"one seed ({seeds[0]})"
        return f"mean ± sample std over {len(seeds)} seeds ({', '.join(map(str, seeds))})"


# ---------------------------------------------------------------------------------- statistics

def summarize(values: Iterable[float | None]) -> Stat | None:
    """Mean, sample std (``None`` for one value), count, min, max of the non-``None`` values."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else None
    return Stat(statistics.fmean(present), std, len(present), min(present), max(present))


def aggregate(rows: Iterable[Mapping[str, Any]],
              config: Mapping[str, Any] | None = None) -> list[AggregateRow]:
    """Group metric rows by (encoder, dataset, defense, row) and summarise every metric.

    Returns the groups in report order (see :func:`build_tables`).
    """
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (str(row["encoder"]), str(row["dataset"]), str(row["defense"]), str(row["row"]))
        groups.setdefault(key, []).append(row)
    out = [_aggregate_group(key, members) for key, members in groups.items()]
    order = _Order(config or {})
    return sorted(out, key=order.key)


def _aggregate_group(key: tuple[str, str, str, str],
                     members: Sequence[Mapping[str, Any]]) -> AggregateRow:
    first = members[0]
    seeds = tuple(sorted(int(m["seed"]) for m in members))
    return AggregateRow(
        encoder=key[0], dataset=key[1], defense=key[2], row=key[3], kind=str(first["kind"]),
        attack=first.get("attack"), eps=first.get("eps"), seeds=seeds,
        num_samples=int(min(int(m.get("num_samples") or 0) for m in members)),
        stats={metric: summarize(m.get(metric) for m in members) for metric in METRICS},
    )


# ------------------------------------------------------------------------------------ ordering

def universal_base(row: str) -> str:
    """``uap@10`` -> ``uap`` (the attack row of a budget sweep), ``uap`` -> ``uap``."""
    return row.split("@", 1)[0]


def _entry_name(entry: Any) -> str:
    """A config entry (``"uap"`` or ``{"name", "label", ...}``) -> its row name."""
    if isinstance(entry, Mapping):
        return str(entry.get("label") or entry.get("name"))
    return str(entry)


def _index(names: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def _whitebox_index(texts: Sequence[str]) -> dict[str, int]:
    """Config position of a white-box row: by its spec text or ``label=``, else by the attack
    name (``name:pgd``; stored rows use the canonical spec text, which may differ from the
    config's spelling, e.g. ``eps=0.0314`` vs ``eps=8/255``)."""
    index: dict[str, int] = {}
    for i, text in enumerate(texts):
        index.setdefault(text, i)
        name, _, options = text.partition(":")
        index.setdefault(f"name:{name.strip()}", i)
        for option in options.split(","):
            key, _, value = option.partition("=")
            if key.strip() == "label" and value.strip():
                index.setdefault(value.strip(), i)
    return index


class _Order:
    """Sort keys following the bench config; names the config does not know sort by name."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.encoders = _index([str(e) for e in config.get("encoders") or []])
        self.datasets = _index([_entry_name(d) for d in config.get("datasets") or []])
        self.defenses = _index([_entry_name(d) for d in config.get("defenses") or []])
        self.attacks = _index([_entry_name(a) for a in config.get("attacks") or []])
        self.attack_names = _index([str(a.get("name")) if isinstance(a, Mapping) else str(a)
                                    for a in config.get("attacks") or []])
        self.whitebox = _whitebox_index([str(w) for w in config.get("whitebox") or []])

    def encoder(self, name: str) -> tuple[int, str]:
        return self.encoders.get(name, _LAST), name

    def dataset(self, name: str) -> tuple[int, str]:
        return self.datasets.get(name, _LAST), name

    def defense(self, name: str) -> tuple[int, str]:
        return self.defenses.get(name, _LAST), name

    def column(self, row: str, kind: str, attack: str | None,
               eps: float | None) -> tuple[int, int, float, str]:
        rank = KIND_ORDER.get(kind, _UNKNOWN_KIND)
        if kind == "universal":
            base = universal_base(row)
            index = self.attacks.get(base, self.attack_names.get(attack or "", _LAST))
        else:
            index = self.whitebox.get(row, self.whitebox.get(f"name:{attack}", _LAST))
        return rank, index, eps if eps is not None else 0.0, row

    def key(self, row: AggregateRow) -> tuple[Any, ...]:
        return (self.encoder(row.encoder), self.dataset(row.dataset), self.defense(row.defense),
                self.column(row.row, row.kind, row.attack, row.eps))


def build_tables(rows: Sequence[AggregateRow],
                 config: Mapping[str, Any] | None = None) -> list[ResultTable]:
    """One :class:`ResultTable` per (encoder, dataset), encoders and datasets in config order."""
    order = _Order(config or {})
    tables: dict[tuple[str, str], ResultTable] = {}
    columns: dict[tuple[str, str], dict[str, Column]] = {}
    for row in rows:
        key = (row.encoder, row.dataset)
        table = tables.setdefault(key, ResultTable(row.encoder, row.dataset, [], []))
        if row.defense not in table.defenses:
            table.defenses.append(row.defense)
        column = Column(row.row, row.kind, row.attack, row.eps)
        columns.setdefault(key, {}).setdefault(row.row, column)
        table.cells[(row.defense, row.row)] = row
    for key, table in tables.items():
        table.defenses.sort(key=order.defense)
        table.columns = sorted(columns[key].values(),
                               key=lambda c: order.column(c.row, c.kind, c.attack, c.eps))
    keys = sorted(tables, key=lambda k: (order.encoder(k[0]), order.dataset(k[1])))
    return [tables[k] for k in keys]


def budget_series(table: ResultTable) -> dict[str, list[Column]]:
    """Universal attacks evaluated at more than one budget: ``{base row: columns by eps}``."""
    series: dict[str, list[Column]] = {}
    for column in table.columns:
        if column.kind == "universal" and column.eps is not None:
            series.setdefault(universal_base(column.row), []).append(column)
    return {base: sorted(cols, key=lambda c: c.eps or 0.0) for base, cols in series.items()
            if len({c.eps for c in cols}) > 1}


# ---------------------------------------------------------------------------------- formatting

def format_percent(value: float | None, digits: int = 1) -> str:
    """``0.8234`` -> ``"82.3"``; ``None`` -> ``"-"``."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def format_stat(stat: Stat | None, digits: int = 1) -> str:
    """``"mean ± std"`` in percent (just ``"mean"`` with one seed; ``"-"`` when missing)."""
    if stat is None:
        return "-"
    if stat.std is None:
        return format_percent(stat.mean, digits)
    return f"{format_percent(stat.mean, digits)} ± {format_percent(stat.std, digits)}"


def format_duration(seconds: float) -> str:
    """``3723.4`` -> ``"1 h 02 min 03 s"``, ``12.34`` -> ``"12.3 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"


def short_name(spec: str) -> str:
    """An encoder spec for titles: ``zoo:NAME`` stays, a checkpoint path becomes its file name."""
    if spec.startswith("zoo:") or ("/" not in spec and "\\" not in spec):
        return spec
    return spec.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def slug(text: str) -> str:
    """A file-system safe version of ``text`` (letters, digits, ``.``, ``_``, ``-``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text)
    return cleaned.strip("-.") or "x"


def table_matrix(table: ResultTable) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a result table: defense, BA, then RA under every attack column.

    Cells read ``mean ± std`` in percent (``mean`` alone with one seed, ``-`` when missing).
    """
    clean = next((c for c in table.columns if c.kind == "clean"), None)
    headers = ["defense", "BA", *(c.row for c in table.attack_columns)]
    rows = []
    for defense in table.defenses:
        base = table.get(defense, clean.row) if clean else None
        cells = [format_stat(base.stat("benign_accuracy") if base else None)]
        for column in table.attack_columns:
            row = table.get(defense, column.row)
            cells.append(format_stat(row.stat("robust_accuracy") if row else None))
        rows.append([defense, *cells])
    return headers, rows


def backdoor_matrix(table: ResultTable) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of BadEncoder's ASR (share of all triggered test images classified as the
    target) per defense and backdoor column, after the BA; ``None`` without backdoor rows."""
    clean = next((c for c in table.columns if c.kind == "clean"), None)
    columns = [c for c in table.attack_columns if c.kind == "backdoor"]
    if not columns:
        return None
    rows = []
    for defense in table.defenses:
        base = table.get(defense, clean.row) if clean else None
        stats = [(r.stat("target_hit_rate") if (r := table.get(defense, c.row)) else None)
                 for c in columns]
        rows.append([defense, format_stat(base.stat("benign_accuracy") if base else None),
                     *(format_stat(s) for s in stats)])
    return ["defense", "BA", *(f"ASR {c.row}" for c in columns)], rows


def fooling_matrix(table: ResultTable) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of the fooling rates per defense and attack (``None``: no fooling rates)."""
    columns = table.attack_columns
    found = False
    rows = []
    for defense in table.defenses:
        stats = [(r.stat("fooling_rate") if (r := table.get(defense, c.row)) else None)
                 for c in columns]
        found = found or any(s is not None for s in stats)
        rows.append([defense, *(format_stat(s) for s in stats)])
    return (["defense", *(c.row for c in columns)], rows) if found else None
