"""Universal (downstream-agnostic) attacks on a pre-trained encoder: ``fit -> Perturbation``.

Registered in :data:`UNIVERSAL_ATTACKS` (one file per attack):

* ``random_noise`` — control: ``U(-eps, eps)`` per pixel.
* ``uap`` — Moosavi-Dezfooli et al., CVPR 2017 (DeepFool steps on a surrogate classifier).
* ``uapgd`` — Deng & Karam, ICIP 2020 (per-image momentum sign-PGD on a surrogate classifier).
* ``ssp`` — Naseer et al., CVPR 2020 (universal variant: distort squared mid-layer activations).
* ``pap`` — Ban & Dong, NeurIPS 2022 (L4A base / fuse / ugs: lift low-layer activation energy).
* ``advencoder`` — Zhou et al., ICCV 2023, Adv-PER (generator, InfoNCE + high-frequency loss).
* ``advencoder_patch`` — Zhou et al., ICCV 2023, Adv-PAT (the same as a pasted patch).

Example::

    from encshield.attacks import fit_universal
    delta = fit_universal("pap", encoder, surrogate_images, eps=10 / 255, seed=0, variant="ugs")
    delta.save("pap.safetensors")
"""

# Importing the attack modules (below) registers them.
from encshield.attacks.universal.advencoder import AdvEncoder
from encshield.attacks.universal.advencoder_patch import AdvEncoderPatch
from encshield.attacks.universal.base import (
    DEFAULT_EPS,
    UNIVERSAL_ATTACKS,
    ActivationTap,
    FitContext,
    UniversalAttack,
    UniversalAttackConfig,
    fit_universal,
)
from encshield.attacks.universal.pap import PAP
from encshield.attacks.universal.random_noise import RandomNoise
from encshield.attacks.universal.ssp import SSP
from encshield.attacks.universal.uap import UAP, deepfool
from encshield.attacks.universal.uapgd import UAPGD

__all__ = [
    "DEFAULT_EPS",
    "PAP",
    "SSP",
    "UAP",
    "UAPGD",
    "UNIVERSAL_ATTACKS",
    "ActivationTap",
    "AdvEncoder",
    "AdvEncoderPatch",
    "UniversalAttackConfig",
    "FitContext",
    "RandomNoise",
    "UniversalAttack",
    "deepfool",
    "fit_universal",
]
