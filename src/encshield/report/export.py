"""Machine-readable exports: CSV of the raw metric rows and of the aggregated table, and JSON.

``report.json`` holds the bench config, every cell (id, kind, title, params, deps, config hash,
result without its bulky parts, artifacts, versions, machine, device, wall time, finish time),
the aggregated tables and the verdict per table
(:meth:`encshield.report.verdict.Verdict.to_dict`: best BA, best worst-case RA per threat model,
each defense's BA change, training time and worst-case RA change against no defense, collapsed
defenses). Bulky parts are per-sample predictions and long lists (e.g. per-step losses), which
are replaced by a short summary; the store keeps the full values.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from encshield.budgets import format_budget
from encshield.provenance import to_jsonable
from encshield.report.aggregate import METRICS, AggregateRow, ResultTable, short_name, slug

if TYPE_CHECKING:
    from encshield.report import ReportData

__all__ = [
    "AGGREGATE_COLUMNS",
    "JSON_SCHEMA_VERSION",
    "MAX_LIST",
    "aggregate_csv",
    "metrics_csv",
    "report_json",
    "report_json_text",
    "robustbench_entries",
    "slim",
]

JSON_SCHEMA_VERSION = 1
MAX_LIST = 32
"""Lists longer than this are summarised in ``report.json``."""

_BULKY_KEYS = frozenset({"per_sample"})

AGGREGATE_COLUMNS = (
    "encoder", "dataset", "defense", "row", "kind", "attack", "eps", "n_seeds", "seeds",
    "num_samples",
    *(f"{metric}_{part}" for metric in METRICS for part in ("mean", "std", "min", "max")),
)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


def metrics_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """The raw ``metrics`` rows of the store (one per evaluate cell and attack row), as CSV."""
    from encshield.bench.store import METRIC_COLUMNS

    return _csv(METRIC_COLUMNS, ([row.get(c) for c in METRIC_COLUMNS] for row in rows))


def _aggregate_values(row: AggregateRow) -> list[Any]:
    values: list[Any] = [row.encoder, row.dataset, row.defense, row.row, row.kind, row.attack,
                         row.eps, row.n_seeds, " ".join(map(str, row.seeds)), row.num_samples]
    for metric in METRICS:
        stat = row.stat(metric)
        values += [None, None, None, None] if stat is None else [
            stat.mean, stat.std, stat.min, stat.max]
    return values


def aggregate_csv(rows: Iterable[AggregateRow]) -> str:
    """The aggregated rows (mean, sample std, min, max over seeds per metric), as CSV."""
    return _csv(AGGREGATE_COLUMNS, (_aggregate_values(row) for row in rows))


def slim(value: Any) -> Any:
    """``value`` without bulky parts: per-sample data dropped, lists over :data:`MAX_LIST` items
    summarised as ``{"omitted": "list of N items", "first": ..., "last": ...}``."""
    if isinstance(value, Mapping):
        return {k: slim(v) for k, v in value.items() if k not in _BULKY_KEYS}
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST:
            return {"omitted": f"list of {len(value)} items", "first": slim(value[0]),
                    "last": slim(value[-1])}
        return [slim(v) for v in value]
    return value


def _cell_json(cell: Any) -> dict[str, Any]:
    return {
        "id": cell.id, "kind": cell.kind, "title": cell.title, "params": cell.params,
        "deps": cell.deps, "config_hash": cell.config_hash, "result": slim(cell.result),
        "artifacts": cell.artifacts, "versions": cell.versions, "machine": cell.machine,
        "device": cell.device, "wall_time_s": cell.wall_time_s, "finished": cell.finished,
    }


def _table_json(table: ResultTable) -> dict[str, Any]:
    return {
        "encoder": table.encoder, "dataset": table.dataset, "defenses": list(table.defenses),
        "seeds": list(table.seeds),
        "columns": [{"row": c.row, "kind": c.kind, "attack": c.attack, "eps": c.eps}
                    for c in table.columns],
        "rows": [row.to_dict() for d in table.defenses for c in table.columns
                 if (row := table.get(d, c.row)) is not None],
    }


def report_json(data: ReportData) -> dict[str, Any]:
    """The JSON document of ``report.json`` (see the module docstring)."""
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "name": data.name,
        "store": str(data.db_path),
        "created": data.created,
        "generated": data.generated,
        "total_wall_time_s": data.total_wall_time_s,
        "encoders": data.encoders,
        "config": data.config,
        "cells": [_cell_json(cell) for cell in data.cells],
        "tables": [_table_json(table) for table in data.tables],
        "verdict": [verdict.to_dict() for verdict in data.verdicts],
    }


def report_json_text(data: ReportData) -> str:
    """:func:`report_json` as indented, standard JSON text (no ``NaN``)."""

    return json.dumps(to_jsonable(report_json(data)), indent=2, default=str,
                      allow_nan=False) + "\n"


def robustbench_entries(data: ReportData) -> dict[str, dict[str, Any]]:
    """One leaderboard entry per (encoder, defense, dataset), in RobustBench's fields.

    ``name, venue, architecture, eps, clean_acc, reported, autoattack_acc`` (accuracies in
    percent as strings with two decimals, as RobustBench's model cards; ``autoattack_acc`` from
    an ``autoattack`` white-box row when the bench ran one, else ``null``; ``eps`` that row's
    budget, else the first white-box row's), plus encshield's own fields: the encoder, dataset,
    seeds, the per-sample worst-case RAs and every row's mean RA. Keyed by a file-system safe
    ``encoder-defense-dataset`` name.
    """
    out: dict[str, dict[str, Any]] = {}
    for table in data.tables:
        for defense in table.defenses:
            rows = {c.row: table.get(defense, c.row) for c in table.columns}
            clean = next((r for c, r in zip(table.columns, rows.values())
                          if c.kind == "clean" and r is not None), None)
            whitebox = [(c, rows[c.row]) for c in table.columns
                        if c.kind == "whitebox" and rows.get(c.row) is not None]
            auto = next(((c, r) for c, r in whitebox if c.attack == "autoattack"), None)
            budget = (auto or (whitebox[0] if whitebox else (None, None)))[0]

            def mean(row: AggregateRow | None, metric: str = "robust_accuracy") -> float | None:
                stat = row.stat(metric) if row is not None else None
                return None if stat is None else stat.mean

            def pct(value: float | None) -> str | None:
                return None if value is None else f"{100 * value:.2f}"

            key = slug(f"{short_name(table.encoder)}-{defense}-{table.dataset}")
            out[key] = {
                "name": f"{defense} on {short_name(table.encoder)}",
                "venue": "encshield bench",
                "architecture": "encoder + downstream head",
                "eps": None if budget is None or budget.eps is None else format_budget(budget.eps),
                "clean_acc": pct(mean(clean, "benign_accuracy")),
                "reported": None,
                "autoattack_acc": None if auto is None else pct(mean(auto[1])),
                "encoder": table.encoder, "dataset": table.dataset, "defense": defense,
                "seeds": list(table.seeds), "threat_model": "Linf",
                "worst_case_dae_acc": pct(mean(rows.get("worst-case DAE"))),
                "worst_case_all_acc": pct(mean(rows.get("worst-case all"))),
                "robust_acc": {c.row: pct(mean(rows[c.row])) for c in table.attack_columns
                               if rows.get(c.row) is not None},
            }
    return out
