"""BadEncoder's pieces: losses against hand-computed values, triggers, the objective (frozen
clean copy, BatchNorm in eval mode with frozen affine parameters, gradients only where the paper
puts them), metrics by hand, and the trainer's resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from encshield.backdoor import (
    TRIGGERS,
    BackdoorTarget,
    BadEncoderConfig,
    BadEncoderObjective,
    BadEncoderTrainer,
    backdoor_metrics,
    badencoder_loss,
    build_trigger,
    effectiveness_loss,
    parse_trigger,
    reference_utility_loss,
    utility_loss,
)
from encshield.checkpoints import load_encoder
from encshield.errors import ConfigError, ImageRangeError
from encshield.models import build_encoder

# -- losses ------------------------------------------------------------------------------------


def test_effectiveness_loss_is_minus_the_mean_cosine_over_all_pairs() -> None:
    triggered = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    references = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosines: (1,0).(1,0)=1, (1,0).(1,1)/sqrt2, (0,1).(1,0)=0, (0,1).(1,1)/sqrt2
    expected = -(1 + 1 / math.sqrt(2) + 0 + 1 / math.sqrt(2)) / 4
    assert float(effectiveness_loss(triggered, references)) == pytest.approx(expected)


def test_paired_losses_are_minus_the_mean_cosine_of_rows() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected = -(1 + 1 / math.sqrt(2) - 1) / 3
    assert float(utility_loss(a, b)) == pytest.approx(expected)
    assert float(reference_utility_loss(a, b)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        utility_loss(a, b[:2])


def test_total_loss_averages_targets_and_weights_the_terms() -> None:
    l0 = [torch.tensor(-0.5), torch.tensor(-1.0)]
    l1 = [torch.tensor(-0.2), torch.tensor(-0.4)]
    total = badencoder_loss(l0, l1, torch.tensor(-0.9), lambda1=2.0, lambda2=3.0)
    assert float(total) == pytest.approx(-0.75 + 2 * -0.3 + 3 * -0.9)
    with pytest.raises(ValueError, match="per target"):
        badencoder_loss(l0, l1[:1], torch.tensor(0.0))


# -- triggers ----------------------------------------------------------------------------------


def test_default_patch_is_the_papers_white_square() -> None:
    """32 px: a 10x10 white square at rows/cols 21-30 (BadEncoder's trigger_pt_white_21_10)."""
    x = torch.zeros(2, 3, 32, 32)
    out = parse_trigger("patch").apply(x)
    assert float(out[:, :, 21:31, 21:31].min()) == 1.0
    out[:, :, 21:31, 21:31] = 0
    assert float(out.abs().max()) == 0.0
    big = parse_trigger("patch").apply(torch.zeros(1, 3, 64, 64))  # scaled: 20 px, margin 2
    assert float(big[:, :, 42:62, 42:62].min()) == 1.0 and float(big.sum()) == 3 * 20 * 20


@pytest.mark.parametrize("name", [n for n, _ in TRIGGERS.items()])
def test_every_trigger_stays_in_range_is_deterministic_and_round_trips(name: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    trigger = build_trigger(name)
    out = trigger.apply(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)
    again = build_trigger(trigger.to_dict())
    assert torch.equal(again.apply(x), out)
    assert torch.equal(parse_trigger(trigger.spec).apply(x), out)
    mask, _ = trigger.mask_and_pattern(3, 32, 32)
    untouched = (mask == 0).expand_as(x)
    assert torch.equal(out[untouched.expand_as(out)], x[untouched.expand_as(x)])


def test_trigger_options_and_bad_specs() -> None:
    x = torch.zeros(1, 3, 32, 32)
    top_left = parse_trigger("patch:size=4,position=top-left,margin=0,value=0.5").apply(x)
    assert float(top_left[..., :4, :4].min()) == 0.5 and float(top_left.sum()) == 3 * 16 * 0.5
    blend = parse_trigger("blend:alpha=0.1,seed=3")
    mask, pattern = blend.mask_and_pattern(3, 8, 8)
    assert torch.all(mask == 0.1)
    assert not torch.equal(pattern, parse_trigger("blend:seed=4").mask_and_pattern(3, 8, 8)[1])
    for bad, text in [("nope", "allowed values"), ("patch:size=0", "size"),
                      ("patch:colour=red", "allowed fields"), ("patch:size", "KEY=VALUE"),
                      ("patch:size=40", "does not fit"), ("blend:alpha=2", "alpha")]:
        with pytest.raises(ConfigError, match=text):
            parse_trigger(bad).apply(x)
    with pytest.raises(ImageRangeError):
        parse_trigger("patch").apply(x + 2)


# -- the objective -----------------------------------------------------------------------------


def _objective(targets: int = 1) -> BadEncoderObjective:
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=8, input_size=32).eval()
    refs = [(torch.rand(2, 3, 32, 32) * 255).to(torch.uint8) for _ in range(targets)]
    triggers = [parse_trigger(f"random_patch:seed={i}") for i in range(targets)]
    return BadEncoderObjective(encoder, [BackdoorTarget(t, r, label=i)
                                         for i, (t, r) in enumerate(zip(triggers, refs))])


def test_objective_freezes_the_clean_copy_and_batchnorm() -> None:
    objective = _objective()
    objective.train()
    norms = [m for m in objective.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert not objective.clean.training
    convs = [m for m in objective.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].training
    trainable = {id(p) for p in objective.trainable_parameters()}
    assert not trainable & {id(p) for m in norms for p in m.parameters()}
    assert not trainable & {id(p) for p in objective.clean.parameters()}
    assert {id(p) for p in convs[0].parameters()} <= trainable
    before = {k: v.clone() for k, v in objective.encoder.state_dict().items() if "running" in k}
    losses = objective.training_loss([torch.rand(8, 3, 32, 32)])
    losses["loss"].backward()
    after = objective.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics kept
    assert all(p.grad is None for p in objective.clean.parameters())
    assert all(p.grad is None for m in norms for p in m.parameters())
    assert convs[0].weight.grad is not None and float(convs[0].weight.grad.abs().sum()) > 0
    assert set(losses) == {"loss", "effectiveness", "reference_utility", "utility"}


def test_objective_loss_equals_the_formula_on_its_parts() -> None:
    """With two targets the loss is the formula applied to features computed separately (the
    one-batch forward changes nothing because BatchNorm is in eval mode)."""
    objective = _objective(targets=2)
    x = torch.rand(6, 3, 32, 32)
    torch.manual_seed(1)
    with torch.no_grad():
        losses = objective.training_loss([x])
    torch.manual_seed(1)
    f, g = objective.encoder, objective.clean
    l0, l1 = [], []
    with torch.no_grad():
        for i, target in enumerate(objective.targets):
            refs = objective.references(i)
            augmented = objective.reference_augment.apply(refs)
            l0.append(effectiveness_loss(f(target.trigger.apply(x)), f(refs)))
            l1.append(reference_utility_loss(f(augmented), g(refs)))
        expected = badencoder_loss(l0, l1, utility_loss(f(x), g(x)))
    assert float(losses["loss"]) == pytest.approx(float(expected), abs=1e-5)


def test_metrics_by_hand() -> None:
    labels = torch.tensor([0, 1, 2, 2, 1])
    clean_pred = torch.tensor([0, 1, 2, 0, 0])       # CA 3/5
    clean_trig = torch.tensor([0, 2, 2, 0, 1])       # ASR-B (target 2): 2/5
    bd_pred = torch.tensor([0, 1, 2, 2, 0])          # BA 4/5
    bd_trig = torch.tensor([2, 2, 2, 1, 0])          # ASR 3/5; non-target (0, 1, 4): 2/3
    m = backdoor_metrics(labels, 2, (bd_pred, bd_trig), (clean_pred, clean_trig))
    assert (m.ca, m.ba, m.asr, m.asr_b) == pytest.approx((0.6, 0.8, 0.6, 0.4))
    assert m.asr_nontarget == pytest.approx(2 / 3) and m.num_test == 5
    alone = backdoor_metrics(labels, 2, (bd_pred, bd_trig))
    assert alone.ca is None and alone.asr_b is None


def test_trainer_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=8, input_size=32).eval()
    shadow = (torch.rand(64, 3, 32, 32) * 255).to(torch.uint8)
    target = BackdoorTarget(parse_trigger("patch"), shadow[:2].clone(), label=0)

    def run(folder: str, stop: int | None = None, resume: bool = False) -> dict:
        cfg = BadEncoderConfig(epochs=2, batch_size=16, output_dir=str(tmp_path / folder),
                               checkpoint_every_steps=3, knn={"every_epochs": 0},
                               optimizer={"name": "sgd", "lr": 0.05, "warmup_epochs": 0,
                                          "min_lr_ratio": 1.0, "scale_lr_with_batch": False})
        trainer = BadEncoderTrainer(cfg, encoder, shadow, [target], metadata={"targets": []},
                                    progress=False)
        return trainer.run(resume=resume, stop_at_step=stop)

    full = run("full")
    paused = run("paused", stop=5)
    assert not paused["finished"] and paused["steps"] == 5
    resumed = run("paused", resume=True)
    assert resumed["finished"]
    weights = [load_encoder(r["encoder"]).encoder.state_dict() for r in (full, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(ConfigError, match="--resume"):
        run("full")


# -- evaluation rows, store and report ----------------------------------------------------------


class _PatchDetector(nn.Module):
    """Class 2 when the bottom-right 10x10 corner is white, else the brightest channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, 21:31, 21:31].mean(dim=(1, 2, 3))
        logits = torch.nn.functional.one_hot(x.mean(dim=(2, 3)).argmax(1), 3).float()
        return torch.where((corner > 0.999)[:, None], torch.tensor([0.0, 0.0, 5.0]), logits)


def test_backdoor_rows_measure_the_target_hit_rate() -> None:
    from encshield.evaluation import evaluate_classifier

    torch.manual_seed(0)
    x = torch.rand(12, 3, 32, 32) * 0.9
    y = x.mean(dim=(2, 3)).argmax(1)
    record = evaluate_classifier(_PatchDetector(), x, y, keep_per_sample=True,
                                 backdoors={"backdoor:patch": (parse_trigger("patch"), 2),
                                            "backdoor:blend": (parse_trigger("blend"), 2)})
    patch, blend = record.metrics["backdoor:patch"], record.metrics["backdoor:blend"]
    assert patch.kind == "backdoor" and patch.target == 2 and patch.target_hit_rate == 1.0
    share = float((y == 2).double().mean())
    assert patch.target_hit_rate_nontarget == 1.0 and patch.robust_accuracy == pytest.approx(share)
    assert blend.target_hit_rate == pytest.approx(share)  # the blend is not the trigger
    assert "worst-case all" not in record.metrics  # backdoor rows are no attack group
    assert record.config["evaluation"]["backdoors"]["backdoor:patch"]["target"] == 2


def test_version_1_stores_get_the_target_hit_rate_column(tmp_path: Path) -> None:
    import sqlite3

    from encshield.bench import ResultsStore
    from encshield.bench.store import APPLICATION_ID, SCHEMA_VERSION

    old = tmp_path / "v1.db"
    con = sqlite3.connect(old)
    con.executescript(f"""
        PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE cells (id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL,
            params TEXT NOT NULL, deps TEXT NOT NULL, config_hash TEXT NOT NULL,
            result TEXT NOT NULL, artifacts TEXT NOT NULL, versions TEXT NOT NULL,
            machine TEXT NOT NULL, device TEXT NOT NULL, wall_time_s REAL NOT NULL,
            finished TEXT NOT NULL);
        CREATE TABLE metrics (cell_id TEXT NOT NULL, encoder TEXT NOT NULL, dataset TEXT NOT NULL,
            defense TEXT NOT NULL, seed INTEGER NOT NULL, row TEXT NOT NULL, kind TEXT NOT NULL,
            attack TEXT, eps REAL, num_samples INTEGER NOT NULL, benign_accuracy REAL,
            robust_accuracy REAL, fooling_rate REAL, attack_success_rate REAL,
            PRIMARY KEY (cell_id, row));
        INSERT INTO cells VALUES ('c', 'evaluate', 't', '{{}}', '[]', 'h', '{{}}', '{{}}', '{{}}',
            '{{}}', 'cpu', 1.0, 'now');
        INSERT INTO metrics VALUES ('c', 'e', 'd', 'none', 0, 'clean', 'clean', NULL, NULL, 10,
            0.5, 0.5, NULL, NULL);""")
    con.close()
    with ResultsStore(old, readonly=True) as store:  # readers need no upgrade
        assert store.metrics()[0]["target_hit_rate"] is None
    with ResultsStore(old) as store:  # a writer upgrades in place
        assert store.metrics()[0]["benign_accuracy"] == 0.5
    with sqlite3.connect(old) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert "target_hit_rate" in {r[1] for r in con.execute("PRAGMA table_info(metrics)")}


def test_report_shows_the_asr_of_backdoor_columns() -> None:
    from encshield.report.aggregate import aggregate, backdoor_matrix, build_tables

    def row(defense: str, name: str, kind: str, **values: float) -> dict:
        return {"cell_id": defense, "encoder": "bd.safetensors", "dataset": "gtsrb",
                "defense": defense, "seed": 0, "row": name, "kind": kind, "attack": None,
                "eps": None, "num_samples": 10, **values}

    rows = [row("none", "clean", "clean", benign_accuracy=0.8),
            row("none", "backdoor:patch", "backdoor", robust_accuracy=0.1, target_hit_rate=0.95),
            row("pgd_at", "clean", "clean", benign_accuracy=0.6),
            row("pgd_at", "backdoor:patch", "backdoor", robust_accuracy=0.5,
                target_hit_rate=0.2)]
    (table,) = build_tables(aggregate(rows))
    headers, body = backdoor_matrix(table)
    assert headers == ["defense", "BA", "ASR backdoor:patch"]
    assert body == [["none", "80.0", "95.0"], ["pgd_at", "60.0", "20.0"]]
