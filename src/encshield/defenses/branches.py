"""The branches of multi-encoder defenses (ZePAD and the plain ensemble baseline).

ZePAD (Lei, Yang, Zhang, ICLR 2026; docs/methods.md, "ZePAD"; METHODS.md 3.2) classifies with
several branches, each a pre-trained encoder with a head trained on the downstream data:

* ``mpae`` (multi-pattern adversarially fine-tuned encoder): an encoder fine-tuned **once** with
  Gen-AF stage 1 on the fine-tuning data, then frozen; the MPAE encoders should differ in SSL
  method and pre-training data (the paper: the victim W-MSE/CIFAR-10 and BYOL/ImageNet-100);
* ``bmp`` (benign-mode branch): a clean pre-trained encoder that is **not the victim** (the
  paper: SimCLR/CIFAR-10), untouched.

A branch names its encoder as ``victim`` (the encoder given to ``fit``: the public encoder of
the DAE protocol), ``zoo:NAME`` or a checkpoint path (:class:`BranchSpec`). Without explicit
branches the defaults are: the victim as an MPAE, the first available encoder of
``default_mpae`` that is not the victim as the second MPAE, and the first available encoder of
``default_bmp`` that is neither the victim nor an MPAE (else one that is not the victim) as the
BMP (:func:`resolve_specs`). Zoo names of the defaults that this zoo does not hold are skipped,
so the preference lists can name encoders the zoo will gain.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, field_validator

from encshield.data import ImageDataset
from encshield.errors import ConfigError
from encshield.models import Encoder

__all__ = [
    "DEFAULT_BMP",
    "DEFAULT_MPAE",
    "VICTIM",
    "BranchSpec",
    "LoadedBranch",
    "check_encoder_spec",
    "load_branches",
    "load_finetune_data",
    "resolve_specs",
    "spec_identity",
    "weights_digest",
]

#: The spec naming the encoder given to ``fit`` (the victim / public encoder).
VICTIM = "victim"
#: Second MPAE, in order of preference: differs from a CIFAR-10 victim in method and data.
DEFAULT_MPAE = ("zoo:byol-tinyimagenet-r18w16", "zoo:simclr-tinyimagenet-r18w16",
                "zoo:byol-cifar10-r18w16")
#: BMP, in order of preference (the paper's BMP is SimCLR on CIFAR-10).
DEFAULT_BMP = ("zoo:simclr-cifar10-r18w16", "zoo:simclr-tinyimagenet-r18w16",
               "zoo:byol-cifar10-r18w16", "zoo:wmse-cifar10-r18w16",
               "zoo:byol-tinyimagenet-r18w16")

Role = Literal["mpae", "bmp"]


def check_encoder_spec(value: str, *, known_zoo: bool = True) -> str:
    """``value`` if it is ``victim``, ``zoo:NAME`` (a name of this zoo when ``known_zoo``) or a
    non-empty path; else ``ValueError``."""
    text = str(value).strip()
    if not text:
        raise ValueError("an encoder spec is empty; use victim, zoo:NAME or a checkpoint path")
    if text.startswith("zoo:") and known_zoo:
        from encshield import zoo

        zoo.entry(text[4:])  # ConfigError listing the names
    return text


class BranchSpec(BaseModel):
    """One branch: its encoder (``victim``, ``zoo:NAME`` or a path) and role (``mpae``/``bmp``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: str
    role: Role = "mpae"

    @field_validator("encoder")
    @classmethod
    def _known(cls, value: str) -> str:
        """Zoo names must exist; paths are checked when the branch is loaded."""
        try:
            return check_encoder_spec(value)
        except ConfigError as error:
            raise ValueError(str(error)) from None


def _zoo_sha(spec: str) -> str | None:
    """The manifest sha256 of ``zoo:NAME`` (``None`` when the zoo does not hold it)."""
    from encshield import zoo

    try:
        return zoo.entry(spec[4:]).sha256
    except ConfigError:
        return None


def resolve_specs(branches: Sequence[BranchSpec] | None, victim_sha256: str | None, *,
                  default_mpae: Sequence[str] = DEFAULT_MPAE,
                  default_bmp: Sequence[str] = DEFAULT_BMP) -> list[BranchSpec]:
    """The branch list: ``branches`` as given, else the defaults (module docstring).

    Args:
        branches: explicit branches, or ``None`` for the defaults.
        victim_sha256: the sha256 of the victim's checkpoint (``None``: unknown, e.g. an
            in-memory encoder); a default candidate with this sha256 is the victim, skipped.
        default_mpae, default_bmp: the preference lists (``zoo:NAME`` or paths).

    Raises:
        ConfigError: no MPAE branch, or no default BMP candidate available.
    """
    if branches is not None:
        specs = list(branches)
        if not any(b.role == "mpae" for b in specs):
            raise ConfigError("branches: at least one branch must have role mpae")
        return specs

    def available(spec: str) -> str | None:
        """The candidate's identity (sha256 or path) when usable, else ``None``."""
        if spec.startswith("zoo:"):
            sha = _zoo_sha(spec)
            return None if sha is None or sha == victim_sha256 else sha
        return spec if Path(spec).expanduser().is_file() else None

    specs = [BranchSpec(encoder=VICTIM, role="mpae")]
    taken = {victim_sha256}
    helper = next((s for s in default_mpae if available(s) is not None), None)
    if helper is not None:
        specs.append(BranchSpec(encoder=helper, role="mpae"))
        taken.add(available(helper))
    candidates = [s for s in default_bmp if available(s) is not None]
    bmp = next((s for s in candidates if available(s) not in taken), None) or next(
        iter(candidates), None)
    if bmp is None:
        raise ConfigError(f"no BMP encoder available: none of {list(default_bmp)} is in the "
                          "zoo and different from the victim; give branches explicitly")
    specs.append(BranchSpec(encoder=bmp, role="bmp"))
    return specs


def spec_identity(spec: str, victim_sha256: str | None = None) -> dict[str, str]:
    """``{"spec", "sha256"}`` of a branch spec without loading it: the victim's sha256, the zoo
    manifest's, or the file's (resolved path).

    Raises:
        ConfigError: an unknown zoo name or a missing file.
    """
    if spec == VICTIM:
        return {"spec": VICTIM, "sha256": victim_sha256 or ""}
    if spec.startswith("zoo:"):
        from encshield import zoo

        return {"spec": spec, "sha256": zoo.entry(spec[4:]).sha256}
    from encshield.checkpoints import sha256_file

    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"branch encoder {spec!r} is neither victim, zoo:NAME nor an existing "
                          "checkpoint file; see `encshield zoo list`")
    return {"spec": str(path.resolve()), "sha256": sha256_file(path)}


def weights_digest(encoder: torch.nn.Module) -> str:
    """sha256 of an encoder's state (names, shapes and float32 values): equal weights, equal
    digest, whatever file they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class LoadedBranch:
    """A branch's spec, its (copied) pre-trained encoder and identity (``spec``, ``sha256``)."""

    spec: BranchSpec
    encoder: Encoder
    identity: dict[str, Any]

    @property
    def name(self) -> str:
        """The spec text (``victim``, ``zoo:NAME`` or the path)."""
        return self.spec.encoder


def _load(spec: str, victim: Encoder) -> tuple[Encoder, dict[str, Any]]:
    if spec == VICTIM:
        sha = getattr(victim.provenance, "sha256", None)
        return copy.deepcopy(victim), {"spec": VICTIM, "sha256": sha or ""}
    if spec.startswith("zoo:"):
        from encshield import zoo

        loaded = zoo.load(spec[4:])
        return loaded.encoder, {"spec": spec, "sha256": loaded.sha256}
    from encshield.checkpoints import load_encoder

    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"branch encoder {spec!r} is neither victim, zoo:NAME nor an existing "
                          "checkpoint file; see `encshield zoo list`")
    loaded = load_encoder(path)
    return loaded.encoder, {"spec": str(path.resolve()), "sha256": loaded.sha256}


def load_branches(specs: Sequence[BranchSpec], victim: Encoder,
                  device: torch.device | str = "cpu") -> list[LoadedBranch]:
    """Load every branch's encoder (copies; ``victim`` is never modified) in eval mode, frozen.

    Raises:
        ConfigError: an unknown spec, or a BMP branch whose weights are the victim's (the BMP
            must be an encoder the attacker did not target).
    """
    victim_digest = weights_digest(victim)
    loaded = []
    for spec in specs:
        encoder, identity = _load(spec.encoder, victim)
        if spec.role == "bmp" and weights_digest(encoder) == victim_digest:
            raise ConfigError(f"branch {spec.encoder!r} (bmp) has the victim's weights; the BMP "
                              "must be a clean encoder that is not the victim")
        encoder = encoder.to(device).eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
        loaded.append(LoadedBranch(spec, encoder, identity))
    return loaded


def load_finetune_data(text: str, limit: int | None, seed: int, image_size: int,
                       root: str | None = None) -> tuple[ImageDataset, int, dict[str, Any]]:
    """The fine-tuning data ``DATASET[:SPLIT]`` (split default ``train``): a seeded
    class-stratified subset of ``limit`` images (the project's one subset rule,
    :func:`encshield.evaluation.subsets.select_subset`) at ``image_size`` px.

    Returns:
        ``(images, number of classes, {"dataset", "split", "used", "limit", "seed", ...})``.
    """
    from encshield import data
    from encshield.evaluation.subsets import select_subset

    name, _, split = str(text).partition(":")
    split = split.strip() or "train"
    full = data.load(name.strip(), split, root=root, image_size=image_size)
    if len(full) and bool((full.labels < 0).any()):
        raise ConfigError(f"finetune_on {text}: the split has unlabelled images; adversarial "
                          "fine-tuning needs labels")
    idx = select_subset(full.labels, limit, seed=seed, mode="stratified")
    selected = full if idx is None else full.subset(idx)
    info = {"dataset": full.name, "split": split, "available": len(full), "used": len(selected),
            "limit": limit, "seed": seed, "image_size": image_size,
            "num_classes": full.num_classes}
    return selected, full.num_classes, info
