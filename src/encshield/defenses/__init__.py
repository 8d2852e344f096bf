"""Defenses of downstream models fine-tuned from pre-trained encoders.

* :mod:`encshield.defenses.losses`: the adversarial fine-tuning losses, pure functions on logits:
  :func:`pgd_at_loss` (Madry et al., ICLR 2018), :func:`trades_loss` and its inner-attack objective
  :func:`trades_inner_objective` (Zhang et al., ICML 2019), :func:`mart_loss` (Wang et al.,
  ICLR 2020) and Gen-AF's :func:`genetic_regularization` (Zhou et al., IEEE S&P 2024).
* :mod:`encshield.defenses.base`: :data:`DEFENSES`, :class:`Defense` (pydantic ``Config``,
  ``fit(encoder, train, num_classes) -> DefenseResult``), :func:`build_defense`.
* :mod:`encshield.defenses.finetuning`: the shared (adversarial) fine-tuning loop.
* Registered defenses: ``none`` (frozen encoder + trained head, :class:`NoDefense`), ``standard``,
  ``pgd_at``, ``trades``, ``mart``, ``genaf_stage1`` (Gen-AF stage 1 only) and ``genaf`` (alias
  ``gen-af``: Gen-AF stages 1 + 2, :class:`GenAF`).
* ``zepad`` (:class:`ZePAD`: MPAE branches fine-tuned once with Gen-AF stage 1, a clean BMP
  branch, RFDM fusion, DAE detection; Lei, Yang, Zhang, ICLR 2026) and ``ensemble_average``
  (:class:`EnsembleAverage`: the same encoders without fine-tuning, logits averaged); branches in
  :mod:`encshield.defenses.branches`.
* :mod:`encshield.defenses.io`: :func:`save_classifier` / :func:`load_classifier`
  (multi-branch files: :mod:`encshield.defenses.ensemble_io`).
* :mod:`encshield.defenses.genaf_stage2`: Gen-AF stage 2 building blocks (probe set, layer
  sensitivity, selection of the least sensitive layers, freezing by module identity, fine-tuning
  of the chosen layers, interpolation) and the two-stage defense :class:`GenAF` built on them.
"""

from encshield.defenses.base import (
    DEFENSES,
    Defense,
    DefenseConfig,
    DefenseResult,
    build_defense,
)
from encshield.defenses.branches import BranchSpec
from encshield.defenses.ensemble_average import EnsembleAverage, EnsembleAverageConfig
from encshield.defenses.ensemble_io import EncoderSet, load_encoder_set, save_encoder_set
from encshield.defenses.finetuning import (
    AttackSettings,
    FinetuningConfig,
    FinetuningDefense,
    PairedLogitsDefense,
    check_no_parameter_grads,
)
from encshield.defenses.genaf import GenAF, GenAFConfig
from encshield.defenses.genaf_stage1 import GenAFStage1, GenAFStage1Config
from encshield.defenses.io import describe_head, load_classifier, save_classifier
from encshield.defenses.losses import (
    genetic_regularization,
    mart_loss,
    pgd_at_loss,
    trades_inner_objective,
    trades_loss,
)
from encshield.defenses.mart import MART, MARTConfig
from encshield.defenses.none import NoDefense, NoDefenseConfig
from encshield.defenses.pgd_at import PGDAdversarialTraining
from encshield.defenses.standard import StandardFinetuning
from encshield.defenses.trades import TRADES, TRADESConfig
from encshield.defenses.zepad import (
    BranchEnsembleDefense,
    EnsembleConfig,
    SharedFinetuning,
    ZePAD,
    ZePADConfig,
)

__all__ = [
    "DEFENSES",
    "MART",
    "NoDefense",
    "NoDefenseConfig",
    "TRADES",
    "AttackSettings",
    "BranchEnsembleDefense",
    "BranchSpec",
    "EncoderSet",
    "EnsembleAverage",
    "EnsembleAverageConfig",
    "EnsembleConfig",
    "SharedFinetuning",
    "ZePAD",
    "ZePADConfig",
    "load_encoder_set",
    "save_encoder_set",
    "Defense",
    "DefenseConfig",
    "DefenseResult",
    "FinetuningConfig",
    "FinetuningDefense",
    "PairedLogitsDefense",
    "GenAF",
    "GenAFConfig",
    "GenAFStage1",
    "GenAFStage1Config",
    "MARTConfig",
    "PGDAdversarialTraining",
    "StandardFinetuning",
    "TRADESConfig",
    "build_defense",
    "check_no_parameter_grads",
    "describe_head",
    "load_classifier",
    "save_classifier",
    "genetic_regularization",
    "mart_loss",
    "pgd_at_loss",
    "trades_inner_objective",
    "trades_loss",
]
