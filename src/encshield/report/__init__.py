"""``encshield report``: tables, charts and exports of an ``encshield bench`` results store.

Usage from Python::

    from encshield.report import markdown_tables, write_report

    paths = write_report("results.db")            # -> {"md": ..., "html": ..., ...}
    print(markdown_tables("results.db"))          # the result tables as Markdown

:func:`load_report` reads a store (read-only) into a :class:`ReportData`;
:mod:`encshield.report.aggregate` turns its metric rows into per-seed statistics and tables,
:mod:`~encshield.report.verdict` into the verdict shown first (best BA, best worst-case RA, each
defense's cost and gain against no defense, collapsed defenses), and
:mod:`~encshield.report.examples` reads the evaluations' example images;
:mod:`~encshield.report.markdown`, :mod:`~encshield.report.html`, :mod:`~encshield.report.svg`
(with :mod:`~encshield.report.tradeoff`) and :mod:`~encshield.report.export` render them. The
HTML page is self-contained (images as base64, charts as inline SVG, inline CSS, no scripts, no
external resources).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encshield.errors import ConfigError
from encshield.provenance import atomic_write
from encshield.report.aggregate import (
    AggregateRow,
    ResultTable,
    aggregate,
    build_tables,
    short_name,
    slug,
)

if TYPE_CHECKING:
    from encshield.report.examples import ExampleSet
    from encshield.report.verdict import Verdict

__all__ = [
    "FORMATS",
    "PerturbationImage",
    "ReportData",
    "default_output_dir",
    "load_report",
    "markdown_tables",
    "verdict_markdown",
    "write_report",
]

FORMATS = ("md", "html", "csv", "json")
"""Output formats of :func:`write_report`."""


@dataclass(frozen=True)
class PerturbationImage:
    """The PNG of one fitted universal perturbation or patch (an ``attack`` cell's artifact)."""

    cell_id: str
    encoder: str
    row: str
    attack: str
    eps: float | None
    kind: str  # "additive", "patch" or "" (unknown)
    path: Path
    sha256: str

    @property
    def file_name(self) -> str:
        """A unique, file-system safe name for copies of the image."""
        return f"{slug(short_name(self.encoder))}-{slug(self.row)}-{self.cell_id[:8]}.png"


@dataclass
class ReportData:
    """Everything a report shows, read from one results store."""

    db_path: Path
    name: str
    config: dict[str, Any]
    created: str | None
    generated: str
    cells: list[Any]
    metric_rows: list[dict[str, Any]]
    aggregated: list[AggregateRow]
    tables: list[ResultTable]
    images: list[PerturbationImage] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    examples: list[ExampleSet] = field(default_factory=list)
    missing_examples: list[str] = field(default_factory=list)

    @property
    def total_wall_time_s(self) -> float:
        return float(sum(cell.wall_time_s for cell in self.cells))

    @property
    def cell_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cell in self.cells:
            counts[cell.kind] = counts.get(cell.kind, 0) + 1
        return counts

    @property
    def encoders(self) -> dict[str, str]:
        """``{encoder spec: sha256}`` of every encoder the cells name."""
        found: dict[str, str] = {}
        for cell in self.cells:
            enc = cell.params.get("encoder")
            if isinstance(enc, dict) and enc.get("spec"):
                found.setdefault(str(enc["spec"]), str(enc.get("sha256", "")))
        if not found:  # no cell names one: the config's specs, sha256 unknown
            found = {str(spec): "" for spec in self.config.get("encoders") or []}
        return found


def default_output_dir(db_path: str | os.PathLike[str]) -> Path:
    """``results.db`` -> ``results.report/`` next to it."""
    path = Path(db_path)
    return path.with_name(path.stem + ".report")


def _open_store(db_path: str | os.PathLike[str]) -> Any:
    from encshield.bench.store import ResultsStore

    return ResultsStore(db_path, readonly=True)


def load_report(source: Any) -> ReportData:
    """Read a results store (a path or an open :class:`~encshield.bench.store.ResultsStore`).

    Raises:
        ConfigError: the file is missing or not a results store, or holds no evaluation yet.
    """
    from encshield.bench.store import ResultsStore

    if isinstance(source, ResultsStore):
        return _read(source)
    with _open_store(source) as store:
        return _read(store)


def _read(store: Any) -> ReportData:
    config = store.meta("config") or {}
    if not isinstance(config, dict):
        config = {}
    cells = list(store.cells())
    rows = store.metrics()
    current = store.meta("cells")
    if current:  # a store resumed with a changed config keeps old cells: report the latest matrix
        keep = set(current)
        cells = [c for c in cells if c.id in keep]
        rows = [r for r in rows if r["cell_id"] in keep]
    if not rows:
        raise ConfigError(
            f"results store {store.path} holds no evaluation results yet ({len(cells)} finished "
            f"cell(s), none of them an evaluation with metrics); run `encshield bench --config "
            f"FILE` until at least one evaluate cell has finished, then report again")
    from encshield.report.examples import load_examples
    from encshield.report.verdict import compute_verdicts

    aggregated = aggregate(rows, config)
    tables = build_tables(aggregated, config)
    images, missing = _images(cells, store.artifacts)
    examples, missing_examples = load_examples(cells, store.artifacts, tables)
    return ReportData(
        db_path=Path(store.path), name=str(config.get("name") or Path(store.path).stem),
        config=config, created=store.meta("created"),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %z"), cells=cells, metric_rows=rows,
        aggregated=aggregated, tables=tables, images=images, missing_images=missing,
        verdicts=compute_verdicts(tables, cells), examples=examples,
        missing_examples=missing_examples)


def _images(cells: Iterable[Any], root: Path) -> tuple[list[PerturbationImage], list[str]]:
    """The PNGs of the attack cells, and the paths of those missing. A path the store names
    outside its artifacts folder (a damaged or hostile store) counts as missing: it is never
    read, so never copied into a report."""
    from encshield.bench.store import safe_artifact_path

    images: list[PerturbationImage] = []
    missing: list[str] = []
    for cell in cells:
        if cell.kind != "attack" or not isinstance(cell.artifacts.get("png"), dict):
            continue
        artifact = cell.artifacts["png"]
        path = safe_artifact_path(root, artifact.get("path"))
        if path is None or not path.is_file():
            missing.append(str(path or artifact.get("path")))
            continue
        params, result = cell.params, cell.result
        meta = result.get("perturbation") if isinstance(result.get("perturbation"), dict) else {}
        kind = meta.get("perturbation_kind")
        file = cell.artifacts.get("perturbation")
        source = safe_artifact_path(root, file.get("path")) if isinstance(file, dict) else None
        if not kind and source is not None:
            kind = _perturbation_kind(source)
        images.append(PerturbationImage(
            cell_id=cell.id, encoder=str((params.get("encoder") or {}).get("spec", "")),
            row=str(params.get("row") or result.get("row") or params.get("attack")),
            attack=str(params.get("attack") or result.get("attack")),
            eps=params.get("eps", result.get("eps")), kind=str(kind or ""), path=path,
            sha256=str(artifact.get("sha256", ""))))
    return images, missing


def _perturbation_kind(path: Path) -> str | None:
    """``additive`` or ``patch``, read from a perturbation file's safetensors header (no torch);
    ``None`` when the file is missing or not an encshield perturbation."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= 1 << 24:
                return None
            header = json.loads(handle.read(size))
        meta = json.loads(header["__metadata__"]["encshield"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kind = meta.get("perturbation_kind") if isinstance(meta, dict) else None
    return str(kind) if kind else None


def markdown_tables(source: Any) -> str:
    """The result tables (BA, RA per attack, fooling rate) of a store as Markdown text.

    ``source``: a results-store path, an open ``ResultsStore`` or a :class:`ReportData`.
    """
    from encshield.report.markdown import render_tables

    data = source if isinstance(source, ReportData) else load_report(source)
    return render_tables(data)


def verdict_markdown(source: Any) -> str:
    """The verdict of a store as Markdown text (the section that opens ``report.md``): best
    BA, best worst-case RA per threat model, each defense's cost and gain against no defense,
    and a caveat per collapsed defense.

    ``source``: a results-store path, an open ``ResultsStore`` or a :class:`ReportData`.
    """
    from encshield.report.verdict import render_markdown

    data = source if isinstance(source, ReportData) else load_report(source)
    return render_markdown(data.verdicts)


def write_report(db_path: str | os.PathLike[str] | ReportData,
                 output_dir: str | os.PathLike[str] | None = None,
                 formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Write the report of a results store; return ``{name: path}`` of the files written.

    Args:
        db_path: the results store (or an already loaded :class:`ReportData`).
        output_dir: default ``RESULTS.report/`` next to the store.
        formats: any of :data:`FORMATS`. ``md`` writes ``report.md`` plus ``images/*.png`` and
            ``charts/*.svg`` it links (the example strips too: ``images/examples-*.png``);
            ``html`` a self-contained ``report.html``; ``csv``
            ``metrics.csv`` (raw rows) and ``aggregate.csv``; ``json`` ``report.json`` and one
            ``robustbench/ENCODER-DEFENSE-DATASET.json`` per model in RobustBench's leaderboard
            fields.
    Returns:
        keys ``md``, ``html``, ``csv``, ``csv_aggregate``, ``json`` (those written).
    Raises:
        ConfigError: unknown format, unreadable or damaged store, no results in it, or the
            output folder cannot be written (permission denied, not a folder, disk full).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"report formats {list(formats)}: unknown or empty; choose from "
                          f"{', '.join(FORMATS)}")
    data = db_path if isinstance(db_path, ReportData) else load_report(db_path)
    out = Path(output_dir) if output_dir is not None else default_output_dir(data.db_path)
    try:
        return _write_formats(data, out, formats)
    except OSError as error:
        where = error.filename or out
        raise ConfigError(f"cannot write the report to {where}: "
                          f"{(error.strerror or str(error)).lower()}; pass another --output-dir"
                          ) from None


def _write_formats(data: ReportData, out: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Write ``formats`` into ``out`` (created); ``OSError`` for the caller to report."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if "md" in formats:
        written["md"] = _write_markdown(data, out)
    if "html" in formats:
        from encshield.report.html import render_html

        written["html"] = _write_text(out / "report.html", render_html(data))
    if "csv" in formats:
        from encshield.report.export import aggregate_csv, metrics_csv

        written["csv"] = _write_text(out / "metrics.csv", metrics_csv(data.metric_rows))
        written["csv_aggregate"] = _write_text(out / "aggregate.csv",
                                               aggregate_csv(data.aggregated))
    if "json" in formats:
        from encshield.report.export import report_json_text

        written["json"] = _write_text(out / "report.json", report_json_text(data))
        from encshield.provenance import dumps_strict
        from encshield.report.export import robustbench_entries

        for name, entry in robustbench_entries(data).items():  # one file per model
            written[f"robustbench:{name}"] = _write_text(
                out / "robustbench" / f"{name}.json", dumps_strict(entry) + "\n")
    return written


def _write_markdown(data: ReportData, out: Path) -> Path:
    from encshield.report.examples import write_strips
    from encshield.report.markdown import render_markdown
    from encshield.report.svg import report_charts

    (out / "images").mkdir(exist_ok=True)
    for image in data.images:
        shutil.copyfile(image.path, out / "images" / image.file_name)
    strips = write_strips(data.examples, out / "images")
    charts = report_charts(data.tables, data.verdicts)
    if charts:
        (out / "charts").mkdir(exist_ok=True)
    for chart in charts:
        _write_text(out / "charts" / chart.file_name, chart.svg)
    return _write_text(out / "report.md", render_markdown(data, charts, strips))


def _write_text(path: Path, text: str) -> Path:
    """Write atomically (temporary file + rename), so a reader never sees half a report."""
    return atomic_write(path, text)
