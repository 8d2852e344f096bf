"""``zepad``: ZePAD, the dual-branch zero-sacrifice defense (Lei, Yang, Zhang, "ZePAD", ICLR 2026;
docs/methods.md, "ZePAD"; METHODS.md section 3), and the base of multi-encoder defenses.

ZePAD keeps a downstream model accurate on clean inputs **and** robust to downstream-agnostic
adversarial examples (DAEs) by fusing several branches per sample
(:class:`~encshield.models.FusedClassifier`):

1. **MPAE** branches (:mod:`encshield.defenses.branches`): pre-trained encoders that differ in SSL
   method and pre-training data, each adversarially fine-tuned **once** with Gen-AF stage 1
   (:class:`~encshield.defenses.GenAFStage1`, the shared fine-tuning loop; config ``aft``,
   20 epochs as ZePAD's copy) on the fine-tuning data (``finetune_on``; default: the downstream
   training data), then frozen;
2. a **BMP** branch: a clean pre-trained encoder that is not the victim;
3. a fresh head per branch trained on the clean downstream data (the CGCL head protocol,
   :func:`encshield.downstream.train_head`, config ``heads``);
4. RFDM fusion of the branch logits (``fusion="rfdm"``, ``k=3``; ablations ``equal``,
   ``entropy``; :mod:`encshield.models.fusion`) and the confidence-gap DAE detector
   (``detector``, :mod:`encshield.evaluation.detection`).

**Persistent robustness** (fine-tune once, reuse across downstream tasks): with ``finetune_on``
the MPAE encoders are fine-tuned on that dataset; :meth:`ZePAD.finetune` returns them as an
:class:`~encshield.defenses.ensemble_io.EncoderSet` (a file, the bench's ``finetune`` cell) and
:meth:`ZePAD.use_finetuned` makes :meth:`ZePAD.fit` build only the heads for a new downstream
dataset (checked against :meth:`ZePAD.finetune_key`).

The encoder given to ``fit`` is the victim (the public encoder of the DAE protocol); by default
it is one MPAE branch, as in the paper (victim W-MSE AFT + BYOL AFT + clean SimCLR BMP).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import torch
from pydantic import Field, field_validator

from encshield.data import ImageDataset
from encshield.defenses.base import DEFENSES, Defense, DefenseConfig, DefenseResult
from encshield.defenses.branches import (
    DEFAULT_BMP,
    DEFAULT_MPAE,
    VICTIM,
    BranchSpec,
    LoadedBranch,
    check_encoder_spec,
    load_branches,
    load_finetune_data,
    resolve_specs,
    spec_identity,
)
from encshield.defenses.ensemble_io import EncoderSet
from encshield.defenses.genaf_stage1 import GenAFStage1, GenAFStage1Config
from encshield.defenses.none import NoDefenseConfig
from encshield.downstream import train_head
from encshield.errors import ConfigError
from encshield.evaluation.detection import DetectorConfig
from encshield.models import FUSIONS, Encoder, FusedClassifier
from encshield.models.modules import restored_modes

__all__ = ["BranchEnsembleDefense", "EnsembleConfig", "SharedFinetuning", "ZePAD",
           "ZePADConfig"]


class EnsembleConfig(DefenseConfig):
    """Branches, heads, fusion and detector of a multi-encoder defense (docs/methods.md, "ZePAD").

    Attributes:
        branches: ``[{encoder: victim | zoo:NAME | PATH, role: mpae | bmp}, ...]``; ``None``:
            the defaults of :func:`encshield.defenses.branches.resolve_specs` (the victim, the
            first of ``default_mpae`` and the first of ``default_bmp`` that this zoo holds).
        default_mpae, default_bmp: the preference lists of the defaults (zoo names this zoo does
            not hold are skipped).
        heads: per-branch head training (the CGCL protocol: MLP, 20 epochs, Adam 5e-3).
        fusion: ``rfdm`` (ZePAD), ``equal`` or ``entropy``; ``k``: RFDM's amplification (3).
        detector: the confidence-gap detector (threshold 0.1, MPAE statistic ``mean``, ``raw``
            confidences); ``None``: the model exposes no detector.
        cost_images: images timed for the inference-cost entry of the record.
    """

    branches: list[BranchSpec] | None = None
    default_mpae: list[str] = Field(default_factory=lambda: list(DEFAULT_MPAE))
    default_bmp: list[str] = Field(default_factory=lambda: list(DEFAULT_BMP))
    heads: NoDefenseConfig = Field(default_factory=NoDefenseConfig)
    fusion: str = "rfdm"
    k: float = Field(3.0, ge=0.0, allow_inf_nan=False)
    detector: DetectorConfig | None = Field(default_factory=DetectorConfig)
    cost_images: int = Field(64, ge=1)

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, value: str) -> str:
        try:
            return FUSIONS.canonical(value)
        except ConfigError as error:
            raise ValueError(str(error)) from None

    @field_validator("branches")
    @classmethod
    def _one_mpae(cls, values: list[BranchSpec] | None) -> list[BranchSpec] | None:
        if values is not None and not any(b.role == "mpae" for b in values):
            raise ValueError("at least one branch must have role mpae (ZePAD fuses one or more "
                             "MPAE branches with the BMP)")
        return values

    @field_validator("default_mpae", "default_bmp")
    @classmethod
    def _candidates(cls, values: list[str]) -> list[str]:
        for value in values:
            if value.strip() == VICTIM:
                raise ValueError("a default candidate cannot be 'victim' (the victim is always "
                                 "the first MPAE of the defaults)")
            check_encoder_spec(value, known_zoo=False)
        return values


class ZePADConfig(EnsembleConfig):
    """:class:`EnsembleConfig` plus the MPAE fine-tuning.

    Attributes:
        aft: Gen-AF stage 1 settings of the MPAE fine-tuning
            (:class:`~encshield.defenses.GenAFStage1Config`; 20 epochs as ZePAD's code).
        finetune_on: ``DATASET[:SPLIT]`` to fine-tune the MPAE encoders on (persistent
            robustness); ``None``: the downstream training data.
        finetune_limit: a seeded class-stratified subset of that many fine-tuning images.
    """

    aft: GenAFStage1Config = Field(default_factory=lambda: GenAFStage1Config(epochs=20))
    finetune_on: str | None = None
    finetune_limit: int | None = Field(None, ge=1)

    @field_validator("finetune_on")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from encshield.data.api import parse_split
        from encshield.data.base import DATASETS

        name, _, split = value.partition(":")
        try:
            DATASETS.canonical(name.strip())
            for part in (split.strip() or "train").split("+"):
                parse_split(part)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return value.strip()


def _ms_per_image(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Median wall time (ms per image) of a batched forward under ``torch.inference_mode``."""
    times = []
    with restored_modes(model), torch.inference_mode():
        model.eval()
        model(x[:1])  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times) / max(int(x.shape[0]), 1)


class BranchEnsembleDefense(Defense):
    """Base of the multi-encoder defenses: branches -> heads -> fused classifier.

    :meth:`fit` loads the branches (:func:`~encshield.defenses.branches.load_branches`), takes
    the MPAE encoders from :meth:`mpae_encoders` (here: the pre-trained ones), trains one head
    per branch on the clean downstream data and fuses them
    (:class:`~encshield.models.FusedClassifier`). The record's ``details`` hold every branch
    (spec, sha256, role, fine-tuning, head accuracy), the fusion, the detector and the inference
    cost against the single-encoder model (``cost``).
    """

    Config = EnsembleConfig
    config: EnsembleConfig

    def specs(self, victim: Encoder) -> list[BranchSpec]:
        """The resolved branch specs for ``victim`` (explicit branches or the defaults)."""
        cfg = self.config
        return resolve_specs(cfg.branches, getattr(victim.provenance, "sha256", None),
                             default_mpae=cfg.default_mpae, default_bmp=cfg.default_bmp)

    def mpae_encoders(self, branches: list[LoadedBranch], victim: Encoder, train: ImageDataset,
                      num_classes: int, *, seed: int, device: torch.device | str,
                      progress: bool) -> tuple[list[Encoder], dict[str, Any]]:
        """The encoders of the MPAE branches (in branch order) and a record of how they were
        made; the base uses the pre-trained encoders unchanged."""
        return [b.encoder for b in branches if b.spec.role == "mpae"], {"adversarial": False}

    def fit(
        self,
        encoder: Encoder,
        train: ImageDataset,
        num_classes: int,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> DefenseResult:
        """The fused classifier of the branches for ``train`` (``encoder``: the victim, never
        modified)."""
        cfg = self.config
        if len(train) == 0:
            raise ConfigError("the defense's training set is empty")
        start = time.perf_counter()
        branches = load_branches(self.specs(encoder), encoder, device)
        mpae, finetune = self.mpae_encoders(branches, encoder, train, num_classes, seed=seed,
                                            device=device, progress=progress)
        encoders = iter(mpae)
        final = [next(encoders) if b.spec.role == "mpae" else b.encoder for b in branches]
        heads, described = [], []
        head_losses: list[float] = []
        h = cfg.heads
        for branch, branch_encoder in zip(branches, final):
            classifier, head_record = train_head(
                branch_encoder, train.images, train.labels, num_classes, head=h.head,
                epochs=h.epochs, lr=h.lr, weight_decay=h.weight_decay, gamma=h.gamma,
                batch_size=h.batch_size, seed=seed, device=device)
            heads.append(classifier.head)
            head_losses = head_losses or list(head_record.losses)
            described.append({"name": branch.name, "role": branch.spec.role,
                              "identity": branch.identity,
                              "head_train_accuracy": head_record.train_accuracy,
                              "head_losses": list(head_record.losses)})
        detector = None
        if cfg.detector is not None:
            detector = cfg.detector.model_dump(mode="json")
            detector["k"] = cfg.k if detector["k"] is None else detector["k"]
        model = FusedClassifier(final, heads, [b.spec.role for b in branches], fusion=cfg.fusion,
                                k=cfg.k, names=[b.name for b in branches], detector=detector)
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        x = train.to_float(slice(0, min(cfg.cost_images, len(train)))).to(device)
        single = model.branch(model.indices("mpae")[0])
        fused_ms, single_ms = _ms_per_image(model, x), _ms_per_image(single, x)
        with torch.inference_mode():
            correct = sum(int((model(xb).argmax(1) == yb).sum())
                          for xb, yb in train.batches(h.batch_size, device=device))
        accuracy = correct / len(train)
        roles = ", ".join(f"{b.name} ({b.spec.role})" for b in branches)
        record = self._record(
            num_classes=num_classes, seed=seed, device=device,
            time_s=time.perf_counter() - start, epochs=h.epochs,
            losses=list(head_losses), train_accuracy=[accuracy],
            num_train=len(train),
            summary=f"{len(branches)} branches: {roles}; fusion {cfg.fusion} (k={cfg.k:g}); "
                    f"inference {fused_ms:.2f} ms/image vs {single_ms:.2f} single "
                    f"({fused_ms / max(single_ms, 1e-9):.1f}x)",
            details={"branches": described, "fusion": cfg.fusion, "k": cfg.k,
                     "detector": detector, "finetune": finetune,
                     "cost": {"fused_ms_per_image": fused_ms, "single_ms_per_image": single_ms,
                              "ratio": fused_ms / max(single_ms, 1e-9),
                              "images": int(x.shape[0]), "branches": len(branches)}})
        return DefenseResult(classifier=model, record=record)


class SharedFinetuning:
    """A defense whose fine-tuning stage several downstream models can share (ZePAD's MPAE
    encoders). :func:`encshield.workflows.finetune_encoders` writes :meth:`finetune`'s result;
    :func:`encshield.workflows.fit_defense` hands a file to :meth:`use_finetuned`, and the bench
    runs the stage once per :meth:`finetune_key` (its ``finetune`` cells)."""

    #: Data root for ``finetune_on`` (set by the workflows; ``None``: ``$ENCSHIELD_DATA``).
    data_root: str | None = None

    def finetune_key(self, victim_sha256: str | None) -> dict[str, Any] | None:
        """What determines the shared fine-tuning (``None``: no fine-tuning stage)."""
        raise NotImplementedError

    def finetune_overrides(self) -> dict[str, Any]:
        """The config fields that determine the fine-tuning (JSON), enough to rebuild a defense
        that runs the same :meth:`finetune`."""
        raise NotImplementedError

    def finetune(self, victim: Encoder, *, seed: int = 0, device: torch.device | str = "cpu",
                 progress: bool = False, train: ImageDataset | None = None,
                 num_classes: int | None = None) -> EncoderSet:
        """Run the shared fine-tuning stage."""
        raise NotImplementedError

    def use_finetuned(self, encoders: EncoderSet) -> None:
        """Reuse a finished fine-tuning in the next :meth:`fit`."""
        raise NotImplementedError


@DEFENSES.register("zepad")
class ZePAD(SharedFinetuning, BranchEnsembleDefense):
    """ZePAD (Lei, Yang, Zhang, ICLR 2026): fine-tuned MPAE + clean BMP branches, RFDM fusion.

    MPAE encoders fine-tuned once with Gen-AF stage 1, a clean BMP encoder, one head per branch,
    per-sample RFDM fusion of the logits and the confidence-gap DAE detector."""

    Config = ZePADConfig
    config: ZePADConfig

    def __init__(self, config: DefenseConfig | dict[str, Any] | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.finetuned: EncoderSet | None = None

    def finetune_key(self, victim_sha256: str | None) -> dict[str, Any]:
        """The MPAE encoders (spec and sha256), the Gen-AF stage-1 config and the fine-tuning
        data: two ZePAD configs with the same key share one fine-tuning."""
        cfg = self.config
        specs = resolve_specs(cfg.branches, victim_sha256, default_mpae=cfg.default_mpae,
                              default_bmp=cfg.default_bmp)
        mpae = [spec_identity(s.encoder, victim_sha256) for s in specs if s.role == "mpae"]
        key: dict[str, Any] = json.loads(json.dumps({
            "mpae": mpae, "aft": cfg.aft.model_dump(mode="json"),
            "finetune_on": cfg.finetune_on, "finetune_limit": cfg.finetune_limit}))
        return key

    def finetune_overrides(self) -> dict[str, Any]:
        fields = ("branches", "default_mpae", "default_bmp", "aft", "finetune_on",
                  "finetune_limit")
        dumped = self.config.model_dump(mode="json")
        return {name: dumped[name] for name in fields}

    def use_finetuned(self, encoders: EncoderSet) -> None:
        self.finetuned = encoders

    def _finetune_data(self, train: ImageDataset | None, num_classes: int | None, seed: int,
                       image_size: int) -> tuple[ImageDataset, int, dict[str, Any]]:
        cfg = self.config
        if cfg.finetune_on is not None:
            return load_finetune_data(cfg.finetune_on, cfg.finetune_limit, seed, image_size,
                                      self.data_root)
        if train is None or num_classes is None:
            raise ConfigError("zepad: without finetune_on the MPAE encoders are fine-tuned on "
                              "the downstream training data; give it (train=, num_classes=)")
        if cfg.finetune_limit is not None and cfg.finetune_limit < len(train):
            from encshield.evaluation.subsets import select_subset

            idx = select_subset(train.labels, cfg.finetune_limit, seed=seed)
            assert idx is not None
            train = train.subset(idx)
        return train, num_classes, {"dataset": train.name, "split": train.split,
                                    "used": len(train), "limit": cfg.finetune_limit,
                                    "seed": seed, "downstream": True}

    def finetune(self, victim: Encoder, *, seed: int = 0, device: torch.device | str = "cpu",
                 progress: bool = False, train: ImageDataset | None = None,
                 num_classes: int | None = None,
                 branches: list[LoadedBranch] | None = None) -> EncoderSet:
        """Fine-tune every MPAE encoder once with Gen-AF stage 1 (``aft``) on ``finetune_on``
        (else on ``train``); returns them, frozen, as an
        :class:`~encshield.defenses.ensemble_io.EncoderSet` keyed by :meth:`finetune_key`."""
        cfg = self.config
        started = time.perf_counter()
        branches = branches or load_branches(self.specs(victim), victim, device)
        mpae = [b for b in branches if b.spec.role == "mpae"]
        size = int(victim.input_size[-1])
        data, classes, info = self._finetune_data(train, num_classes, seed, size)
        encoders, records = [], []
        for branch in mpae:
            stage1 = GenAFStage1(cfg.aft)
            for callback in self._callbacks:
                stage1.add_callback(callback)
            result = stage1.fit(branch.encoder, data, classes, seed=seed, device=device,
                                progress=progress)
            tuned = result.classifier.encoder
            assert isinstance(tuned, Encoder)
            for p in tuned.parameters():
                p.requires_grad_(False)
            encoders.append(tuned.eval())
            records.append({"name": branch.name, "identity": branch.identity,
                            "genaf_stage1": result.record.to_dict()})
        victim_sha = getattr(victim.provenance, "sha256", None)
        return EncoderSet(
            encoders=encoders, names=[b.name for b in mpae], roles=["mpae"] * len(mpae),
            sources=[b.identity for b in mpae], key=self.finetune_key(victim_sha),
            record={"data": info, "branches": records, "seed": seed,
                    "time_s": time.perf_counter() - started})

    def mpae_encoders(self, branches: list[LoadedBranch], victim: Encoder, train: ImageDataset,
                      num_classes: int, *, seed: int, device: torch.device | str,
                      progress: bool) -> tuple[list[Encoder], dict[str, Any]]:
        """The fine-tuned MPAE encoders: reused (:meth:`use_finetuned`, checked against
        :meth:`finetune_key`) or fine-tuned now (:meth:`finetune`)."""
        if self.finetuned is not None:
            done = self.finetuned
            expected = self.finetune_key(getattr(victim.provenance, "sha256", None))
            if done.key != expected:
                raise ConfigError("zepad: the fine-tuned encoders were made with other MPAE "
                                  "encoders, Gen-AF settings or fine-tuning data than this "
                                  "config asks for; fine-tune again (encshield defend zepad "
                                  "without --finetuned)")
            return ([e.to(device).eval() for e in done.encoders],
                    {"adversarial": True, "reused": done.sha256 or True, "data":
                     done.record.get("data"), "time_s": done.record.get("time_s")})
        result = self.finetune(victim, seed=seed, device=device, progress=progress, train=train,
                               num_classes=num_classes, branches=branches)
        return result.encoders, {"adversarial": True, "reused": False, **result.record}
