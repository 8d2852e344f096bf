"""Gen-AF stage 2 building blocks: layer robustness sensitivity, the k least sensitive layers,
fine-tuning of exactly those layers.

Implements docs/methods.md, "Defenses" (Gen-AF, Zhou et al., "Securely Fine-tuning Pre-trained
Encoders Against Adversarial Examples", IEEE S&P 2024, ``standard_finetuning.py``) with the
per-layer sensitivity of RiFT (Zhu et al., "Improving Generalization of Adversarial Training via
Robust Critical Fine-Tuning", ICCV 2023), "module robust criticality" (MRC):

1. :func:`make_probe_set`: an adversarial probe set, PGD (L-inf, random start) on the model.
   The official code hard-codes the STL-10 train split resized to 64 px; here the caller passes
   any images (e.g. a subset of the downstream train split) and chooses the size.
2. :func:`layer_sensitivity`: for every candidate layer (:func:`candidate_layers`: each
   ``Conv2d`` and ``Linear`` of encoder + head), gradient ascent on the probe CE restricted to
   that layer's weight inside the ball ``||W - W0||_F <= epsilon * ||W0||_F``;
   ``MRC = max_loss - original_loss``.
3. :func:`select_layers`: the ``k`` least sensitive ("robust-redundant") layers, ``k`` a count or
   a fraction (default 0.2, i.e. ``int(0.2 * 23) = 4`` for ResNet-18 + MLP head).
4. :func:`freeze_all_but` / :func:`finetune_layers`: clean-CE fine-tuning of exactly the selected
   modules, chosen by module identity. This fixes three defects of the official code: it
   unfreezes every parameter whose *name contains* a selected layer name (selecting ``conv1``
   also unfreezes ``layer1.0.conv1`` ...), it re-creates Adam every epoch, and it leaves frozen
   BatchNorm layers in train mode so their running statistics drift (``bn_mode="train"`` keeps
   that behaviour for compatibility).
5. :func:`interpolate`: RiFT's weight interpolation between the initial and fine-tuned weights
   (optional; Gen-AF's code does not interpolate).

The registered defense :class:`~encshield.defenses.genaf.GenAF` (``genaf``) runs Gen-AF stage 1
(:class:`~encshield.defenses.genaf_stage1.GenAFStage1`) followed by steps 1-5 on its model.

The typical pipeline::

    x_p, y_p = make_probe_set(model, images, labels)
    scores = layer_sensitivity(model, x_p, y_p)
    chosen = resolve_layers(model, select_layers(scores, 0.2))
    history = finetune_layers(model, chosen, train_x, train_y, epochs=50)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from encshield.attacks.whitebox import pgd
from encshield.defenses.loop import shuffled_batches, train_epochs
from encshield.errors import ConfigError
from encshield.models.modules import module_device, restored_modes, seeded

__all__ = [
    "EpochRecord",
    "LayerScore",
    "candidate_layers",
    "finetune_layers",
    "freeze_all_but",
    "interpolate",
    "layer_sensitivity",
    "make_probe_set",
    "resolve_layers",
    "select_layers",
]

BNMode = Literal["eval", "train"]
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


# --------------------------------------------------------------------------- helpers


def _check_pair(images: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"{what} images must be a float tensor (N, C, H, W), got {shape}")
    if not images.is_floating_point():
        raise ConfigError(f"{what} images must be float in [0, 1], got dtype {images.dtype}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ConfigError(f"{what} labels must be an int64 tensor (N,)")
    if labels.shape[0] != images.shape[0]:
        raise ConfigError(
            f"{what}: {images.shape[0]} images but {labels.shape[0]} labels; they must match")
    if images.shape[0] == 0:
        raise ConfigError(f"{what} set is empty; pass at least one image")


def _positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _positive_float(value: float, name: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@torch.no_grad()
def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Mean CE of ``model`` over ``(x, y)`` (sum over batches / N), in the model's current mode."""
    device = module_device(model)
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        total += float(F.cross_entropy(model(xb), yb, reduction="sum"))
    return total / x.shape[0]


# --------------------------------------------------------------------------- candidates


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """Every ``nn.Conv2d`` and ``nn.Linear`` of ``model``, in module (registration) order.

    For a :class:`~encshield.models.Classifier` this covers the encoder and the head: ResNet-18 (no
    ``fc`` in our backbone) + ``mlp`` head gives 20 convolutions (3 of them the 1x1 downsample
    convolutions) + 3 linears = 23 candidates, as in docs/methods.md, "Defenses". The official code
    additionally skips names containing ``"sub"``; no module of ours is named so.

    Returns:
        ``[(qualified_name, module), ...]``; the names are for the record, the module objects
        are what the rest of this module works with (selection by identity).
    """
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]


# --------------------------------------------------------------------------- probe set


def make_probe_set(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float = 8 / 255,
    steps: int = 10,
    step_size: float = 2 / 255,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adversarial probe set of Gen-AF stage 2: L-inf PGD with random start on ``model``.

    Matches the official settings (torchattacks PGD, eps 8/255, 10 steps, random start; their
    step 2/225 is a typo for 2/255) and, like torchattacks, keeps the *last* iterate. Unlike
    the official code the model is attacked on its own [0, 1] interface (normalisation inside
    the model), in eval mode (restored afterwards), and the images are the caller's choice.

    Args:
        model: images ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``; not modified.
        images: float ``(N, C, H, W)`` in [0, 1] (e.g. a subset of the downstream train split).
        labels: int64 ``(N,)``.
        eps, steps, step_size: PGD budget, iterations and step.
        seed: random starts; batch ``b`` uses ``seed + b``.
        batch_size: images per PGD batch.

    Returns:
        ``(x_adv, labels)``: ``x_adv`` float ``(N, C, H, W)`` in [0, 1] on ``images``' device,
        within ``eps`` of ``images``; ``labels`` a copy of the labels ``(N,)``.
    """
    _check_pair(images, labels, "probe")
    batch_size = _positive_int(batch_size, "batch_size")
    steps = _positive_int(steps, "steps", minimum=0)
    device = module_device(model)
    chunks = []
    for b, start in enumerate(range(0, images.shape[0], batch_size)):
        xb = images[start:start + batch_size].to(device)
        yb = labels[start:start + batch_size].to(device)
        x_adv = pgd(model, xb, yb, eps=eps, steps=steps, step_size=step_size,
                    random_start=True, keep_best="last", seed=seed + b)
        chunks.append(x_adv.to(images.device))
    return torch.cat(chunks), labels.detach().clone()


# --------------------------------------------------------------------------- sensitivity


@dataclass(frozen=True)
class LayerScore:
    """Robustness sensitivity (RiFT's module robust criticality) of one candidate layer.

    Attributes:
        name: qualified module name in the model (for the record).
        index: position in :func:`candidate_layers` of the model that was scored.
        score: ``max_loss - original_loss`` (>= 0 by construction).
        original_loss: mean probe CE of the unperturbed model.
        max_loss: largest mean probe CE among the original and every epoch's projected weight.
        num_params: number of entries of the perturbed weight.
        weight_norm: ``||W0||_F`` of the original weight.
        delta_norm: ``||W_final - W0||_F`` after the last epoch's projection
            (``<= epsilon * weight_norm`` up to float rounding).
    """

    name: str
    index: int
    score: float
    original_loss: float
    max_loss: float
    num_params: int
    weight_norm: float = 0.0
    delta_norm: float = 0.0


def _project_(weight: torch.Tensor, w0: torch.Tensor, radius: float) -> None:
    """In place: ``W <- W0 + delta * min(1, radius / ||delta||_F)`` with ``delta = W - W0``."""
    delta = weight - w0
    norm = float(delta.norm())
    if norm > radius:
        weight.copy_(w0 + delta * (radius / norm))


def layer_sensitivity(
    model: nn.Module,
    probe_x: torch.Tensor,
    probe_y: torch.Tensor,
    *,
    epsilon: float = 0.1,
    ascent_epochs: int = 10,
    lr: float = 1.0,
    batch_size: int = 256,
) -> list[LayerScore]:
    """Per-layer robustness sensitivity (MRC, RiFT Zhu et al. ICCV 2023; Gen-AF stage 2).

    For every candidate layer (:func:`candidate_layers`) with weight ``W0``: only that weight
    varies; ``ascent_epochs`` epochs of gradient *ascent* on the mean CE of each probe batch
    (plain SGD, learning rate ``lr``, batches in order, no shuffling); after each epoch ``W`` is
    projected onto ``||W - W0||_F <= epsilon * ||W0||_F`` and the mean probe CE is recorded.
    ``max_loss`` is the maximum of the original loss and the recorded losses, so
    ``score = max_loss - original_loss >= 0`` (0 when ``ascent_epochs == 0``).

    Everything runs on one deep copy of ``model`` (``model`` itself is never modified; the
    weight is restored after each layer). The copy is in eval mode: BatchNorm uses (and never
    updates) its running statistics and dropout is off, so the loss depends on the weights
    only. Biases and all other parameters stay fixed.

    Args:
        model: images ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``.
        probe_x: float ``(P, C, H, W)`` in [0, 1], usually from :func:`make_probe_set`.
        probe_y: int64 ``(P,)``.
        epsilon: relative radius of the weight ball (0.1 in Gen-AF / RiFT).
        ascent_epochs: passes over the probe set (10 in Gen-AF).
        lr: SGD step size of the ascent (1.0 in Gen-AF).
        batch_size: probe images per ascent step / loss evaluation.

    Returns:
        One :class:`LayerScore` per candidate, in candidate order.
    """
    _check_pair(probe_x, probe_y, "probe")
    epsilon = _positive_float(epsilon, "epsilon", allow_zero=True)
    lr = _positive_float(lr, "lr")
    ascent_epochs = _positive_int(ascent_epochs, "ascent_epochs", minimum=0)
    batch_size = _positive_int(batch_size, "batch_size")

    work = copy.deepcopy(model)
    work.eval()
    for param in work.parameters():
        param.requires_grad_(False)
    device = module_device(work)
    candidates = candidate_layers(work)
    if not candidates:
        raise ConfigError("the model has no Conv2d or Linear layer to score")
    original = _mean_loss(work, probe_x, probe_y, batch_size)

    scores = []
    with torch.enable_grad():
        for index, (name, module) in enumerate(candidates):
            weight: torch.Tensor = module.weight
            w0 = weight.detach().clone()
            radius = epsilon * float(w0.norm())
            max_loss = original
            weight.requires_grad_(True)
            try:
                for _ in range(ascent_epochs):
                    for start in range(0, probe_x.shape[0], batch_size):
                        xb = probe_x[start:start + batch_size].to(device)
                        yb = probe_y[start:start + batch_size].to(device)
                        loss = F.cross_entropy(work(xb), yb)
                        (grad,) = torch.autograd.grad(loss, weight)
                        with torch.no_grad():
                            weight.add_(grad, alpha=lr)  # ascent
                    with torch.no_grad():
                        _project_(weight, w0, radius)
                    max_loss = max(max_loss, _mean_loss(work, probe_x, probe_y, batch_size))
                delta_norm = float((weight.detach() - w0).norm())
            finally:
                weight.requires_grad_(False)
                with torch.no_grad():
                    weight.copy_(w0)
            scores.append(LayerScore(
                name=name, index=index, score=max_loss - original, original_loss=original,
                max_loss=max_loss, num_params=weight.numel(), weight_norm=float(w0.norm()),
                delta_norm=delta_norm))
    return scores


# --------------------------------------------------------------------------- selection


def select_layers(scores: Sequence[LayerScore], k: int | float = 0.2) -> list[LayerScore]:
    """The ``k`` least sensitive layers (ascending score; ties by candidate index).

    Args:
        scores: from :func:`layer_sensitivity`.
        k: an ``int`` count in ``[1, n]`` or a ``float`` fraction in ``(0, 1]`` of the ``n``
            candidates, giving ``max(1, int(k * n))`` layers (Gen-AF: 0.2, i.e. 4 of 23).

    Raises:
        ConfigError: no scores, or ``k`` out of range (names the value and the allowed range).
    """
    n = len(scores)
    if n == 0:
        raise ConfigError("select_layers needs at least one LayerScore, got none")
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ConfigError(f"k must be an int count in [1, {n}] or a float fraction in (0, 1], "
                          f"got {k!r}")
    if isinstance(k, int):
        if not 1 <= k <= n:
            raise ConfigError(f"k={k} is out of range: a layer count must be in [1, {n}]")
        count = k
    else:
        if not (math.isfinite(k) and 0.0 < k <= 1.0):
            raise ConfigError(f"k={k} is out of range: a fraction must be in (0, 1]")
        count = max(1, int(k * n))
    return sorted(scores, key=lambda s: (s.score, s.index))[:count]


def resolve_layers(model: nn.Module, selected: Sequence[LayerScore]) -> list[nn.Module]:
    """The module objects of ``model`` that the scores refer to (by candidate index).

    Raises:
        ConfigError: an index is out of range or its name does not match ``model``'s candidate
            (the scores were computed on a different architecture).
    """
    candidates = candidate_layers(model)
    modules: list[nn.Module] = []
    for score in selected:
        if not 0 <= score.index < len(candidates):
            raise ConfigError(f"layer index {score.index} ({score.name!r}) is out of range: "
                              f"the model has {len(candidates)} candidate layers")
        name, module = candidates[score.index]
        if name != score.name:
            raise ConfigError(f"candidate {score.index} is {name!r} in the model but "
                              f"{score.name!r} in the scores; score the same architecture")
        modules.append(module)
    return modules


# --------------------------------------------------------------------------- fine-tuning


def freeze_all_but(model: nn.Module, modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    """Freeze every parameter except those owned directly by the given module objects.

    Selection is by module *identity* (``is``), never by name: selecting the encoder's top-level
    ``conv1`` leaves ``layer1.0.conv1`` frozen (the official code's substring match would
    unfreeze it). "Owned" means the module's own parameters (``recurse=False``), e.g. a
    ``Conv2d``'s weight and bias; pass child modules explicitly to include them.

    Args:
        model: modified in place (``requires_grad`` flags).
        modules: submodules of ``model``.

    Returns:
        The trainable parameters, in ``model.parameters()`` order.

    Raises:
        ConfigError: a module is not a submodule of ``model`` or owns no parameters.
    """
    members = {id(m) for m in model.modules()}
    owned: set[int] = set()
    for module in modules:
        if id(module) not in members:
            raise ConfigError(f"{type(module).__name__} {module!r} is not a submodule of the "
                              "model (select modules of this very model object)")
        own = list(module.parameters(recurse=False))
        if not own:
            raise ConfigError(f"{type(module).__name__} owns no parameters; select a layer "
                              "such as a Conv2d or Linear")
        owned.update(id(p) for p in own)
    trainable = []
    for param in model.parameters():
        keep = id(param) in owned
        param.requires_grad_(keep)
        if keep:
            trainable.append(param)
    return trainable


@dataclass(frozen=True)
class EpochRecord:
    """One fine-tuning epoch: mean training CE and accuracy over the epoch's batches."""

    epoch: int
    loss: float
    accuracy: float


def finetune_layers(
    model: nn.Module,
    modules: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 8e-4,
    batch_size: int = 256,
    seed: int = 0,
    bn_mode: BNMode = "eval",
) -> list[EpochRecord]:
    """Clean-CE fine-tuning of exactly the parameters owned by ``modules`` (Gen-AF stage 2).

    Adam (lr 1e-3, weight decay 8e-4 as in the official code) is created once for the whole
    run (the official code re-creates it every epoch, resetting its moments). The model is in
    train mode (dropout active) except, with ``bn_mode="eval"`` (default), every BatchNorm
    layer whose parameters are all frozen stays in eval mode, so frozen BN running statistics
    do not drift. ``bn_mode="train"`` reproduces the official behaviour (whole model in train
    mode). Batches are reshuffled every epoch with a generator seeded by ``seed``; dropout uses
    a forked global RNG seeded by ``seed`` (the caller's RNG state is restored).

    ``model`` is updated in place; afterwards its modules' training flags and its parameters'
    ``requires_grad`` flags are restored to what they were. No checkpoint selection is done
    (the official code keeps the best clean test accuracy; do that in the caller).

    Args:
        model: images ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``.
        modules: submodules of ``model`` to train (e.g. :func:`resolve_layers` of
            :func:`select_layers`).
        images: float ``(N, C, H, W)`` in [0, 1] (downstream train split).
        labels: int64 ``(N,)``.
        epochs: passes over the data (official default 50).
        lr, weight_decay: Adam settings.
        batch_size: images per step.
        seed: shuffling and dropout.
        bn_mode: ``"eval"`` (frozen BN keeps its statistics) or ``"train"`` (official).

    Returns:
        One :class:`EpochRecord` per epoch.
    """
    _check_pair(images, labels, "training")
    epochs = _positive_int(epochs, "epochs", minimum=0)
    lr = _positive_float(lr, "lr")
    weight_decay = _positive_float(weight_decay, "weight_decay", allow_zero=True)
    batch_size = _positive_int(batch_size, "batch_size")
    if bn_mode not in ("eval", "train"):
        raise ConfigError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    if not modules:
        raise ConfigError("finetune_layers needs at least one module to train")

    device = module_device(model)
    with restored_modes(model), seeded(seed, device), torch.enable_grad():
        trainable = freeze_all_but(model, modules)
        optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
        model.train()
        if bn_mode == "eval":
            for module in model.modules():
                if isinstance(module, _BN_TYPES) and not any(
                        p.requires_grad for p in module.parameters(recurse=False)):
                    module.eval()
        generator = torch.Generator().manual_seed(int(seed))

        def step(xb: torch.Tensor, yb: torch.Tensor, index: int, epoch: int
                 ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach(), {}, logits.detach()

        stats = train_epochs(
            epochs, lambda: shuffled_batches(images, labels, batch_size, generator, device), step)
        history = [EpochRecord(epoch=s.epoch + 1, loss=s.loss, accuracy=s.accuracy or 0.0)
                   for s in stats]
        for param in trainable:
            param.grad = None
    return history


# --------------------------------------------------------------------------- interpolation


def interpolate(
    initial_state: Mapping[str, torch.Tensor],
    finetuned_state: Mapping[str, torch.Tensor],
    alpha: float,
) -> dict[str, torch.Tensor]:
    """RiFT's weight interpolation ``(1 - alpha) * initial + alpha * finetuned``.

    RiFT (Zhu et al., ICCV 2023) interpolates between the adversarially trained and the
    fine-tuned weights and picks ``alpha`` on validation data; Gen-AF's code does not
    interpolate (this step is optional, off by default). Floating-point entries (weights and BN
    running statistics) are interpolated; other entries (e.g. ``num_batches_tracked``) are taken
    from the nearer endpoint. ``alpha = 0`` / ``1`` return exact copies of the endpoints.

    Args:
        initial_state, finetuned_state: state dicts with the same keys and shapes.
        alpha: in [0, 1].

    Returns:
        A new state dict (fresh tensors) for ``load_state_dict``.

    Raises:
        ConfigError: ``alpha`` outside [0, 1], or the keys / shapes / dtypes differ.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
            math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ConfigError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if set(initial_state) != set(finetuned_state):
        diff = sorted(set(initial_state) ^ set(finetuned_state))
        raise ConfigError(f"the two state dicts have different keys: {diff[:5]}")
    out: dict[str, torch.Tensor] = {}
    for key, a in initial_state.items():
        b = finetuned_state[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ConfigError(f"{key}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}; "
                              "interpolate states of the same architecture")
        if alpha == 0.0 or (not a.is_floating_point() and alpha < 0.5):
            out[key] = a.detach().clone()
        elif alpha == 1.0 or not a.is_floating_point():
            out[key] = b.detach().clone()
        else:
            out[key] = torch.lerp(a.detach(), b.detach().to(a.device), float(alpha))
    return out
