"""The answer a person reads: worst-case columns last, the verdict, the trade-off chart and the
example test images of a report.

A synthetic store like ``test_report.py``'s (written with :meth:`ResultsStore.add`): one encoder
on CIFAR-10 (10 classes), defenses ``none``, ``pgd_at`` (collapsed to chance) and ``genaf`` x two
seeds, two universal attacks, a white-box row and both per-sample worst-case rows. The example
images of the evaluate cells come from a real ``evaluate_classifier(..., examples=4)`` run on a
tiny model, written by the bench's own writer, so the report's captions can be checked against
the record's per-sample predictions. Kept apart from ``test_report.py`` (over 600 lines).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from encshield.attacks.perturbation import Perturbation
from encshield.bench.cells import write_examples
from encshield.bench.store import CellRecord, ResultsStore
from encshield.evaluation import evaluate_classifier
from encshield.evaluation.evaluate import examples_of
from encshield.evaluation.records import EvaluationRecord
from encshield.report import load_report, verdict_markdown, write_report
from encshield.report.aggregate import aggregate, build_tables, format_stat
from encshield.report.tradeoff import tradeoff_chart
from encshield.report.verdict import compute_verdict, render_markdown

SVG = "{http://www.w3.org/2000/svg}"
ENCODER = {"spec": "zoo:simclr-cifar10-r18w16", "sha256": "ab" * 32}
WHITEBOX = "pgd:eps=8/255,steps=10"
DATASET = {"name": "cifar10", "train_split": "train", "test_split": "test",
           "limit_train": 500, "limit_test": 200}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "<b>truck</b>"]  # a class name with markup: shown, never interpreted
CONFIG = {"name": "verdict-test", "encoders": [ENCODER["spec"]], "attacks": ["ssp", "pap"],
          "whitebox": [WHITEBOX], "defenses": ["none", "pgd_at", "genaf"],
          "datasets": [DATASET], "seeds": [0, 1]}
ROWS = [("clean", "clean"), ("ssp", "universal"), ("pap", "universal"), (WHITEBOX, "whitebox"),
        ("worst-case DAE", "worst_case"), ("worst-case all", "worst_case")]
# (defense, seed) -> BA, RA ssp, RA pap, RA pgd, worst-case DAE, worst-case all
ACCURACY = {
    ("none", 0): [0.60, 0.33, 0.36, 0.00, 0.22, 0.00],
    ("none", 1): [0.62, 0.35, 0.38, 0.02, 0.24, 0.02],
    ("pgd_at", 0): [0.105, 0.10, 0.10, 0.10, 0.10, 0.10],
    ("pgd_at", 1): [0.095, 0.10, 0.10, 0.10, 0.10, 0.10],
    ("genaf", 0): [0.46, 0.39, 0.40, 0.00, 0.32, 0.00],
    ("genaf", 1): [0.48, 0.41, 0.42, 0.04, 0.34, 0.04],
}
TIME_S = {"none": (15.0, 17.0), "pgd_at": (200.0, 210.0), "genaf": (330.0, 340.0)}
K = 4


def _cell(cell_id: str, kind: str, title: str, params: dict[str, Any], result: dict[str, Any],
          artifacts: dict[str, Any] | None = None, deps: list[str] | None = None,
          wall: float = 10.0) -> CellRecord:
    return CellRecord(
        id=cell_id, kind=kind, title=title, params=params, deps=deps or [],
        config_hash=f"hash-{cell_id}", result=result, artifacts=artifacts or {},
        versions={"encshield": "0.1.0"}, machine={"cpu": "test"}, device="cpu",
        wall_time_s=wall, finished="2025-01-01T12:00:00+0000")


def example_record(seed: int) -> EvaluationRecord:
    """A real evaluation with example images: a linear model on 8x8 images, one universal
    perturbation and a white-box row on a subset (a stand-in sign-gradient attack)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(40) % 10

    def sign_step(net: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, *, eps: float,
                  seed: int) -> torch.Tensor:
        xb = xb.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        (grad,) = torch.autograd.grad(loss, xb)
        return (xb + eps * grad.sign()).clamp(0, 1).detach()

    delta = (torch.rand(3, 8, 8) - 0.5) * 0.6
    return evaluate_classifier(
        model, x, y, perturbations={"ssp": Perturbation("additive", delta, eps=0.3)},
        whitebox=["sign:eps=32/255,limit=20"], whitebox_attacks={"sign": sign_step},
        batch_size=3, examples=K)


def _evaluation(store: ResultsStore, defense: str, seed: int,
                examples: EvaluationRecord | None) -> None:
    model_id = f"model-{defense}-{seed}"
    time_s = TIME_S[defense][seed]
    store.add(_cell(model_id, "model", f"{defense} seed {seed}", {
        "encoder": ENCODER, "defense": defense, "row": defense, "set": {}, "dataset": DATASET,
        "seed": seed, "image_size": None}, {"name": defense, "time_s": time_s, "seed": seed},
        {"model": {"path": f"models/{model_id}.safetensors", "sha256": "11"}}, wall=time_s + 1))
    cid = f"eval-{defense}-{seed}"
    rows = []
    for (name, kind), acc in zip(ROWS, ACCURACY[(defense, seed)], strict=True):
        rows.append({"cell_id": cid, "encoder": ENCODER["spec"], "dataset": "cifar10",
                     "defense": defense, "seed": seed, "row": name, "kind": kind,
                     "attack": {"universal": name, "whitebox": "pgd"}.get(kind),
                     "eps": 8 / 255 if kind in ("universal", "whitebox") else None,
                     "num_samples": 200, "benign_accuracy": ACCURACY[(defense, seed)][0],
                     "robust_accuracy": acc, "fooling_rate": None if kind == "clean" else 0.3,
                     "attack_success_rate": None})
    artifacts = {}
    if examples is not None:
        png, sidecar = f"examples/{cid}.png", f"examples/{cid}.json"
        write_examples(examples_of(examples), CLASSES, store.artifacts / png,
                       store.artifacts / sidecar)
        artifacts = {"examples_png": {"path": png, "sha256": "x"},
                     "examples": {"path": sidecar, "sha256": "y"}}
    record = {"config": {"dataset": {"name": "cifar10", "num_classes": 10}}, "metrics": {}}
    store.add(_cell(cid, "evaluate", f"evaluate {defense} seed {seed}", {"seed": seed}, {
        "encoder": ENCODER["spec"], "dataset": "cifar10", "defense": defense, "seed": seed,
        "rows": {}, "record": record}, artifacts, deps=[model_id], wall=20.0), rows)


def build_store(path: Path) -> dict[tuple[str, int], EvaluationRecord]:
    """The synthetic store at ``path``; returns the evaluations whose examples it holds."""
    records = {("genaf", 1): example_record(1), ("genaf", 0): example_record(0),
               ("none", 0): example_record(2)}
    with ResultsStore(path) as store:
        store.set_meta("config", CONFIG)
        for defense in ("none", "pgd_at", "genaf"):
            for seed in (1, 0):  # the higher seed first: the report still shows seed 0
                _evaluation(store, defense, seed, records.get((defense, seed)))
    return records


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("verdict") / "results.db"
    return path, build_store(path)


@pytest.fixture(scope="module")
def report_dir(store: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verdict-report")
    write_report(store[0], out)
    return out


def _mean(defense: str, column: int) -> float:
    return (ACCURACY[(defense, 0)][column] + ACCURACY[(defense, 1)][column]) / 2


# ------------------------------------------------------------------------ worst-case columns

def test_worst_case_columns_come_last_with_the_threat_model_note(store, report_dir) -> None:
    table = load_report(store[0]).tables[0]
    assert [c.row for c in table.attack_columns][-2:] == ["worst-case DAE", "worst-case all"]
    base = {"encoder": "e", "dataset": "d", "defense": "x", "seed": 0, "num_samples": 1,
            "benign_accuracy": 0.5, "robust_accuracy": 0.5, "fooling_rate": None,
            "attack_success_rate": None, "attack": None, "eps": None}
    odd = [dict(base, row=r, kind=k) for r, k in [("worst-case all", "worst_case"),
                                                  ("mystery", "new_kind"), ("clean", "clean")]]
    assert [c.row for c in build_tables(aggregate(odd))[0].columns] == [
        "clean", "mystery", "worst-case all"]  # even after a kind the report does not know
    md = (report_dir / "report.md").read_text()
    assert "per-sample worst case: `worst-case DAE`, `worst-case all`" in md
    assert "The worst-case columns come last" in md
    header = ("| defense | BA | ssp | pap | pgd:eps=8/255,steps=10 | worst-case DAE "
              "| worst-case all |")
    assert header in md
    page = (report_dir / "report.html").read_text()
    head = re.search(r"<thead>(.*?)</thead>", page).group(1)
    first_row = re.search(r"<tr>(.*?)</tr>", head).group(1)
    assert first_row.endswith('<th colspan="2" class="worst wc">per-sample worst case</th>')
    assert "adaptive (on the deployed model)</th>" in first_row
    assert page.count('<td class="num worst wc">') == 3 + 3  # accuracy + fooling rate tables


# ------------------------------------------------------------------------------------ verdict

def test_verdict_numbers_equal_the_tables(store) -> None:
    data = load_report(store[0])
    table, verdict = data.tables[0], data.verdicts[0]

    def cell(defense: str, row: str, metric: str = "robust_accuracy") -> str:
        return format_stat(table.get(defense, row).stat(metric))

    assert verdict.num_classes == 10 and verdict.baseline == "none"
    assert verdict.robust_rows == ["worst-case DAE", "worst-case all"]
    assert verdict.best_ba.defenses == ("none",)
    assert format_stat(verdict.best_ba.stat) == cell("none", "clean", "benign_accuracy") \
        == "61.0 ± 1.4"
    dae, everything = verdict.best_robust
    assert (dae.row, dae.defenses, dae.collapsed) == ("worst-case DAE", ("genaf",), False)
    assert format_stat(dae.stat) == cell("genaf", "worst-case DAE") == "33.0 ± 1.4"
    assert (everything.defenses, everything.collapsed, everything.others) == (
        ("pgd_at",), True, ("genaf",))  # the collapsed model "wins"; the verdict says so
    assert format_stat(everything.others_stat) == cell("genaf", "worst-case all") == "2.0 ± 2.8"
    genaf, pgd_at = verdict.cost("genaf"), verdict.cost("pgd_at")
    table_ba = {d: table.get(d, "clean").stat("benign_accuracy").mean for d in table.defenses}
    assert genaf.ba_change == pytest.approx(table_ba["genaf"] - table_ba["none"])
    assert genaf.ba_change == pytest.approx(_mean("genaf", 0) - _mean("none", 0))  # -14 points
    assert genaf.robust_change["worst-case DAE"] == pytest.approx(0.33 - 0.23)
    assert genaf.robust_change["worst-case all"] == pytest.approx(0.02 - 0.01)
    assert pgd_at.ba_change == pytest.approx(0.10 - 0.61)
    assert genaf.train_time_s == pytest.approx(335.0)  # defense record time_s, mean of 2 seeds
    assert genaf.model_wall_time_s == pytest.approx(336.0)
    assert verdict.collapsed == ["pgd_at"]

    text = verdict_markdown(data)
    for line in [
        "- Best BA: none (61.0 ± 1.4 %).",
        ("- Best worst-case RA under downstream-agnostic attacks on the public encoder "
         "(worst-case DAE): genaf (33.0 ± 1.4 %)."),
        ("- Best worst-case RA under every attack, adaptive ones on the deployed model "
         "included (worst-case all): pgd_at (10.0 ± 0.0 %, collapsed); among the defenses that did "
         "not collapse: genaf (2.0 ± 2.8 %)."),
        ("- Each defense against no defense (none: BA 61.0 ± 1.4 %, worst-case DAE 23.0 ± 1.4 %,"
         " worst-case all 1.0 ± 1.4 %, training 16.0 s):"),
        ("  - pgd_at (collapsed): BA -51.0 points, training 3 min 25 s; robustness: "
         "worst-case DAE -13.0 points, worst-case all +9.0 points."),
        ("  - genaf: BA -14.0 points, training 5 min 35 s; robustness: worst-case DAE "
         "+10.0 points, worst-case all +1.0 points."),
        ("- Caveat: pgd_at collapsed: its BA 10.0 ± 0.7 % is within 2 points of chance "
         "(10.0 % = 1/10 classes)"),
    ]:
        assert line in text, (line, text)


def test_collapse_is_computed_from_chance(store) -> None:
    """Collapsed = mean BA within 2 points of 1/num_classes, with the recorded num_classes; no
    caveat where the number of classes is unknown."""
    data = load_report(store[0])
    table = data.tables[0]
    models = [c for c in data.cells if c.kind == "model"]  # no evaluation: num_classes unknown
    verdict = compute_verdict(table, models)
    assert verdict.num_classes is None and verdict.collapsed == []
    assert "Caveat" not in render_markdown([verdict])

    def classes(n: int) -> list[CellRecord]:  # the number recorded by the defense records
        return [replace(c, result={**c.result, "num_classes": n}) for c in models]

    verdict = compute_verdict(table, classes(20))
    assert verdict.chance == pytest.approx(0.05) and verdict.collapsed == []  # 10 > 5 + 2
    assert compute_verdict(table, classes(12)).collapsed == ["pgd_at"]  # 10 within 8.3 +- 2
    assert compute_verdict(table, classes(10)).collapsed == ["pgd_at"]


def test_verdict_opens_every_format(store, report_dir) -> None:
    md = (report_dir / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## zoo:simclr-cifar10-r18w16 on cifar10")
    assert verdict_markdown(store[0]).strip() in md
    page = (report_dir / "report.html").read_text()
    assert page.index('<section class="verdict">') < page.index('<table class="results">')
    assert "Best BA: <strong>none</strong> (61.0 ± 1.4 %)." in page
    assert '<li class="caveat">Caveat: <strong>pgd_at</strong> collapsed' in page
    doc = json.loads((report_dir / "report.json").read_text())
    (verdict,) = doc["verdict"]
    assert verdict["best_ba"]["defenses"] == ["none"] and verdict["collapsed"] == ["pgd_at"]
    assert verdict["best_ba"]["text"] == "61.0 ± 1.4"
    genaf = next(d for d in verdict["defenses"] if d["defense"] == "genaf")
    assert genaf["ba_change_points"] == pytest.approx(-14.0)
    assert genaf["worst_case_change_points"]["worst-case DAE"] == pytest.approx(10.0)
    assert genaf["train_time_s"] == pytest.approx(335.0)


def test_without_baseline_or_worst_case_rows_the_verdict_says_so() -> None:
    base = {"encoder": "e", "dataset": "d", "seed": 0, "num_samples": 1, "fooling_rate": None,
            "attack_success_rate": None, "attack": None, "eps": None}
    rows = [dict(base, defense=d, row=r, kind=k, benign_accuracy=0.5, robust_accuracy=a)
            for d in ("trades", "mart") for r, k, a in
            [("clean", "clean", 0.5), ("uap", "universal", 0.3), ("pgd", "whitebox", 0.1)]]
    verdict = compute_verdict(build_tables(aggregate(rows))[0], [])
    assert verdict.baseline is None and verdict.robust_rows == [] and verdict.best_robust == []
    text = render_markdown([verdict])
    assert "No per-sample worst-case rows are stored" in text
    assert "No defense-free model (none) in these results" in text
    assert "Best BA: mart, trades (50.0 %)." in text or "Best BA: trades, mart (50.0 %)." in text
    assert tradeoff_chart(verdict) is None
    single = [r for r in rows if r["row"] != "pgd"]  # one attack row: it is its own worst case
    assert compute_verdict(build_tables(aggregate(single))[0], []).robust_rows == ["uap"]


# -------------------------------------------------------------------------- trade-off chart

def test_tradeoff_chart_has_one_labelled_point_per_defense(store, report_dir) -> None:
    data = load_report(store[0])
    verdict = data.verdicts[0]
    charts = sorted((report_dir / "charts").glob("tradeoff-*.svg"))
    name = "tradeoff-1-zoo-simclr-cifar10-r18w16-cifar10"
    assert {c.name for c in charts} == {f"{name}-worst-case-all.svg",
                                        f"{name}-worst-case-DAE.svg"}
    root = ET.fromstring(tradeoff_chart(verdict))  # worst-case all (the main one)
    points = root.findall(f".//{SVG}g[@class='point']")
    assert [p.get("data-defense") for p in points] == ["none", "pgd_at", "genaf"]
    for point in points:
        defense = point.get("data-defense")
        label = point.find(f"{SVG}text").text
        assert label == defense + (" (collapsed)" if defense == "pgd_at" else "")
        circle = point.find(f"{SVG}circle")
        x, y = float(circle.get("cx")), float(circle.get("cy"))
        ba, ra = _mean(defense, 0), _mean(defense, 5)
        assert x == pytest.approx(56 + 420 * ba, abs=0.06)  # the verdict's BA ...
        assert y == pytest.approx(40 + 240 * (1 - ra), abs=0.06)  # ... and worst-case all RA
        assert len(point.findall(f"{SVG}line")) == 6  # x and y error bars (two seeds)
        assert defense in circle.find(f"{SVG}title").text
    assert root.find(f".//{SVG}line[@class='chance']") is not None
    md = (report_dir / "report.md").read_text()
    for chart in charts:
        assert f"](charts/{chart.name})" in md
    assert md.index("charts/tradeoff-") < md.index("charts/bars-")
    page = (report_dir / "report.html").read_text()
    assert page.count('<g class="point"') == 2 * 3 and page.count("<svg ") == 3


# --------------------------------------------------------------------------- example images

def test_example_strips_show_the_records_labels_and_predictions(store, report_dir) -> None:
    path, records = store
    data = load_report(path)
    assert [(s.defense, s.seed) for s in data.examples] == [("none", 0), ("genaf", 0)]
    for example in data.examples:
        record = records[(example.defense, example.seed)]
        per, kept = record.per_sample, examples_of(record)
        assert [r.row for r in example.rows] == list(kept) == ["ssp", "sign:eps=32/255,limit=20"]
        for row in example.rows:
            indices = [s.index for s in row.samples]
            assert indices == (per.indices.get(row.row) or list(range(40)))[:K]
            assert [s.label for s in row.samples] == [per.labels[i] for i in indices]
            assert [s.clean_pred for s in row.samples] == [per.clean_pred[i] for i in indices]
            assert [s.adv_pred for s in row.samples] == per.adv_pred[row.row][:K]
            strip = report_dir / "images" / example.file_name(row.row)
            with Image.open(strip) as image:
                pixels = np.asarray(image.convert("RGB"))
            assert pixels.shape == (8 * 3, (4 * (2 * 8 + 2) + 3 * 10) * 3, 3)
            first = kept[row.row]
            assert np.array_equal(pixels[::3, 0:24:3], first.clean[0].permute(1, 2, 0).numpy())
            assert np.array_equal(pixels[::3, 30:54:3],
                                  first.adversarial[0].permute(1, 2, 0).numpy())
    md = (report_dir / "report.md").read_text()
    section = md[md.index("## Example test images"):md.index("## Cells")]
    none = data.examples[0]
    row = none.rows[0]
    labels = " | ".join(none.name(s.label).replace("<", "&lt;").replace(">", "&gt;")
                        for s in row.samples)
    assert f"| true label | {labels} |" in section
    preds = " | ".join(f"{none.name(s.adv_pred)} {'✓' if s.adv_pred == s.label else '✗'}"
                       .replace("<", "&lt;").replace(">", "&gt;") for s in row.samples)
    assert f"| adversarial → | {preds} |" in section
    assert f"](images/{none.file_name(row.row)})" in section and "<b>" not in md
    page = (report_dir / "report.html").read_text()
    html = page[page.index("<h2>Example test images</h2>"):]
    assert html.count('<img class="pair" src="data:image/png;base64,') == 2 * 2 * K
    sample = row.samples[0]
    assert (f"label <strong>{none.name(sample.label)}</strong><br>clean → "
            f"{none.name(sample.clean_pred)}").replace("<b>", "&lt;b&gt;") \
        .replace("</b>", "&lt;/b&gt;") in html
    assert "<b>truck" not in page


def test_hostile_or_missing_example_files(store, tmp_path: Path) -> None:
    """A sidecar outside the artifacts folder, a missing PNG and boxes outside the picture are
    never used; the report still renders and lists what it left out."""
    path = tmp_path / "r.db"
    build_store(path)
    with ResultsStore(path) as store:
        cells = {c.id: c for c in store.cells("evaluate")}
        genaf = cells["eval-genaf-0"]
        sidecar = store.artifacts / genaf.artifacts["examples"]["path"]
        content = json.loads(sidecar.read_text())
        content["rows"][0]["samples"][0]["clean_box"] = [0, 0, 9999, 8]  # outside the picture
        content["rows"][1]["samples"] = [{"index": "x"}]  # malformed: the row is dropped
        sidecar.write_text(json.dumps(content))
        (store.artifacts / cells["eval-none-0"].artifacts["examples_png"]["path"]).unlink()
        store.remove("eval-genaf-1")
        store.add(replace(cells["eval-genaf-1"], artifacts={
            "examples": {"path": "../../outside.json", "sha256": "x"},
            "examples_png": {"path": "../../outside.png", "sha256": "x"}}))
    data = load_report(path)
    (example,) = data.examples
    assert [len(r.samples) for r in example.rows] == [K - 1]
    assert len(data.missing_examples) == 2
    assert any("outside.json" in m for m in data.missing_examples)
    written = write_report(path, tmp_path / "out", formats=["md", "html"])
    assert "Missing or unusable example files" in written["md"].read_text()
    assert written["html"].read_text().count('<img class="pair"') == K - 1
