"""Per-sample white-box and adaptive attacks: ``(model, x, y) -> x_adv``.

Every attack works on any model mapping images float ``(N, C, H, W)`` in [0, 1] to outputs
(logits of a Classifier, features of an Encoder, or a dict of branch logits with a custom
objective), keeps the hygiene described in :mod:`encshield.attacks.whitebox.base` (autograd only
w.r.t. the input, eval mode restored per submodule, seeded with the global RNG restored, result
in [0, 1] and within the budget) and supports EOT (``eot_samples``).

* :data:`WHITEBOX_ATTACKS`: registry with the uniform call
  ``WHITEBOX_ATTACKS.get(name)(model, x, y, *, eps, seed=0, **config) -> x_adv``:
  ``pgd`` (L-inf), ``pgd_l2``, ``apgd_ce``, ``apgd_dlr``, ``apgd_t`` (targeted DLR), ``fgsm``,
  ``square`` (L-inf random search) and ``autoattack`` (the ensemble APGD-CE, APGD-T, Square;
  no FAB-T), and the adaptive attacks on fused multi-branch models (ZePAD) ``joint_pgd`` (sum of
  the branch losses) and ``detection_aware_pgd`` (keeps the detector's confidence gap under its
  threshold, :mod:`~encshield.attacks.whitebox.ensemble`); each has a pydantic config with
  defaults (``.config_class``).
* Functions: :func:`pgd` (Madry et al. 2018), :func:`apgd` / :func:`apgd_targeted` (Croce &
  Hein 2020), :func:`square` (Andriushchenko et al. 2020), :func:`autoattack` (Croce & Hein
  2020), :func:`fgsm` (Goodfellow et al. 2015), :func:`feature_pgd` (encoder-only,
  feature-distance PGD: the per-sample control of the DAE tables).
* Objectives (:data:`OBJECTIVES`): ``ce``, ``cw``, ``dlr``, ``dlr_targeted``,
  ``feature_distance`` (cosine), ``feature_l2``; any callable ``(outputs, y) -> (N,)`` to
  maximise is accepted (the hook for joint attacks on ensembles).
* :class:`BPDA` / :func:`bpda` (Athalye et al. 2018): a non-differentiable preprocessing on the
  forward pass, a differentiable approximation (identity by default) on the backward pass.
* :func:`sanity_check` -> list of :class:`SanityFlag`: randomness, zero gradients, one-step or
  noise attacks beating the iterative one, robust accuracy not falling with the budget.
"""

from encshield.attacks.whitebox.apgd import (
    APGDConfig,
    APGDDLRConfig,
    APGDTargetedConfig,
    apgd,
    apgd_targeted,
    step_size_checkpoints,
)
from encshield.attacks.whitebox.autoattack import (
    AUTOATTACK_COMPONENTS,
    AutoAttackConfig,
    autoattack,
)
from encshield.attacks.whitebox.base import (
    WHITEBOX_ATTACKS,
    WhiteboxAttack,
    WhiteboxAttackConfig,
    default_predict,
)
from encshield.attacks.whitebox.bpda import BPDA, bpda
from encshield.attacks.whitebox.ensemble import (
    BranchOutputs,
    DetectionAwarePGDConfig,
    JointPGDConfig,
    branch_objective,
)
from encshield.attacks.whitebox.feature_pgd import ENCODER_ATTACKS, feature_pgd
from encshield.attacks.whitebox.fgsm import FGSMConfig, fgsm
from encshield.attacks.whitebox.objectives import (
    OBJECTIVES,
    Objective,
    cross_entropy,
    cw_margin,
    dlr,
    dlr_targeted,
    feature_cosine_distance,
    feature_l2_distance,
    resolve_objective,
)
from encshield.attacks.whitebox.pgd import PGDConfig, PGDL2Config, pgd
from encshield.attacks.whitebox.sanity import SanityFlag, sanity_check
from encshield.attacks.whitebox.square import SquareConfig, square, square_fraction

__all__ = [
    "AUTOATTACK_COMPONENTS",
    "ENCODER_ATTACKS",
    "BPDA",
    "BranchOutputs",
    "DetectionAwarePGDConfig",
    "JointPGDConfig",
    "OBJECTIVES",
    "WHITEBOX_ATTACKS",
    "APGDConfig",
    "APGDDLRConfig",
    "APGDTargetedConfig",
    "WhiteboxAttackConfig",
    "AutoAttackConfig",
    "FGSMConfig",
    "Objective",
    "PGDConfig",
    "PGDL2Config",
    "SanityFlag",
    "SquareConfig",
    "WhiteboxAttack",
    "apgd",
    "apgd_targeted",
    "autoattack",
    "bpda",
    "branch_objective",
    "cross_entropy",
    "cw_margin",
    "default_predict",
    "dlr",
    "dlr_targeted",
    "feature_cosine_distance",
    "feature_l2_distance",
    "feature_pgd",
    "fgsm",
    "pgd",
    "resolve_objective",
    "sanity_check",
    "square",
    "square_fraction",
    "step_size_checkpoints",
]
