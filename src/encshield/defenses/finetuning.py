"""The one shared (adversarial) fine-tuning loop of every fine-tuning defense.

Per epoch, over mini-batches shuffled by a generator seeded with the run's seed, one
:meth:`FinetuningDefense.train_step` per batch:

1. optional inner attack (:meth:`FinetuningDefense.attack`): L-inf PGD from
   :func:`encshield.attacks.whitebox.pgd` (Madry et al., ICLR 2018) with ``keep_best="last"``. The
   attack runs on the model in **eval** mode (BatchNorm statistics are not updated by it) and
   restores the training mode; it differentiates w.r.t. the input only (``torch.autograd.grad``), so
   no attack gradient reaches a parameter's ``.grad``. The loop checks this after every attack and
   raises if a parameter has a gradient (Gen-AF's official code leaks 10 attack steps of gradient
   into every update, docs/methods.md, "Defenses"; we refuse that).
2. the training forward in **train** mode and the per-defense loss hook
   :meth:`FinetuningDefense.loss` ``(model, x, x_adv, y) -> (loss, parts)``;
3. one step of each optimiser.

Normalisation lives inside the :class:`~encshield.models.Encoder`, so the attack and the
training see the same function on [0, 1] images (the official Gen-AF code attacks the
un-normalised model; docs/methods.md, "Defenses").

Optimisation is Gen-AF's "dual track" (Zhou et al., IEEE S&P 2024; docs/methods.md, "Defenses"),
used as the family default: two Adam optimisers (encoder lr 1e-4, head lr 5e-3, both weight decay
8e-4), each with ExponentialLR(0.96) stepped per epoch. The optimisers and schedulers are created
**once** per run (Gen-AF's stage-2 code re-creates Adam every epoch; docs/methods.md, "Defenses").
Whether the encoder trains is configurable (``train_encoder``; when false it stays frozen in eval
mode).

The head starts from a head trained on the frozen encoder's features
(:func:`encshield.downstream.train_head`, the "no defense" model; ``head_init="trained"``) or
from a random initialisation (``head_init="random"``).

Epoch defaults follow the papers (Gen-AF 50 epochs at 64x64, batch 256); the tests and the tiny
benchmark tier override ``epochs`` (and ``head_init_epochs``).
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from encshield.attacks.whitebox import pgd
from encshield.data import ImageDataset
from encshield.defenses.base import Defense, DefenseConfig, DefenseResult
from encshield.defenses.loop import EpochStats, train_epochs
from encshield.downstream import train_head
from encshield.errors import ConfigError
from encshield.models import Classifier, Encoder, build_head
from encshield.models.modules import channels_last_safe, restored_modes, set_channels_last
from encshield.precision import autocast
from encshield.progress import progress as progress_bar

__all__ = [
    "AttackSettings",
    "FinetuningConfig",
    "FinetuningDefense",
    "PairedLogitsDefense",
    "check_no_parameter_grads",
]


class AttackSettings(DefenseConfig):
    """The inner L-inf PGD attack of adversarial fine-tuning (Madry et al., ICLR 2018)."""

    eps: float = Field(8 / 255, ge=0.0, le=1.0)
    steps: int = Field(10, ge=1)
    step_size: float = Field(2 / 255, gt=0.0)
    random_start: bool = True


class FinetuningConfig(DefenseConfig):
    """Settings of the shared loop (defaults: Gen-AF's dual track, docs/methods.md, "Defenses")."""

    epochs: int = Field(50, ge=0)
    batch_size: int = Field(256, ge=1)
    train_encoder: bool = True
    encoder_lr: float = Field(1e-4, ge=0.0)
    head_lr: float = Field(5e-3, ge=0.0)
    weight_decay: float = Field(8e-4, ge=0.0)
    gamma: float = Field(0.96, gt=0.0, le=1.0)
    head: str = "mlp"
    head_init: Literal["trained", "random"] = "trained"
    head_init_epochs: int = Field(20, ge=0)
    track_train_accuracy: bool = True
    amp: bool = Field(False, description="bf16 autocast for the inner attack and the training "
                      "forward (losses stay float32); 2x faster on a CPU with AVX512-BF16")
    channels_last: bool = Field(False, description="channels-last memory for the training")
    attack: AttackSettings = Field(default_factory=AttackSettings)


def check_no_parameter_grads(model: nn.Module, where: str = "after the inner attack") -> None:
    """Raise ``RuntimeError`` if any parameter of ``model`` has a ``.grad``.

    The loop zeroes gradients with ``set_to_none=True`` after every update, so after the inner
    attack a gradient can only come from the attack leaking into the parameters.
    """
    leaked = [name for name, p in model.named_parameters() if p.grad is not None]
    if leaked:
        shown = ", ".join(leaked[:5]) + (" ..." if len(leaked) > 5 else "")
        raise RuntimeError(f"parameter gradients set {where} (attack gradient leak): {shown}")


class FinetuningDefense(Defense):
    """A defense implemented by the shared fine-tuning loop; subclasses override the hooks.

    Hooks:
        * :attr:`uses_attack`: whether :meth:`attack` runs (``False`` for ``standard``).
        * :meth:`attack` ``(model, x, y, seed) -> x_adv``: default CE PGD with the config's
          :class:`AttackSettings`.
        * :meth:`loss` ``(model, x, x_adv, y) -> (loss, parts)``: ``parts`` maps names to floats
          (recorded per epoch).
        * :meth:`setup` ``(classifier, pretrained)``: called once before training with the model
          and a frozen eval-mode copy of the pre-trained encoder (Gen-AF's frozen anchor).
    """

    Config: ClassVar[type[DefenseConfig]] = FinetuningConfig
    config: FinetuningConfig
    uses_attack: ClassVar[bool] = True

    # ------------------------------------------------------------------------------- hooks
    def setup(self, model: Classifier, pretrained: Encoder) -> None:  # optional
        """Called once before the first epoch (default: nothing)."""

    def attack(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """The inner maximisation: L-inf PGD on the cross-entropy (``keep_best="last"``)."""
        a = self.config.attack
        return pgd(model, x, y, eps=a.eps, steps=a.steps, step_size=a.step_size,
                   random_start=a.random_start, objective="ce", keep_best="last", seed=seed)

    def loss(
        self, model: Classifier, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def extra_record(self) -> dict[str, Any]:
        """Defense-specific entries added to the record (default: none)."""
        return {}

    # -------------------------------------------------------------------------------- loop
    def _train_mode(self, model: Classifier) -> None:
        model.train()
        if not self.config.train_encoder:
            model.encoder.eval()

    def train_step(
        self,
        model: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        *,
        seed: int = 0,
        step: int = 0,
        epoch: int = 0,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One update of the shared loop on the batch ``(x, y)`` (what :meth:`fit` runs per batch).

        Train mode, the inner attack (if :attr:`uses_attack`; random start seeded with
        ``seed * 1_000_003 + step``) followed by the no-parameter-gradient check and the
        ``"after_attack"`` event, the train-mode :meth:`loss`, ``backward``, one step of each
        optimiser; gradients are left as ``None``. ``epoch`` only goes into the event.

        Returns:
            The (detached) scalar loss and the loss parts of the hook.
        """
        cfg = self.config
        if cfg.channels_last and channels_last_safe(model):
            x = x.contiguous(memory_format=torch.channels_last)
        self._train_mode(model)
        x_adv = None
        with autocast(x.device, cfg.amp):
            if self.uses_attack:
                x_adv = self.attack(model, x, y, seed * 1_000_003 + step)
                check_no_parameter_grads(model)
                self._emit("after_attack", model=model, step=step, epoch=epoch, x=x, x_adv=x_adv)
            self._train_mode(model)
            loss, parts = self.loss(model, x, x_adv, y)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        return loss.detach(), parts

    def _initial_head(self, encoder: Encoder, train: ImageDataset, num_classes: int, seed: int,
                      device: torch.device | str) -> nn.Module:
        cfg = self.config
        if cfg.head_init == "trained":
            probe_encoder = copy.deepcopy(encoder)
            classifier, _ = train_head(probe_encoder, train.images, train.labels, num_classes,
                                       head=cfg.head, epochs=cfg.head_init_epochs,
                                       lr=cfg.head_lr, weight_decay=cfg.weight_decay,
                                       gamma=cfg.gamma, batch_size=cfg.batch_size, seed=seed,
                                       device=device)
            return classifier.head
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_head(cfg.head, encoder.feature_dim, num_classes)

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
        """Fine-tune a copy of ``encoder`` plus a head on ``train`` with this defense's loss.

        Args:
            encoder: the pre-trained encoder (deep-copied; never modified).
            train: downstream training data (labels in ``[0, num_classes)``).
            num_classes: number of downstream classes.
            seed: seeds the head initialisation, the batch order, dropout and the attacks'
                random starts (same seed -> same weights on the same device).
            device: where to train.
            progress: show a progress bar (one step per epoch, with loss and accuracy).
        """
        cfg = self.config
        if len(train) == 0:
            raise ConfigError("the defense's training set is empty")
        if int(train.labels.min()) < 0 or int(train.labels.max()) >= num_classes:
            raise ConfigError(
                f"training labels must lie in [0, {num_classes}); got "
                f"[{int(train.labels.min())}, {int(train.labels.max())}]"
            )
        start_time = time.perf_counter()
        device = torch.device(device)
        pretrained = copy.deepcopy(encoder).to(device).eval()
        for p in pretrained.parameters():
            p.requires_grad_(False)
        work = copy.deepcopy(encoder).to(device)
        head = self._initial_head(work, train, num_classes, seed, device).to(device)
        model = Classifier(work, head)
        if cfg.channels_last:
            set_channels_last(model)
        for p in model.head.parameters():
            p.requires_grad_(True)
        for p in model.encoder.parameters():
            p.requires_grad_(cfg.train_encoder)
        for p in model.parameters():  # e.g. left over by the head's initial training
            p.grad = None
        self.setup(model, pretrained)

        optimizers: dict[str, torch.optim.Optimizer] = {
            "head": torch.optim.Adam(model.head.parameters(), lr=cfg.head_lr,
                                     weight_decay=cfg.weight_decay)
        }
        if cfg.train_encoder:
            optimizers["encoder"] = torch.optim.Adam(model.encoder.parameters(),
                                                     lr=cfg.encoder_lr,
                                                     weight_decay=cfg.weight_decay)
        schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(o, gamma=cfg.gamma)
                      for k, o in optimizers.items()}

        generator = torch.Generator().manual_seed(seed)
        accuracies: list[float] = []

        def step(x: torch.Tensor, y: torch.Tensor, index: int, epoch: int
                 ) -> tuple[torch.Tensor, dict[str, float], None]:
            loss, parts = self.train_step(model, x, y, optimizers, seed=seed, step=index,
                                          epoch=epoch)
            return loss, parts, None

        def epoch_end(stats: EpochStats) -> None:
            for scheduler in schedulers.values():
                scheduler.step()
            if cfg.track_train_accuracy:
                accuracies.append(_accuracy(model, train, cfg.batch_size, device))
            self._emit("epoch_end", model=model, epoch=stats.epoch, optimizers=optimizers,
                       schedulers=schedulers, loss=stats.loss)
            acc = f", clean train acc {accuracies[-1]:.4f}" if accuracies else ""
            bar(info=f"loss {stats.loss:.4f}{acc}")

        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                progress_bar(self.name, cfg.epochs, enabled=progress) as bar:
            torch.manual_seed(seed)  # dropout masks
            history = train_epochs(
                cfg.epochs,
                lambda: train.batches(cfg.batch_size, shuffle=True, generator=generator,
                                      device=device),
                step, on_epoch_end=epoch_end)

        set_channels_last(model, False).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        record = self._record(
            num_classes=num_classes, seed=seed, device=device,
            time_s=time.perf_counter() - start_time, epochs=cfg.epochs,
            losses=[h.loss for h in history], loss_parts=[h.parts for h in history],
            train_accuracy=accuracies, num_train=len(train), details=self.extra_record())
        return DefenseResult(classifier=model, record=record)


class PairedLogitsDefense(FinetuningDefense):
    """A fine-tuning defense whose outer loss compares the clean and the adversarial logits
    (TRADES, MART).

    :meth:`loss` runs the clean and the adversarial batch through the model in separate
    forwards, as in the papers' code (BatchNorm batch statistics per input set), and records the
    loss of :meth:`paired_loss` under :attr:`loss_name`.
    """

    loss_name: ClassVar[str] = "loss"

    def paired_loss(
        self, logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """The scalar outer loss from the logits ``(N, K)`` of the clean and the adversarial
        inputs and the labels int64 ``(N,)``."""
        raise NotImplementedError

    def loss(
        self, model: Classifier, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert x_adv is not None
        logits_clean, logits_adv = model(x), model(x_adv)
        loss = self.paired_loss(logits_clean, logits_adv, y)
        return loss, {self.loss_name: float(loss.detach())}


@torch.no_grad()
def _accuracy(model: Classifier, data: ImageDataset, batch_size: int,
              device: torch.device) -> float:
    """Clean accuracy of ``model`` in eval mode on ``data`` (the previous mode is restored)."""
    correct = 0
    with restored_modes(model):
        model.eval()
        for x, y in data.batches(batch_size, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(len(data), 1)


def cross_entropy_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``(N,)`` (Gen-AF's sample weights)."""
    return F.cross_entropy(logits, y, reduction="none")
