"""Backdoor attacks on pre-trained encoders: BadEncoder (Jia, Liu, Gong, "BadEncoder: Backdoor
Attacks to Pre-trained Encoders in Self-Supervised Learning", IEEE S&P 2022; docs/methods.md,
"BadEncoder").

* :mod:`~encshield.backdoor.triggers`: the trigger registry (white patch, random patch, blend);
* :mod:`~encshield.backdoor.losses`: the three losses as pure functions;
* :mod:`~encshield.backdoor.objective`: the objective the shared encoder training loop trains;
* :mod:`~encshield.backdoor.inject`: the run's config and trainer;
* :mod:`~encshield.backdoor.metrics`: CA, BA, ASR, ASR-B from per-sample predictions.

The workflows (:func:`encshield.workflows.inject_backdoor`,
:func:`encshield.workflows.evaluate_backdoor`) and ``encshield backdoor`` use them.
"""

from encshield.backdoor.inject import BadEncoderConfig, BadEncoderTrainer, backdoor_metadata
from encshield.backdoor.losses import (
    badencoder_loss,
    effectiveness_loss,
    reference_utility_loss,
    utility_loss,
)
from encshield.backdoor.metrics import BackdoorMetrics, backdoor_metrics, backdoor_predictions
from encshield.backdoor.objective import BackdoorTarget, BadEncoderObjective, ReferenceAugment
from encshield.backdoor.triggers import TRIGGERS, Trigger, build_trigger, parse_trigger

__all__ = [
    "TRIGGERS",
    "BackdoorMetrics",
    "BackdoorTarget",
    "BadEncoderConfig",
    "BadEncoderObjective",
    "BadEncoderTrainer",
    "ReferenceAugment",
    "Trigger",
    "backdoor_metadata",
    "backdoor_metrics",
    "backdoor_predictions",
    "badencoder_loss",
    "build_trigger",
    "effectiveness_loss",
    "parse_trigger",
    "reference_utility_loss",
    "utility_loss",
]
