"""Example test images of the report: per attack row, clean and adversarial, with true label and
predictions under each.

An evaluate cell of the bench stores them as one PNG and a JSON sidecar (artifacts
``examples_png`` and ``examples``; written by :func:`encshield.bench.cells.write_examples`): the
class names and, per attack row and sample, its position in the test set, label, clean and
adversarial predictions and the pixel boxes of both images in the PNG. :func:`load_examples`
reads and checks them (a store may be damaged or hostile: paths outside the artifacts folder,
boxes outside the picture and malformed entries are never used); :func:`render_markdown` writes
one strip PNG per row (``images/``) with a caption table, :func:`render_html` embeds each pair as
base64 with its caption. One seed per (encoder, dataset, defense) is shown: the lowest.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from encshield.report.aggregate import ResultTable, short_name, slug

__all__ = ["ExampleRow", "ExampleSample", "ExampleSet", "load_examples", "pair_png",
           "render_html", "render_markdown", "row_strip", "write_strips"]

_FORMAT = "encshield-examples/1"
_MAX_SIDECAR = 1 << 20  # bytes: a sidecar is a few kB
_GAP, _PAIR_GAP, _SCALE = 2, 10, 3

Box = tuple[int, int, int, int]

#: How each row kind is introduced (threat model in brackets).
KIND_TEXT = {
    "universal": "universal attack fitted on the public encoder (downstream-agnostic)",
    "encoder_public": "per-sample attack on the public encoder, transferred (downstream-agnostic)",
    "encoder_deployed": "per-sample attack on the deployed encoder (adaptive)",
    "whitebox": "white-box attack on the deployed model (adaptive)",
}


@dataclass(frozen=True)
class ExampleSample:
    """One test sample of a row: position, label, predictions, and its two boxes in the PNG."""

    index: int
    label: int
    clean_pred: int
    adv_pred: int
    clean_box: Box
    adv_box: Box


@dataclass(frozen=True)
class ExampleRow:
    """The example samples of one attack row."""

    row: str
    kind: str
    samples: tuple[ExampleSample, ...]


@dataclass(frozen=True)
class ExampleSet:
    """The example images of one evaluate cell."""

    cell_id: str
    encoder: str
    dataset: str
    defense: str
    seed: int
    png: Path
    class_names: tuple[str, ...]
    rows: tuple[ExampleRow, ...]

    def name(self, label: int) -> str:
        """The class name of ``label`` (the number where the names do not cover it)."""
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def file_name(self, row: str) -> str:
        """A unique, file-system safe name for the strip of ``row``."""
        return (f"examples-{slug(short_name(self.encoder))}-{slug(self.defense)}-"
                f"{self.cell_id[:8]}-{slug(row)}.png")


# ------------------------------------------------------------------------------------ reading

def _int(value: Any) -> int | None:
    """``value`` when it is an int (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _box(value: Any, size: tuple[int, int]) -> Box | None:
    """``[x0, y0, x1, y1]`` inside a picture of ``size`` (width, height), else ``None``."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    x0, y0, x1, y1 = (_int(v) for v in value)
    if None in (x0, y0, x1, y1):
        return None
    assert x0 is not None and y0 is not None and x1 is not None and y1 is not None
    if not (0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]):
        return None
    return x0, y0, x1, y1


def _sample(entry: Any, size: tuple[int, int]) -> ExampleSample | None:
    """One checked sample entry of a sidecar (``None`` when malformed)."""
    if not isinstance(entry, dict):
        return None
    numbers = [_int(entry.get(k)) for k in ("index", "label", "clean_pred", "adv_pred")]
    clean, adv = _box(entry.get("clean_box"), size), _box(entry.get("adv_box"), size)
    if None in numbers or clean is None or adv is None:
        return None
    if (clean[2] - clean[0], clean[3] - clean[1]) != (adv[2] - adv[0], adv[3] - adv[1]):
        return None
    index, label, clean_pred, adv_pred = (int(n) for n in numbers)  # type: ignore[arg-type]
    return ExampleSample(index, label, clean_pred, adv_pred, clean, adv)


def _read_set(cell: Any, root: Path) -> ExampleSet | str | None:
    """The cell's :class:`ExampleSet`; a path (str) when its files are missing or unusable;
    ``None`` when the cell has no examples."""
    from PIL import Image

    from encshield.bench.store import safe_artifact_path

    side, png = cell.artifacts.get("examples"), cell.artifacts.get("examples_png")
    if not isinstance(side, dict) or not isinstance(png, dict):
        return None
    side_path = safe_artifact_path(root, side.get("path"))
    png_path = safe_artifact_path(root, png.get("path"))
    for artifact, path in ((side, side_path), (png, png_path)):
        if path is None or not path.is_file():  # outside the artifacts folder counts as missing
            return str(path or artifact.get("path"))
    if side_path is None or png_path is None:  # (checked above; for the type checker)
        return None
    try:
        if side_path.stat().st_size > _MAX_SIDECAR:
            return str(side_path)
        content = json.loads(side_path.read_text(encoding="utf-8"))
        with Image.open(png_path) as image:
            size = image.size
    except (OSError, ValueError):
        return str(side_path)
    if not isinstance(content, dict) or content.get("format") != _FORMAT:
        return str(side_path)
    rows = []
    for entry in content.get("rows") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("samples"), list):
            continue
        samples = tuple(s for e in entry["samples"] if (s := _sample(e, size)) is not None)
        if samples:
            rows.append(ExampleRow(str(entry.get("row")), str(entry.get("kind") or ""), samples))
    names = content.get("class_names")
    result = cell.result if isinstance(cell.result, dict) else {}
    return ExampleSet(
        cell_id=str(cell.id), encoder=str(result.get("encoder", "")),
        dataset=str(result.get("dataset", "")), defense=str(result.get("defense", "")),
        seed=_int(result.get("seed")) or 0, png=png_path,
        class_names=tuple(str(n) for n in names) if isinstance(names, list) else (),
        rows=tuple(rows))


def load_examples(cells: Iterable[Any], root: Path,
                  tables: Sequence[ResultTable] = ()) -> tuple[list[ExampleSet], list[str]]:
    """The example sets of the evaluate cells (the lowest seed per encoder, dataset and
    defense, in table order) and the paths of example files missing or unusable."""
    found: dict[tuple[str, str, str], ExampleSet] = {}
    missing: list[str] = []
    for cell in cells:
        if cell.kind != "evaluate":
            continue
        read = _read_set(cell, root)
        if isinstance(read, str):
            missing.append(read)
        elif read is not None and read.rows:
            key = (read.encoder, read.dataset, read.defense)
            if key not in found or read.seed < found[key].seed:
                found[key] = read
    order = {(t.encoder, t.dataset): i for i, t in enumerate(tables)}
    defenses = {(t.encoder, t.dataset, d): i for t in tables for i, d in enumerate(t.defenses)}
    sets = sorted(found.values(), key=lambda s: (
        order.get((s.encoder, s.dataset), len(order)), s.encoder, s.dataset,
        defenses.get((s.encoder, s.dataset, s.defense), len(defenses)), s.defense))
    return sets, missing


# ----------------------------------------------------------------------------------- pictures

def _compose(example: ExampleSet, samples: Sequence[ExampleSample], scale: int) -> Any:
    """Clean/adversarial pairs side by side (pairs apart), cut from the stored PNG."""
    from PIL import Image

    first = samples[0].clean_box
    width, height = first[2] - first[0], first[3] - first[1]
    pair = 2 * width + _GAP
    with Image.open(example.png) as opened:
        source = opened.convert("RGB")
    canvas = Image.new("RGB", (len(samples) * (pair + _PAIR_GAP) - _PAIR_GAP, height),
                       (255, 255, 255))
    for i, sample in enumerate(samples):
        x = i * (pair + _PAIR_GAP)
        for box, dx in ((sample.clean_box, 0), (sample.adv_box, width + _GAP)):
            tile = source.crop(box)
            if tile.size != (width, height):
                tile = tile.resize((width, height), Image.Resampling.NEAREST)
            canvas.paste(tile, (x + dx, 0))
    if scale > 1:
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale),
                               Image.Resampling.NEAREST)
    return canvas


def _png_bytes(image: Any) -> bytes:
    """A PIL image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def row_strip(example: ExampleSet, row: ExampleRow, scale: int = _SCALE) -> bytes:
    """PNG bytes of one row's pairs (clean left, adversarial right), enlarged ``scale`` times."""
    return _png_bytes(_compose(example, row.samples, scale))


def pair_png(example: ExampleSet, sample: ExampleSample) -> bytes:
    """PNG bytes of one sample's clean and adversarial image side by side (native size)."""
    return _png_bytes(_compose(example, [sample], 1))


def write_strips(sets: Sequence[ExampleSet], folder: Path) -> dict[tuple[str, str], str]:
    """Write every row strip into ``folder``; ``{(cell id, row): file name}``. A PNG that
    cannot be read is left out (its rows then show no picture)."""
    from encshield.provenance import atomic_write

    written: dict[tuple[str, str], str] = {}
    for example in sets:
        for row in example.rows:
            try:
                data = row_strip(example, row)
            except (OSError, ValueError):
                continue
            atomic_write(folder / example.file_name(row.row), data)
            written[(example.cell_id, row.row)] = example.file_name(row.row)
    return written


# ---------------------------------------------------------------------------------- rendering

def _mark(prediction: int, label: int) -> str:
    """A check mark for a correct prediction, a cross for a wrong one."""
    return "\u2713" if prediction == label else "\u2717"


def _intro(example: ExampleSet) -> str:
    """Which model and seed a set of examples comes from, in words."""
    return (f"{short_name(example.encoder)} on {example.dataset}, defense {example.defense}, "
            f"seed {example.seed}")


def render_markdown(sets: Sequence[ExampleSet], files: dict[tuple[str, str], str],
                    missing: Sequence[str] = (), level: int = 2) -> list[str]:
    """The Markdown section (lines): per set and attack row its strip (``images/NAME``) and a
    table of true labels and predictions under each pair."""
    from encshield.report.markdown import Markup, markdown_table, md_code, md_text

    if not sets and not missing:
        return []
    out = [f"{'#' * level} Example test images", "",
           ("The first test samples of every attack row (of its subset for rows on a subset): "
            "each pair is the clean image (left) and the adversarial one (right); under each, "
            "the true label and the predictions (\u2713 correct, \u2717 wrong)."), ""]
    for example in sets:
        out += [f"{'#' * (level + 1)} {md_text(_intro(example))}", ""]
        for row in example.rows:
            kind = KIND_TEXT.get(row.kind, row.kind)
            out += [f"{md_code(row.row)}: {md_text(kind)}", ""]
            name = files.get((example.cell_id, row.row))
            if name is not None:
                out += [f"![{md_text(row.row)}: clean and adversarial](images/{name})", ""]
            headers = ["", *(f"sample {s.index}" for s in row.samples)]
            lines = [
                ["true label", *(example.name(s.label) for s in row.samples)],
                ["clean \u2192", *(Markup(md_text(example.name(s.clean_pred)) + " "
                                          + _mark(s.clean_pred, s.label)) for s in row.samples)],
                ["adversarial \u2192", *(Markup(md_text(example.name(s.adv_pred)) + " "
                                                + _mark(s.adv_pred, s.label))
                                         for s in row.samples)]]
            out += [markdown_table(headers, lines, 99), ""]
    if missing:
        out += ["Missing or unusable example files (not shown): "
                + ", ".join(md_code(p) for p in missing), ""]
    return out


def _figure(example: ExampleSet, sample: ExampleSample, row: str) -> str:
    """One pair (base64 PNG) with its caption: label and both predictions."""
    try:
        payload = base64.b64encode(pair_png(example, sample)).decode("ascii")
    except (OSError, ValueError) as error:
        return f'<figure><p class="muted">unreadable: {escape(str(error))}</p></figure>'
    label = example.name(sample.label)
    caption = (f"label <strong>{escape(label)}</strong><br>"
               f"clean \u2192 {escape(example.name(sample.clean_pred))} "
               f"{_mark(sample.clean_pred, sample.label)}<br>"
               f"adversarial \u2192 {escape(example.name(sample.adv_pred))} "
               f"{_mark(sample.adv_pred, sample.label)}")
    alt = f"test sample {sample.index} ({label}), clean and under {row}"
    return (f'<figure><img class="pair" src="data:image/png;base64,{payload}" '
            f'alt="{escape(alt, quote=True)}"><figcaption>{caption}</figcaption></figure>')


def render_html(sets: Sequence[ExampleSet], missing: Sequence[str] = ()) -> str:
    """The HTML section: per set and attack row, a strip of pairs with their captions."""
    if not sets and not missing:
        return ""
    out = ["<section><h2>Example test images</h2><p>The first test samples of every attack row "
           "(of its subset for rows on a subset): clean image (left) and adversarial image "
           "(right), with the true label and both predictions (\u2713 correct, \u2717 wrong)."
           "</p>"]
    for example in sets:
        out.append(f"<h3>{escape(_intro(example))}</h3>")
        for row in example.rows:
            kind = KIND_TEXT.get(row.kind, row.kind)
            out.append(f"<h4><code>{escape(row.row)}</code>: {escape(kind)}</h4>"
                       '<div class="gallery examples">'
                       + "".join(_figure(example, s, row.row) for s in row.samples) + "</div>")
    if missing:
        out.append('<p class="muted">Missing or unusable example files: '
                   + ", ".join(f"<code>{escape(p)}</code>" for p in missing) + "</p>")
    out.append("</section>")
    return "".join(out)
