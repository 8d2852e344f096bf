"""Sanity checks of a white-box evaluation: symptoms of randomness and gradient masking.

In the spirit of AutoAttack's checks (Croce & Hein, ICML 2020) and of the warning signs listed by
Athalye, Carlini & Wagner (ICML 2018, Sec. 3.1) and Carlini et al. ("On Evaluating Adversarial
Robustness", 2019): a robust accuracy measured by a gradient attack is only an upper bound, and
these symptoms say when the bound is probably loose.

:func:`sanity_check` returns a list of :class:`SanityFlag` (empty when nothing is suspicious):

``randomness``
    two forward passes on the same input (eval mode) differ: the model is stochastic, so use EOT
    (``eot_samples``) and report the randomness.
``zero_gradient``
    the input gradient of the margin loss ``max_{j != y} z_j - z_y`` (which, unlike CE, never
    saturates) is zero or vanishing for a large fraction of the samples: gradient masking or
    shattered gradients (a non-differentiable preprocessing?); use BPDA.
``weaker_than_simple_attack``
    a one-step attack (FGSM) or a black-box noise attack (random vertices of the L-inf ball, or
    random directions on the L2 sphere) reaches a lower robust accuracy than the iterative attack.
``eps_not_decreasing``
    robust accuracy does not fall towards 0 when the budget grows: at ``large_eps`` (0.5 in L-inf,
    where any image can be turned grey) it should be about 0, and it must not be higher than at
    ``eps``.

Cost: two forwards, one forward+backward, one FGSM, ``noise_draws`` forwards, and the iterative
attack twice (at ``eps`` and ``large_eps``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from encshield.attacks.whitebox.base import (
    WHITEBOX_ATTACKS,
    Predict,
    attack_context,
    default_predict,
    local_generator,
    prepare_inputs,
    usable,
)
from encshield.attacks.whitebox.fgsm import fgsm
from encshield.attacks.whitebox.objectives import (
    Objective,
    cw_margin,
    resolve_objective,
)
from encshield.errors import ConfigError

__all__ = ["SanityFlag", "sanity_check"]


@dataclass
class SanityFlag:
    """One suspicious finding.

    Attributes:
        name: ``randomness``, ``zero_gradient``, ``weaker_than_simple_attack`` or
            ``eps_not_decreasing``.
        message: what was seen and what to do about it.
        numbers: the measurements behind it (accuracies as fractions in [0, 1]).
    """

    name: str
    message: str
    numbers: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"[{self.name}] {self.message}"


def _max_difference(a: Any, b: Any) -> float:
    if isinstance(a, torch.Tensor):
        if not a.is_floating_point():
            return float((a != b).any())
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    if isinstance(a, Mapping):
        return max((_max_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (tuple, list)):
        return max((_max_difference(u, v) for u, v in zip(a, b)), default=0.0)
    return 0.0


def _scale(a: Any) -> float:
    if isinstance(a, torch.Tensor):
        return float(a.float().abs().max()) if a.numel() and a.is_floating_point() else 1.0
    if isinstance(a, Mapping):
        return max((_scale(v) for v in a.values()), default=1.0)
    if isinstance(a, (tuple, list)):
        return max((_scale(v) for v in a), default=1.0)
    return 1.0


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, predict: Predict | None,
             seed: int) -> torch.Tensor:
    with attack_context(model, seed, x.device), torch.no_grad():
        outputs = model(x)
        predicted = (predict or default_predict)(outputs)
    if predicted is None:
        raise ConfigError(
            "sanity_check needs predictions: the model must return logits (N, C) or pass "
            "predict=callable(outputs) -> labels (N,)"
        )
    return predicted.detach() == y


def sanity_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 8 / 255,
    attack: str = "apgd_ce",
    attack_config: dict[str, Any] | None = None,
    large_eps: float | None = None,
    large_eps_max_accuracy: float = 0.1,
    noise_draws: int = 16,
    zero_gradient_fraction: float = 0.1,
    gradient_tolerance: float = 1e-10,
    randomness_tolerance: float = 1e-5,
    tolerance: float = 0.0,
    gradient_objective: str | Objective | None = None,
    predict: Predict | None = None,
    seed: int = 0,
) -> list[SanityFlag]:
    """Run the four checks on ``model`` with a batch ``x`` (float ``(N, C, H, W)`` in [0, 1]).

    Args:
        model: images in [0, 1] -> logits ``(N, K)`` (or outputs ``predict`` understands).
        x: clean images float ``(N, C, H, W)`` in [0, 1] (64-512 samples are typical).
        y: labels int64 ``(N,)``.
        eps: the evaluation budget.
        attack: name in :data:`WHITEBOX_ATTACKS` (the iterative attack being checked); its norm
            sets the threat model of FGSM and of the noise attack.
        attack_config: extra fields of that attack's config (``steps``, ``eot_samples``, a
            custom ``objective`` ...).
        large_eps: the "unbounded" budget of check 4; ``None`` = 0.5 (L-inf) or
            ``0.5 * sqrt(C*H*W)`` (L2, a ball holding the L-inf 0.5 ball).
        large_eps_max_accuracy: robust accuracy allowed at ``large_eps``.
        noise_draws: random points of the noise attack per sample.
        zero_gradient_fraction: flag when at least this fraction of samples has a vanishing
            gradient.
        gradient_tolerance: a gradient with L1 norm <= this per sample counts as vanishing.
        randomness_tolerance: relative difference of two forwards that counts as randomness.
        tolerance: slack (fraction of samples) of the accuracy comparisons of checks 3 and 4.
        gradient_objective: loss for check 2; default the margin loss (``cw``) on logits, or the
            attack config's custom objective when the outputs are not logits.
        predict: ``outputs -> labels (N,)``; default argmax of logits.
        seed: seeds every random choice (the global RNG state is restored).

    Returns:
        The flags raised, in the order of the checks (empty list = nothing suspicious).
    """
    x = prepare_inputs(x)
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ConfigError(f"sanity_check needs labels y of shape ({x.shape[0]},)")
    if noise_draws < 0 or not 0 < zero_gradient_fraction <= 1:
        raise ConfigError("noise_draws must be >= 0 and zero_gradient_fraction in (0, 1]")
    y = usable(y, x.device)
    spec = WHITEBOX_ATTACKS.get(attack)
    config = dict(attack_config or {})
    if "eps" in config:
        raise ConfigError("pass the budget as sanity_check(eps=...), not in attack_config")
    config.setdefault("predict", predict)
    norm = str(config.get("norm", spec.norm))
    if large_eps is None:
        large_eps = 0.5 if norm == "linf" else 0.5 * math.sqrt(x[0].numel())
    flags: list[SanityFlag] = []
    n = x.shape[0]

    # 1. randomness
    with attack_context(model, seed, x.device), torch.no_grad():
        first = model(x)
        second = model(x)
        difference = _max_difference(first, second)
        scale = _scale(first)
    if difference > randomness_tolerance * max(1.0, scale):
        flags.append(SanityFlag(
            "randomness",
            f"two forward passes in eval mode differ (max |difference| {difference:.3g}): the "
            "model is stochastic; attack it with EOT (eot_samples > 1) and report the randomness",
            {"max_abs_difference": difference, "output_scale": scale}))

    # 2. zero / vanishing gradients
    objective = gradient_objective
    if objective is None:
        logits = first.get("logits") if isinstance(first, Mapping) else first
        is_logits = isinstance(logits, torch.Tensor) and logits.dim() == 2
        objective = cw_margin if is_logits else config.get("objective")
        if not is_logits and (objective is None or isinstance(objective, str)):
            raise ConfigError(
                "the model does not return logits: pass gradient_objective (or a custom "
                "objective in attack_config) for the gradient check"
            )
        if is_logits and isinstance(first, Mapping):
            objective = lambda out, ref: cw_margin(out["logits"], ref)  # noqa: E731
    elif isinstance(objective, str):
        objective = resolve_objective(objective)
    assert callable(objective)  # resolved above (a name or a default), never None here
    with attack_context(model, seed, x.device):
        leaf = x.clone().requires_grad_(True)
        loss = objective(model(leaf), y)
        (grad,) = torch.autograd.grad(loss.sum(), leaf, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x)
    grad_l1 = grad.detach().flatten(1).abs().sum(dim=1)
    vanishing = grad_l1 <= gradient_tolerance
    fraction = float(vanishing.float().mean())
    if fraction >= zero_gradient_fraction:
        flags.append(SanityFlag(
            "zero_gradient",
            f"{int(vanishing.sum())} of {n} samples ({fraction:.0%}) have a zero or vanishing "
            "input gradient: gradient masking (non-differentiable or saturating preprocessing?); "
            "use BPDA for non-differentiable parts and EOT for randomness",
            {"zero_gradient_fraction": fraction, "median_gradient_l1": float(grad_l1.median())}))

    # 3. one-step and noise attacks vs the iterative attack
    clean = _correct(model, x, y, config["predict"], seed)
    x_iter = spec(model, x, y, eps=eps, seed=seed, **config)
    robust_iter = _correct(model, x_iter, y, config["predict"], seed) & clean
    fgsm_kwargs = {k: config[k] for k in ("eot_samples", "predict") if k in config}
    x_fgsm = fgsm(model, x, y, eps=eps, norm=norm, seed=seed, **fgsm_kwargs)  # type: ignore[arg-type]
    robust_fgsm = _correct(model, x_fgsm, y, config["predict"], seed) & clean
    robust_noise = clean.clone()
    generator = local_generator(seed + 1, x.device)
    for draw in range(noise_draws):
        if norm == "linf":
            signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
            x_noise = (x + eps * (2 * signs.to(x.dtype) - 1)).clamp_(0, 1)
        else:
            direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            norms = direction.flatten(1).norm(dim=1).clamp_(min=1e-12)
            x_noise = (x + direction * (eps / norms).view(-1, 1, 1, 1)).clamp_(0, 1)
        robust_noise &= _correct(model, x_noise, y, config["predict"], seed + 2 + draw)
    ra = {name: float(v.float().mean()) for name, v in
          (("clean", clean), ("iterative", robust_iter), ("fgsm", robust_fgsm),
           ("noise", robust_noise))}
    weaker = [name for name in ("fgsm", "noise") if ra[name] < ra["iterative"] - tolerance]
    if weaker:
        only = {name: int(((~robust) & robust_iter).sum()) for name, robust in
                (("fgsm", robust_fgsm), ("noise", robust_noise))}
        flags.append(SanityFlag(
            "weaker_than_simple_attack",
            f"{' and '.join(weaker)} reach(es) a lower robust accuracy than {spec.name} at eps "
            f"{eps:.4g} ({', '.join(f'{k} {ra[k]:.1%}' for k in ('iterative', *weaker))}): "
            "the iterative attack is failing (gradient masking, too few steps or a bad step size)",
            {"eps": eps, **{f"robust_accuracy_{k}": v for k, v in ra.items()},
             **{f"broken_only_by_{k}": float(v) for k, v in only.items()}}))

    # 4. robust accuracy must fall towards 0 as eps grows
    x_large = spec(model, x, y, eps=large_eps, seed=seed, **config)
    ra_large = float((_correct(model, x_large, y, config["predict"], seed) & clean).float().mean())
    if ra_large > large_eps_max_accuracy or ra_large > ra["iterative"] + tolerance:
        flags.append(SanityFlag(
            "eps_not_decreasing",
            f"robust accuracy under {spec.name} is {ra_large:.1%} at eps {large_eps:.4g} "
            f"(vs {ra['iterative']:.1%} at eps {eps:.4g}); with such a budget it should be about "
            "0: the attack does not find adversarial examples that exist (gradient masking)",
            {"eps": eps, "large_eps": large_eps, "robust_accuracy": ra["iterative"],
             "robust_accuracy_large_eps": ra_large,
             "large_eps_max_accuracy": large_eps_max_accuracy}))
    return flags
