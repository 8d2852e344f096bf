"""Attacks on pre-trained encoders and their downstream models.

* :class:`Perturbation`: a universal additive delta (L-inf budget) or patch; applies, saves,
  loads and renders itself.
* :mod:`encshield.attacks.universal`: downstream-agnostic universal attacks fitted on the encoder
  alone (:data:`UNIVERSAL_ATTACKS`, :class:`UniversalAttack`, :func:`fit_universal`).
* :mod:`encshield.attacks.whitebox`: per-sample white-box and adaptive attacks on any classifier
  (:data:`WHITEBOX_ATTACKS`: PGD, APGD-CE/DLR/T, FGSM; EOT, :class:`BPDA`, :func:`sanity_check`)
  and the encoder-only :func:`feature_pgd`.
"""

from encshield.attacks.perturbation import Perturbation
from encshield.attacks.universal import (
    UNIVERSAL_ATTACKS,
    UniversalAttack,
    fit_universal,
)
from encshield.attacks.whitebox import (
    BPDA,
    WHITEBOX_ATTACKS,
    SanityFlag,
    apgd,
    apgd_targeted,
    feature_pgd,
    fgsm,
    pgd,
    sanity_check,
)

__all__ = [
    "BPDA",
    "UNIVERSAL_ATTACKS",
    "WHITEBOX_ATTACKS",
    "Perturbation",
    "SanityFlag",
    "UniversalAttack",
    "apgd",
    "apgd_targeted",
    "feature_pgd",
    "fgsm",
    "fit_universal",
    "pgd",
    "sanity_check",
]
