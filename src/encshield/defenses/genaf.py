"""``genaf``: Gen-AF stages 1 + 2 as one registered defense (Zhou et al., "Securely Fine-tuning
Pre-trained Encoders Against Adversarial Examples", IEEE S&P 2024; docs/methods.md, "Gen-AF").

Stage 1 is :class:`~encshield.defenses.genaf_stage1.GenAFStage1` (adversarial fine-tuning with
the genetic regularisation); stage 2 uses the building blocks of
:mod:`encshield.defenses.layer_sensitivity` (probe set, layer sensitivity, the least sensitive
layers, clean fine-tuning of exactly those layers, optional RiFT interpolation).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from encshield.data import ImageDataset
from encshield.defenses.base import DEFENSES, Defense, DefenseConfig, DefenseResult
from encshield.defenses.genaf_stage1 import GenAFStage1, GenAFStage1Config
from encshield.defenses.layer_sensitivity import (
    finetune_layers,
    interpolate,
    layer_sensitivity,
    make_probe_set,
    resolve_layers,
    select_layers,
)
from encshield.models import Encoder

__all__ = ["GenAF", "GenAFConfig"]


class GenAFConfig(DefenseConfig):
    """Gen-AF stages 1 + 2 (docs/methods.md, "Defenses"); every field has the official default.

    ``stage1`` is :class:`~encshield.defenses.genaf_stage1.GenAFStage1Config` (nested overrides
    merge into its defaults). Stage 2: a probe set of ``probe_size`` images drawn (seeded) from the
    downstream train split (the official code hard-codes STL-10 train), attacked with ``probe_eps``
    / ``probe_steps`` / ``probe_step_size`` (L-inf PGD, 8/255, 10 steps of 2/255, random start);
    layer sensitivity with relative radius ``sensitivity_epsilon`` and ``ascent_epochs`` epochs of
    SGD ascent (lr ``ascent_lr``); the ``k`` least sensitive layers (count or fraction); clean-CE
    fine-tuning of those layers for ``stage2_epochs`` epochs (Adam ``stage2_lr``,
    ``stage2_weight_decay``); optional RiFT interpolation
    ``(1 - alpha) * stage1 + alpha * finetuned`` (off: Gen-AF).
    """

    stage1: GenAFStage1Config = Field(default_factory=GenAFStage1Config)
    probe_size: int = Field(1000, ge=1)
    probe_eps: float = Field(8 / 255, ge=0.0, le=1.0)
    probe_steps: int = Field(10, ge=0)
    probe_step_size: float = Field(2 / 255, gt=0.0)
    sensitivity_epsilon: float = Field(0.1, ge=0.0)
    ascent_epochs: int = Field(10, ge=0)
    ascent_lr: float = Field(1.0, gt=0.0)
    k: int | float = 0.2
    stage2_epochs: int = Field(50, ge=0)
    stage2_lr: float = Field(1e-3, gt=0.0)
    stage2_weight_decay: float = Field(8e-4, ge=0.0)
    stage2_batch_size: int = Field(256, ge=1)
    probe_batch_size: int = Field(256, ge=1)
    bn_mode: Literal["eval", "train"] = "eval"
    interpolation_alpha: float | None = Field(None, ge=0.0, le=1.0)

    @field_validator("k", mode="before")
    @classmethod
    def _check_k(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"k must be an int count >= 1 or a float fraction in (0, 1], "
                             f"got {value!r}")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a layer count k must be >= 1, got {value}")
        if isinstance(value, float) and not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise ValueError(f"a layer fraction k must be in (0, 1], got {value}")
        return value


@DEFENSES.register("genaf", aliases=("gen-af",))
class GenAF(Defense):
    """Gen-AF (Zhou et al., IEEE S&P 2024): stage 1 (``genaf_stage1``) then stage 2.

    ``fit`` runs stage 1 through :class:`~encshield.defenses.genaf_stage1.GenAFStage1`, then on its
    model: probe set -> per-layer sensitivity -> the ``k`` least sensitive layers -> freeze all
    other parameters (by module identity) -> clean fine-tuning of those layers -> optional
    interpolation. The encoder passed in is never modified. Callbacks receive stage 1's events
    plus ``"stage1_end"`` (``model``, ``state``: a copy of the stage-1 state dict) and
    ``"stage2_end"`` (``model``, ``chosen``: the fine-tuned modules).
    """

    Config = GenAFConfig
    config: GenAFConfig

    def fit(
        self,
        encoder: Encoder,
        train: ImageDataset,
        num_classes: int,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> DefenseResult:
        """Stage 1 then stage 2 on a copy of ``encoder`` (never modified); see the class."""
        cfg = self.config
        start_time = time.perf_counter()
        stage1 = GenAFStage1(cfg.stage1)
        for callback in self._callbacks:
            stage1.add_callback(callback)
        result1 = stage1.fit(encoder, train, num_classes, seed=seed, device=device,
                             progress=progress)
        model = result1.classifier
        stage1_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._emit("stage1_end", model=model, state=stage1_state)

        # probe set: a seeded subset of the downstream train split
        started = time.perf_counter()
        n = len(train)
        size = min(cfg.probe_size, n)
        generator = torch.Generator().manual_seed(int(seed))
        probe_idx = torch.randperm(n, generator=generator)[:size].sort().values
        probe_x, probe_y = make_probe_set(
            model, train.to_float(probe_idx), train.labels[probe_idx].clone(),
            eps=cfg.probe_eps, steps=cfg.probe_steps, step_size=cfg.probe_step_size,
            seed=int(seed), batch_size=cfg.probe_batch_size)
        probe_time = time.perf_counter() - started

        started = time.perf_counter()
        scores = layer_sensitivity(model, probe_x, probe_y, epsilon=cfg.sensitivity_epsilon,
                                   ascent_epochs=cfg.ascent_epochs, lr=cfg.ascent_lr,
                                   batch_size=cfg.probe_batch_size)
        sensitivity_time = time.perf_counter() - started
        selected = select_layers(scores, cfg.k)
        chosen = resolve_layers(model, selected)

        started = time.perf_counter()
        history = finetune_layers(
            model, chosen, train.to_float(), train.labels, epochs=cfg.stage2_epochs,
            lr=cfg.stage2_lr, weight_decay=cfg.stage2_weight_decay,
            batch_size=cfg.stage2_batch_size, seed=int(seed), bn_mode=cfg.bn_mode)
        finetune_time = time.perf_counter() - started
        if cfg.interpolation_alpha is not None:
            model.load_state_dict(interpolate(stage1_state, model.state_dict(),
                                              cfg.interpolation_alpha))
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
            param.grad = None
        self._emit("stage2_end", model=model, chosen=chosen)

        record = self._record(
            num_classes=num_classes, seed=seed, device=device,
            time_s=time.perf_counter() - start_time,
            epochs=int(cfg.stage1.epochs + cfg.stage2_epochs),
            losses=[*result1.record.losses, *(h.loss for h in history)],
            train_accuracy=[*result1.record.train_accuracy, *(h.accuracy for h in history)],
            num_train=n,
            summary=f"stage 2 fine-tuned {len(selected)} of {len(scores)} layers: "
                    + ", ".join(s.name for s in selected),
            details={
                "stage1": result1.record.to_dict(),
                "probe": {"size": int(size), "source": f"{train.name}:{train.split}",
                          "eps": cfg.probe_eps, "steps": cfg.probe_steps,
                          "step_size": cfg.probe_step_size, "random_start": True,
                          "seed": int(seed)},
                "layer_scores": [asdict(s) for s in scores],
                "num_candidates": len(scores),
                "chosen_layers": [s.name for s in selected],
                "stage2_history": [asdict(h) for h in history],
                "bn_mode": cfg.bn_mode,
                "interpolation_alpha": cfg.interpolation_alpha,
                "stage_time_s": {"stage1": result1.record.time_s, "probe": probe_time,
                                 "sensitivity": sensitivity_time, "stage2": finetune_time},
            })
        return DefenseResult(classifier=model, record=record)
