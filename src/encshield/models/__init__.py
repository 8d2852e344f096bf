"""Models: ResNet backbones, the Encoder wrapper, normalisation presets, heads, Classifier.

* :func:`build_backbone` / :data:`ARCHITECTURES` / :data:`STEMS`: torchvision-named ResNets.
* :class:`Normalization` / :data:`NORMALIZATIONS`: mean/std applied inside the model.
* :class:`Encoder` / :func:`build_encoder` / :class:`Provenance`: images in [0, 1] -> ``(N, D)``.
* :data:`HEADS` / :func:`build_head`: linear, MLP (Gen-AF/ZePAD, BadEncoder), projector,
  predictor.
* :class:`Classifier`: encoder + head, images in [0, 1] -> logits.
* :mod:`~encshield.models.fusion` / :mod:`~encshield.models.ensemble`: per-sample fusion of branch
  logits (ZePAD's RFDM and ablations, :data:`FUSIONS`), :class:`EnsembleEncoder`,
  :class:`FusedClassifier` (several encoder + head branches as one classifier).
"""

from encshield.models.classifier import Classifier
from encshield.models.encoder import OUTPUT_LAYER, Encoder, Provenance, build_encoder
from encshield.models.ensemble import ROLES, EnsembleEncoder, FusedClassifier, FusionHead
from encshield.models.features import extract_features
from encshield.models.fusion import FUSIONS, fuse_logits, fusion_weights
from encshield.models.heads import HEADS, MLPClassifier, ProjectionMLP, build_head
from encshield.models.normalization import (
    NORMALIZATIONS,
    Normalization,
    NormalizationStats,
    build_normalization,
)
from encshield.models.resnet import (
    ARCHITECTURES,
    MAX_WIDTH,
    STEMS,
    ArchitectureSpec,
    BasicBlock,
    Bottleneck,
    ResNet,
    StemSpec,
    build_backbone,
    check_width,
)

__all__ = [
    "ARCHITECTURES",
    "FUSIONS",
    "HEADS",
    "MAX_WIDTH",
    "NORMALIZATIONS",
    "OUTPUT_LAYER",
    "ROLES",
    "STEMS",
    "ArchitectureSpec",
    "BasicBlock",
    "Bottleneck",
    "Classifier",
    "Encoder",
    "EnsembleEncoder",
    "FusedClassifier",
    "FusionHead",
    "MLPClassifier",
    "Normalization",
    "NormalizationStats",
    "ProjectionMLP",
    "Provenance",
    "ResNet",
    "StemSpec",
    "build_backbone",
    "build_encoder",
    "build_head",
    "build_normalization",
    "extract_features",
    "fuse_logits",
    "fusion_weights",
    "check_width",
]
