"""Shared machinery of the classifier-based universal attacks (UAP, UAPGD).

UAP (Moosavi-Dezfooli et al., CVPR 2017) and UAPGD (Deng & Karam, ICIP 2020) need a classifier to
fool. On an SSL encoder the attacker has none, so a *surrogate* classifier is used (docs/methods.md
6.3): either ``surrogate_head`` (a head on the encoder's features, e.g. the checkpoint's online
linear classifier, or a full classifier images -> logits), or, when it is absent and surrogate
labels are given, a head trained on the attacker's surrogate data with
:func:`encshield.downstream.train_head` (linear by default). Fooling is label-agnostic: an image is
fooled when the surrogate classifier's prediction on ``x + delta`` differs from its prediction on
``x``.

Both algorithms walk over the surrogate images one at a time and update the universal delta
whenever the current image is not yet fooled; the walk is exact (sequential semantics) but the
"is it fooled yet?" checks are batched speculatively: a window of upcoming images is checked
with the current delta in one forward, and only the first one that is not fooled triggers an
update (after which the following images are re-checked with the new delta). The window grows
while images are already fooled, so late passes cost about one batched forward per image batch.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from pydantic import Field
from torch import nn

from encshield.attacks.perturbation import Perturbation
from encshield.attacks.universal.base import FitContext, UniversalAttack, UniversalAttackConfig
from encshield.errors import ConfigError
from encshield.models import Encoder
from encshield.models.modules import module_device

__all__ = ["ClassifierAttack", "ClassifierAttackConfig", "LogitsFn"]


class LogitsFn:
    """Images in [0, 1] -> logits of the surrogate classifier (head on encoder features, or a
    full classifier)."""

    def __init__(self, encoder: nn.Module, head: nn.Module, *, full_classifier: bool) -> None:
        self.encoder = encoder
        self.head = head
        self.full_classifier = full_classifier

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(x) if self.full_classifier else self.head(self.encoder(x))
        return logits


def _is_full_classifier(head: nn.Module) -> bool:
    from encshield.models import Classifier

    return isinstance(head, Classifier)


def make_logits_fn(
    encoder: nn.Module, head: nn.Module, image_shape: tuple[int, int, int]
) -> LogitsFn:
    """Wrap ``head`` and check on one blank image that it yields ``(1, C)`` logits, C >= 2."""
    if not isinstance(head, nn.Module):
        raise ConfigError(
            f"surrogate_head must be a torch.nn.Module (a head on the encoder features, or a "
            f"classifier), got {type(head).__name__}"
        )
    fn = LogitsFn(encoder, head, full_classifier=_is_full_classifier(head))
    probe = torch.zeros(1, *image_shape, device=module_device(encoder))
    try:
        with torch.no_grad():
            logits = fn(probe)
    except RuntimeError as error:
        dim = getattr(encoder, "feature_dim", "?")
        raise ConfigError(
            f"surrogate_head does not fit this encoder (features of dimension {dim}): {error}"
        ) from None
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ConfigError(
            f"surrogate_head must output logits (N, C) with C >= 2 classes, got "
            f"{tuple(logits.shape)}"
        )
    return fn


class ClassifierAttackConfig(UniversalAttackConfig):
    """Settings shared by UAP and UAPGD."""

    target_fooling_rate: float = Field(
        0.8, gt=0, le=1,
        description="stop after the pass in which the surrogate fooling rate reaches this",
    )
    max_passes: int = Field(5, ge=1, description="maximum passes over the surrogate images")
    head: Literal["linear", "mlp"] = Field(
        "linear", description="head trained on the surrogate data when no surrogate_head is given"
    )
    head_epochs: int = Field(20, ge=1, description="epochs of that head's training")


class ClassifierAttack(UniversalAttack):
    """Base of UAP/UAPGD: a sequential walk over the surrogate images updating delta on every
    image the surrogate classifier does not yet misclassify (stochastic: the order of the walk
    is drawn from the seed)."""

    objective_name = (
        "surrogate classifier agreement rate (fraction of images whose predicted label is "
        "unchanged = 1 - fooling rate)"
    )
    Config = ClassifierAttackConfig
    config: ClassifierAttackConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        #: the surrogate classifier of the last fit (a head on features, or a full classifier)
        self.surrogate_head_: nn.Module | None = None

    # --------------------------------------------------------------------------- classifier

    def _surrogate(self, context: FitContext) -> LogitsFn:
        if context.surrogate_head is not None:
            fn = make_logits_fn(context.encoder, context.surrogate_head, context.image_shape)
            context.info["surrogate_classifier"] = {
                "source": "given",
                "type": type(context.surrogate_head).__name__,
                "full_classifier": fn.full_classifier,
            }
        elif context.labels is not None:
            fn = self._train_head(context)
        else:
            raise ConfigError(
                f"{self.name} fools a classifier, and an SSL encoder has none: pass "
                "surrogate_head= (a head on the encoder's features, e.g. the checkpoint's online "
                "linear classifier LoadedCheckpoint.surrogate_head, or a full classifier), or pass "
                "surrogate_labels= so that a linear head is trained on the surrogate images "
                "(CLI: a labelled --surrogate dataset)"
            )
        self.surrogate_head_ = fn.head
        return fn

    def _train_head(self, context: FitContext) -> LogitsFn:
        from encshield.downstream import train_head

        labels = context.labels
        assert labels is not None
        keep = labels >= 0
        if int(keep.sum()) == 0:
            raise ConfigError(f"{self.name}: the surrogate labels are all -1 (unlabelled)")
        images, labels = context.images[keep.to(context.images.device)], labels[keep]
        num_classes = int(labels.max()) + 1
        if int(labels.unique().numel()) < 2:
            raise ConfigError(
                f"{self.name}: the surrogate labels hold a single class; a surrogate classifier "
                "needs at least two"
            )
        classifier, record = train_head(
            cast(Encoder, context.encoder),  # the head is sized by its feature_dim
            images,
            labels,
            num_classes,
            head=self.config.head,
            epochs=self.config.head_epochs,
            seed=context.seed,
            device=context.device,
        )
        context.info["surrogate_classifier"] = {
            "source": "trained on the surrogate images",
            "head": self.config.head,
            "num_classes": num_classes,
            "num_train": record.num_train,
            "epochs": record.epochs,
            "train_accuracy": record.train_accuracy,
        }
        return LogitsFn(context.encoder, classifier.head.eval(), full_classifier=False)

    # --------------------------------------------------------------------------- walking

    def _predict(
        self, fn: LogitsFn, context: FitContext, delta: torch.Tensor | None
    ) -> torch.Tensor:
        """Surrogate predictions on every surrogate image (with ``delta`` if given), in order."""
        out = []
        with torch.no_grad():
            for start in range(0, context.num_images, self.config.batch_size):
                x = context.batch(slice(start, start + self.config.batch_size))
                if delta is not None:
                    x = (x + delta).clamp(0, 1)
                out.append(fn(x).argmax(1))
        return torch.cat(out)

    def _fit(self, context: FitContext) -> Perturbation:
        fn = self._surrogate(context)
        clean = self._predict(fn, context, None)
        delta = torch.zeros(context.image_shape, device=context.device)
        seen = 0
        n = context.num_images
        cfg = self.config
        with context.bar(cfg.max_passes * n, self.name) as advance:
            for epoch in range(cfg.max_passes):
                order = context.permutation()
                updates = 0
                for start in range(0, n, cfg.batch_size):
                    idx = order[start : start + cfg.batch_size]
                    x = context.batch(idx)
                    y = clean[idx.to(clean.device)]
                    delta, count = self._walk(fn, x, y, delta, context, seen)
                    updates += count
                    seen += int(idx.numel())
                    advance(int(idx.numel()), info=f"updates {updates}")
                fooling = float((self._predict(fn, context, delta) != clean).float().mean())
                context.history.append(
                    {"pass": epoch + 1, "fooling_rate": fooling, "updates": updates,
                     "images_seen": seen, "linf": float(delta.abs().max())}
                )
                if fooling >= cfg.target_fooling_rate:
                    break
        return Perturbation("additive", delta.detach().cpu(), eps=context.eps)

    def _walk(
        self,
        fn: LogitsFn,
        x: torch.Tensor,
        y: torch.Tensor,
        delta: torch.Tensor,
        context: FitContext,
        seen: int,
    ) -> tuple[torch.Tensor, int]:
        """Visit the images of one batch in order; update delta on each one not yet fooled."""
        b = int(x.shape[0])
        i, window, updates = 0, 1, 0
        while i < b:
            with torch.no_grad():
                pred = fn((x[i : i + window] + delta).clamp(0, 1)).argmax(1)
            unfooled = (pred == y[i : i + window]).nonzero()
            if unfooled.numel() == 0:
                i += window
                window = min(b, 2 * window)
                continue
            gap = int(unfooled[0, 0])
            j = i + gap
            delta = self._update(fn, x[j : j + 1], y[j : j + 1], delta, context, seen + j)
            delta = delta.clamp(-context.eps, context.eps).detach()
            updates += 1
            i = j + 1
            window = min(b, max(1, 2 * gap))
        return delta, updates

    def _update(
        self,
        fn: LogitsFn,
        x: torch.Tensor,
        y: torch.Tensor,
        delta: torch.Tensor,
        context: FitContext,
        index: int,
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """The new (unprojected) delta after visiting image ``x`` ``(1, C, H, W)`` not yet fooled;
        ``index`` = how many images were visited before it."""
        raise NotImplementedError

    # --------------------------------------------------------------------------- objective

    def _objective_state(
        self, encoder: nn.Module, surrogate_head: nn.Module | None, perturbation: Perturbation
    ) -> Any:
        head = surrogate_head if surrogate_head is not None else self.surrogate_head_
        if head is None:
            raise ConfigError(
                f"the {self.name} objective is the surrogate classifier's agreement rate: fit "
                "the attack first, or pass surrogate_head="
            )
        return LogitsFn(encoder, head, full_classifier=_is_full_classifier(head))

    def _objective_values(
        self, encoder: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, state: Any
    ) -> torch.Tensor:
        agree: torch.Tensor = (state(x).argmax(1) == state(x_adv).argmax(1)).float()
        return agree
