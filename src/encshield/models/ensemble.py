"""Several encoders as one: :class:`EnsembleEncoder`, and the fused multi-branch classifier.

* :class:`EnsembleEncoder`: images in [0, 1] -> the members' features, concatenated (default)
  or averaged. It is an encoder like any other (``feature_dim``, ``input_size``), so a universal
  attack can be fitted on an ensemble of public encoders (the transfer attacker of ZePAD's
  threat model, docs/methods.md, "ZePAD") and feature attacks reach every member at once.
* :class:`FusionHead`: the concatenated features -> one head per branch -> per-sample fusion of
  the branch logits (:mod:`encshield.models.fusion`: RFDM, equal, entropy).
* :class:`FusedClassifier`: ``Classifier(EnsembleEncoder, FusionHead)`` with the branch roles
  (``mpae`` / ``bmp``) and the detector settings of ZePAD (Lei, Yang, Zhang, ICLR 2026). It maps
  images in [0, 1] to fused logits, so every metric and attack applies unchanged;
  :meth:`FusedClassifier.branch_logits` gives the branches' logits (joint and detection-aware
  attacks, DAE detection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.models.classifier import Classifier
from encshield.models.encoder import Encoder, Provenance
from encshield.models.fusion import FUSIONS, fuse_logits, fusion_weights

__all__ = ["ROLES", "EnsembleEncoder", "FusedClassifier", "FusionHead"]

#: Branch roles of ZePAD: multi-pattern adversarially fine-tuned encoder, benign-mode branch.
ROLES = ("mpae", "bmp")

Combine = Literal["concat", "mean"]


class EnsembleEncoder(nn.Module):
    """Images ``(N, C, H, W)`` in [0, 1] -> the members' features, concatenated or averaged.

    Args:
        encoders: the member encoders (each normalises its own input).
        combine: ``concat`` (``(N, sum D_i)``, the default) or ``mean`` (``(N, D)``; all members
            must have the same feature dimension).
        names: optional names of the members (recorded in :attr:`provenance`).

    Raises:
        ConfigError: no member, members expecting different channel counts, or ``mean`` over
            different feature dimensions.
    """

    def __init__(self, encoders: Sequence[nn.Module], combine: Combine = "concat",
                 names: Sequence[str] | None = None) -> None:
        super().__init__()
        members = list(encoders)
        if not members:
            raise ConfigError("an ensemble encoder needs at least one encoder")
        dims = [int(getattr(e, "feature_dim", 0)) for e in members]
        if any(d < 1 for d in dims):
            raise ConfigError("every member of an ensemble encoder needs an int 'feature_dim'")
        sizes = [tuple(getattr(e, "input_size", (3, 32, 32))) for e in members]
        if len({s[0] for s in sizes}) != 1:
            raise ConfigError(f"ensemble members expect different channel counts: {sizes}")
        if combine not in ("concat", "mean"):
            raise ConfigError(f"combine {combine!r} is not allowed; allowed values: concat, mean")
        if combine == "mean" and len(set(dims)) != 1:
            raise ConfigError(f"combine=mean needs members of one feature dimension, got {dims}")
        self.encoders = nn.ModuleList(members)
        self.combine = combine
        self.feature_dims = dims
        self.input_size = sizes[0]
        self.names = [str(n) for n in names] if names is not None else [
            f"member{i}" for i in range(len(members))]
        self.provenance = Provenance(arch="ensemble", width=0, stem="", extra={
            "combine": combine, "members": [
                {"name": n, **(e.provenance.to_dict() if isinstance(e, Encoder) else {})}
                for n, e in zip(self.names, members)]})

    @property
    def feature_dim(self) -> int:
        """``sum D_i`` (concat) or ``D`` (mean)."""
        return sum(self.feature_dims) if self.combine == "concat" else self.feature_dims[0]

    def branch_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's features ``(N, D_i)`` for images ``x`` in [0, 1]."""
        return [encoder(x) for encoder in self.encoders]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> concatenated ``(N, sum D_i)`` or averaged ``(N, D)`` features."""
        features = self.branch_features(x)
        if self.combine == "mean":
            return torch.stack(features).mean(dim=0)
        return torch.cat(features, dim=1)


class FusionHead(nn.Module):
    """Concatenated branch features ``(N, sum D_i)`` -> fused logits ``(N, C)``.

    Args:
        heads: one head per branch, ``(N, D_i) -> (N, C)`` (all with ``C`` outputs).
        feature_dims: ``D_i`` per branch (how the input is split).
        fusion: a rule of :data:`encshield.models.fusion.FUSIONS` (``rfdm``, ``equal``,
            ``entropy``).
        k: RFDM's amplification (3 in ZePAD).
    """

    def __init__(self, heads: Sequence[nn.Module], feature_dims: Sequence[int],
                 fusion: str = "rfdm", k: float = 3.0) -> None:
        super().__init__()
        if len(heads) != len(feature_dims) or not heads:
            raise ConfigError(f"{len(heads)} heads for {len(feature_dims)} branches")
        self.heads = nn.ModuleList(heads)
        self.feature_dims = [int(d) for d in feature_dims]
        self.fusion = FUSIONS.canonical(fusion)
        self.k = float(k)
        outs = {_out_dim(h) for h in heads}
        if len(outs) != 1:
            raise ConfigError(f"the branch heads have different numbers of classes: {outs}")
        self.out_dim = outs.pop()

    def branch_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per branch logits ``(N, C)`` from the concatenated features."""
        parts = torch.split(features, self.feature_dims, dim=1)
        return [head(part) for head, part in zip(self.heads, parts)]

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """The fusion weights ``(N, B)`` per sample."""
        return fusion_weights(self.branch_logits(features), self.fusion, self.k)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Concatenated features -> fused logits ``sum_i w_i z_i`` ``(N, C)``."""
        return fuse_logits(self.branch_logits(features), self.fusion, self.k)


def _out_dim(head: nn.Module) -> int:
    out = getattr(head, "out_dim", None) or getattr(head, "out_features", None)
    if out is None:
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"cannot tell the number of classes of head {type(head).__name__}")
        out = linears[-1].out_features
    return int(out)


class FusedClassifier(Classifier):
    """Several (encoder, head) branches fused per sample: images in [0, 1] -> fused logits.

    ``encoder`` is an :class:`EnsembleEncoder` (concatenated features) and ``head`` a
    :class:`FusionHead`, so ``forward`` is ``head(encoder(x))`` as for every Classifier.

    Args:
        encoders: one encoder per branch.
        heads: one head per branch.
        roles: ``mpae`` or ``bmp`` per branch (ZePAD's branch kinds).
        fusion: fusion rule (``rfdm``, ``equal``, ``entropy``); ``k``: RFDM's amplification.
        names: branch names (e.g. the encoder specs), recorded in files and records.
        detector: settings of the confidence-gap detector (``threshold``, ``statistic``,
            ``confidence``; see :func:`encshield.evaluation.detection.detector_of`), or ``None``.
    """

    def __init__(self, encoders: Sequence[nn.Module], heads: Sequence[nn.Module],
                 roles: Sequence[str], *, fusion: str = "rfdm", k: float = 3.0,
                 names: Sequence[str] | None = None,
                 detector: dict[str, Any] | None = None) -> None:
        roles = [str(r) for r in roles]
        if len(roles) != len(encoders) or len(heads) != len(encoders):
            raise ConfigError(f"{len(encoders)} encoders, {len(heads)} heads and {len(roles)} "
                              "roles: one of each per branch")
        bad = sorted({r for r in roles if r not in ROLES})
        if bad:
            raise ConfigError(f"branch roles {bad} are not allowed; allowed values: "
                              f"{', '.join(ROLES)}")
        ensemble = EnsembleEncoder(encoders, "concat", names)
        super().__init__(ensemble, FusionHead(heads, ensemble.feature_dims, fusion, k))
        self.roles = roles
        self.detector_settings = dict(detector) if detector is not None else None

    @property
    def names(self) -> list[str]:
        """Branch names."""
        return list(self.ensemble.names)

    @property
    def ensemble(self) -> EnsembleEncoder:
        """The :class:`EnsembleEncoder` of the branches."""
        assert isinstance(self.encoder, EnsembleEncoder)
        return self.encoder

    @property
    def fusion_head(self) -> FusionHead:
        """The :class:`FusionHead`."""
        assert isinstance(self.head, FusionHead)
        return self.head

    @property
    def num_classes(self) -> int:
        return self.fusion_head.out_dim

    def indices(self, role: str) -> list[int]:
        """Positions of the branches of ``role`` (``mpae`` or ``bmp``)."""
        return [i for i, r in enumerate(self.roles) if r == role]

    def branch_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images in [0, 1] -> each branch's logits ``(N, C)`` (one forward per encoder)."""
        return self.fusion_head.branch_logits(self.encoder(x))

    def branch(self, i: int) -> Classifier:
        """Branch ``i`` as a plain :class:`Classifier` (sharing the modules)."""
        return Classifier(self.ensemble.encoders[i], self.fusion_head.heads[i])

    def fuse(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fused logits of given branch logits (this model's rule and ``k``)."""
        return fuse_logits(logits, self.fusion_head.fusion, self.fusion_head.k)

    def describe(self) -> dict[str, Any]:
        """Branch names and roles, fusion, ``k`` and detector settings (JSON-ready)."""
        return {"branches": [{"name": n, "role": r} for n, r in zip(self.names, self.roles)],
                "fusion": self.fusion_head.fusion, "k": self.fusion_head.k,
                "detector": self.detector_settings}
