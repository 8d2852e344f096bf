"""The workflow layer: one function per job, shared by the CLI, the bench and the Python API.

Each workflow takes an encoder spec (``zoo:NAME`` or a checkpoint path), dataset specs
(:class:`DataSpec`: name, split slice, limit, seed -- one class-stratified seeded subset rule),
a seed and config overrides, and returns the artefact plus a typed record:

* :func:`fit_attack` -> ``(Perturbation, AttackRecord)``: a universal attack on the encoder alone.
* :func:`fit_defense` -> ``(Classifier, DefenseRecord)``: a downstream model with a defense.
* :func:`finetune_encoders` -> ``EncoderSet``: a defense's shared fine-tuning stage (ZePAD's
  MPAE encoders, fine-tuned once and reused across downstream datasets).
* :func:`evaluate_model` -> ``EvaluationRecord``: the DAE protocol on a downstream model.
* :func:`evaluate_encoder` -> ``EncoderEvalRecord``: kNN and linear probe of an encoder.
* :func:`tune_defense` -> ``TuneRecord``: a defense's settings chosen on validation data.
* :func:`inject_backdoor` -> ``(Encoder, BackdoorRecord)``: BadEncoder on a public encoder.
* :func:`evaluate_backdoor` -> ``BackdoorEvalRecord``: CA, BA, ASR, ASR-B downstream.

Nothing above this layer (``encshield.cli``, ``encshield.bench``) loads, selects or fits anything
itself. New jobs (AToP) get their workflow here.
"""

from encshield.workflows.attack import fit_attack
from encshield.workflows.backdoor import TargetSpec, evaluate_backdoor, inject_backdoor
from encshield.workflows.defense import finetune_encoders, fit_defense
from encshield.workflows.encoder import evaluate_encoder
from encshield.workflows.evaluate import evaluate_model, load_perturbations
from encshield.workflows.specs import (
    DataSpec,
    ResolvedEncoder,
    SelectedData,
    encoder_identity,
    parse_device,
    resolve_encoder,
)
from encshield.workflows.tune import tune_defense

__all__ = [
    "DataSpec",
    "ResolvedEncoder",
    "SelectedData",
    "TargetSpec",
    "encoder_identity",
    "evaluate_backdoor",
    "evaluate_encoder",
    "evaluate_model",
    "finetune_encoders",
    "fit_attack",
    "fit_defense",
    "inject_backdoor",
    "load_perturbations",
    "parse_device",
    "resolve_encoder",
    "tune_defense",
]
