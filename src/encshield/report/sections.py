"""Report sections beyond the accuracy tables: DAE detection, inference cost and persistent
robustness (the questions ZePAD raises; Lei, Yang, Zhang, ICLR 2026; docs/methods.md, "ZePAD").

Each section is a list of :class:`Section` tables built from the store's cells (pure, no
files), rendered as Markdown (:func:`render_markdown`) and HTML (:func:`render_html`):

* **DAE detection** (evaluations whose model exposes a detector): per encoder x dataset, one
  row per defense x attack row with the detection accuracy at the threshold, TPR and FPR at it,
  AUROC and TPR at 5 % FPR on the clean + adversarial mix (means over seeds); then the
  threshold sweep (detection accuracy per threshold).
* **Inference cost**: per encoder x dataset and defense, milliseconds per image of the clean
  evaluation pass, branches and parameters, and the ratio to the ``none`` model.
* **Persistent robustness**: per encoder, rows *defense, fine-tuned on* and columns downstream
  datasets, each cell ``BA / RA / worst-case RA`` (RA: mean over the universal DAE rows;
  worst-case: the ``worst-case DAE`` row), means over seeds. "Fine-tuned on" is ZePAD's
  ``finetune_on`` (``downstream`` when unset), ``downstream`` for the other fine-tuning
  defenses and ``-`` for defenses that do not train the encoder.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from encshield.report.aggregate import format_percent, short_name

__all__ = ["Section", "build_sections", "render_html", "render_markdown"]

#: Defenses that do not train the encoder (their "fine-tuned on" is ``-``).
FROZEN_ENCODER = ("none", "ensemble_average")


@dataclass
class Section:
    """One table of a report section: heading, caption, headers and rows of strings."""

    group: str
    title: str
    caption: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _evaluations(cells: Sequence[Any]) -> list[tuple[Any, Any]]:
    """``(evaluate cell, its model cell or None)`` for every evaluate cell."""
    by_id = {c.id: c for c in cells}
    return [(c, by_id.get(c.deps[0]) if c.deps else None) for c in cells if c.kind == "evaluate"]


def _record(cell: Any) -> dict[str, Any]:
    record = cell.result.get("record") if isinstance(cell.result, dict) else None
    return record if isinstance(record, dict) else {}


def _identity(cell: Any) -> tuple[str, str, str, int]:
    r = cell.result
    return (str(r.get("encoder", "")), str(r.get("dataset", "")), str(r.get("defense", "")),
            int(r.get("seed", 0)))


def detection_sections(cells: Sequence[Any]) -> list[Section]:
    """Detection metrics and threshold sweeps (see the module docstring)."""
    points: dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]] = \
        defaultdict(lambda: defaultdict(list))
    for cell, _ in _evaluations(cells):
        detection = _record(cell).get("detection")
        if not isinstance(detection, dict):
            continue
        encoder, dataset, defense, _ = _identity(cell)
        for row, summary in (detection.get("rows") or {}).items():
            points[(encoder, dataset)][(defense, row)].append(summary)
    sections = []
    for (encoder, dataset), groups in points.items():
        title = f"{short_name(encoder)} on {dataset}"
        table = Section("DAE detection", title, (
            "Detection on the mix of each attack row's clean and adversarial inputs (each test "
            "sample once clean, once attacked), % (mean over seeds): accuracy, TPR and FPR at "
            "the detector's threshold, AUROC, and TPR at a false-positive rate of at most 5 %."),
            ["defense", "attack", "threshold", "accuracy", "TPR", "FPR", "AUROC",
             "TPR@5%FPR", "seeds"])
        sweep_thresholds = sorted({float(p["threshold"]) for runs in groups.values()
                                   for run in runs for p in run.get("sweep", [])})
        sweep = Section("DAE detection", f"{title}: threshold sweep", (
            "Detection accuracy (%) on the clean + adversarial mix per threshold (flag when "
            "the MPAE-BMP confidence gap exceeds it), mean over seeds."),
            ["defense", "attack", *(f"{t:g}" for t in sweep_thresholds)])
        for (defense, row), runs in groups.items():
            table.rows.append([defense, row, f"{_mean(r.get('threshold') for r in runs):g}",
                               *(format_percent(_mean(r.get(k) for r in runs)) for k in
                                 ("accuracy", "tpr", "fpr", "auroc", "tpr_at_fpr")),
                               str(len(runs))])
            by_threshold: dict[float, list[float]] = defaultdict(list)
            for run in runs:
                for p in run.get("sweep", []):
                    by_threshold[float(p["threshold"])].append(float(p["accuracy"]))
            sweep.rows.append([defense, row, *(format_percent(_mean(by_threshold.get(t, [])))
                                               for t in sweep_thresholds)])
        sections += [table, sweep]
    return sections


def cost_sections(cells: Sequence[Any]) -> list[Section]:
    """Inference cost per defense against the ``none`` model (see the module docstring)."""
    runs: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = \
        defaultdict(lambda: defaultdict(list))
    for cell, _ in _evaluations(cells):
        cost = _record(cell).get("cost")
        if isinstance(cost, dict):
            encoder, dataset, defense, _ = _identity(cell)
            runs[(encoder, dataset)][defense].append(cost)
    sections = []
    for (encoder, dataset), defenses in runs.items():
        base = _mean(c.get("inference_ms_per_image") for c in defenses.get("none", []))
        table = Section("Inference cost", f"{short_name(encoder)} on {dataset}", (
            "Milliseconds per test image of the clean evaluation pass (batched, inference "
            "mode, this machine), mean over seeds; ratio to the single-encoder no-defense "
            "model."), ["defense", "branches", "ms/image", "x none", "parameters"])
        for defense, costs in defenses.items():
            ms = _mean(c.get("inference_ms_per_image") for c in costs)
            ratio = "-" if ms is None or not base else f"{ms / base:.2f}"
            table.rows.append([defense, str(costs[0].get("branches", 1)),
                               "-" if ms is None else f"{ms:.3f}", ratio,
                               f"{int(costs[0].get('num_parameters', 0)):,}"])
        sections.append(table)
    return sections


def _finetuned_on(model: Any) -> str:
    """Where a model's encoder was fine-tuned (see the module docstring)."""
    resolved = (model.params.get("resolved") or {}) if model is not None else {}
    name, config = resolved.get("name"), resolved.get("config") or {}
    if "finetune_on" in config:
        return str(config["finetune_on"] or "downstream")
    return "-" if name in FROZEN_ENCODER else "downstream"


def persistence_sections(cells: Sequence[Any], metric_rows: Sequence[dict[str, Any]]
                         ) -> list[Section]:
    """The fine-tuned-on x downstream matrix (see the module docstring); shown when a model
    of the store has a ``finetune_on`` setting."""
    evaluations = _evaluations(cells)
    if not any(m is not None and "finetune_on" in ((m.params.get("resolved") or {})
                                                    .get("config") or {})
               for _, m in evaluations):
        return []
    origin = {c.id: _finetuned_on(m) for c, m in evaluations}
    by_cell: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    for row in metric_rows:
        values = by_cell[row["cell_id"]]
        if row["kind"] == "clean":
            values["ba"].append(row["benign_accuracy"])
        elif row["kind"] == "universal":
            values["ra"].append(row["robust_accuracy"])
        elif row["row"] == "worst-case DAE":
            values["wc"].append(row["robust_accuracy"])
    grid: dict[str, dict[tuple[str, str], dict[str, list[float]]]] = \
        defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    datasets: dict[str, list[str]] = defaultdict(list)
    for cell, _ in evaluations:
        encoder, dataset, defense, _ = _identity(cell)
        if cell.id not in by_cell:
            continue
        values = by_cell[cell.id]
        if dataset not in datasets[encoder]:
            datasets[encoder].append(dataset)
        entry = grid[encoder][(defense, origin[cell.id])]
        for key in ("ba", "ra", "wc"):
            mean = _mean(values.get(key, []))
            if mean is not None:
                entry[f"{dataset}/{key}"].append(mean)
    sections = []
    for encoder, rows in grid.items():
        table = Section("Persistent robustness", short_name(encoder), (
            "BA / RA / worst-case RA (%) per downstream dataset, mean over seeds. RA: mean over "
            "the universal DAE rows; worst-case: per sample over the DAE rows. Fine-tuned on: "
            "where the encoder(s) were adversarially fine-tuned (ZePAD: once, reused for every "
            "downstream dataset)."), ["defense", "fine-tuned on", *datasets[encoder]])
        for (defense, where), entry in rows.items():
            table.rows.append([defense, where, *(" / ".join(
                format_percent(_mean(entry.get(f"{d}/{k}", []))) for k in ("ba", "ra", "wc"))
                for d in datasets[encoder])])
        sections.append(table)
    return sections


def build_sections(cells: Sequence[Any], metric_rows: Sequence[dict[str, Any]]
                   ) -> list[Section]:
    """Every extra section of a report, in order: detection, cost, persistent robustness."""
    return [*detection_sections(cells), *cost_sections(cells),
            *persistence_sections(cells, metric_rows)]


def render_markdown(sections: Sequence[Section]) -> list[str]:
    """Markdown lines: one ``##`` heading per group, one ``###`` table per section."""
    from encshield.report.markdown import markdown_table, md_text

    out: list[str] = []
    group = None
    for section in sections:
        if section.group != group:
            group = section.group
            out += [f"## {md_text(group)}", ""]
        out += [f"### {md_text(section.title)}", "", md_text(section.caption), "",
                markdown_table(section.headers, section.rows,
                               numeric_from=2 if section.group != "Inference cost" else 1), ""]
    return out


def render_html(sections: Sequence[Section]) -> str:
    """HTML: one ``<section>`` per group, one captioned table per section (escaped)."""
    out: list[str] = []
    group = None
    for section in sections:
        if section.group != group:
            if group is not None:
                out.append("</section>")
            group = section.group
            out.append(f"<section><h2>{escape(group)}</h2>")
        head = "".join(f"<th>{escape(h)}</th>" for h in section.headers)
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
                       for row in section.rows)
        out.append(f"<h3>{escape(section.title)}</h3><table><caption>{escape(section.caption)}"
                   f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if group is not None:
        out.append("</section>")
    return "".join(out)
