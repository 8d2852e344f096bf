"""Fixed, seeded subsets of a labelled set: the one subset rule of the project.

Every place that takes "N images of a split" (surrogate data of an attack, a defense's training
set, a test set, the samples of a white-box row, an encoder evaluation) uses
:func:`select_subset`, so the CLI, the bench and the Python API pick the same images for the
same dataset, limit and seed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from encshield.errors import ConfigError

__all__ = ["SUBSET_MODES", "select_subset", "subset_info"]

#: How a limited set picks its samples.
SUBSET_MODES = ("stratified", "first")


def select_subset(
    labels: torch.Tensor, limit: int | None, *, seed: int = 0, mode: str = "stratified"
) -> torch.Tensor | None:
    """Positions of a fixed subset of ``limit`` samples, sorted; ``None`` when no limit applies.

    ``mode="stratified"``: a seeded, class-stratified sample -- each class gets a number of samples
    proportional to its frequency (within one of ``limit * n_c / N``), the members drawn by a
    ``torch.randperm`` seeded with ``seed`` (identical on every machine). ``mode="first"``: the
    first ``limit`` samples.

    Args:
        labels: int ``(N,)``.
        limit: subset size; ``None``, ``0`` or ``>= N`` -> ``None`` (use everything).
    Returns:
        int64 ``(limit,)`` positions in increasing order, or ``None``.
    """
    if mode not in SUBSET_MODES:
        raise ConfigError(
            f"subset mode {mode!r} is not allowed; allowed values: {', '.join(SUBSET_MODES)}"
        )
    n = int(labels.shape[0])
    if limit is None or limit <= 0 or limit >= n:
        return None
    if mode == "first":
        return torch.arange(limit, dtype=torch.int64)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    permuted = labels.detach().cpu()[perm]
    keys = torch.empty(n, dtype=torch.float64)
    for cls in torch.unique(permuted):
        where = (permuted == cls).nonzero().squeeze(1)
        keys[where] = (torch.arange(where.numel(), dtype=torch.float64) + 0.5) / where.numel()
    order = torch.sort(keys, stable=True).indices  # equal keys keep the random permuted order
    return torch.sort(perm[order[:limit]]).values


def subset_info(
    labels: torch.Tensor, idx: torch.Tensor, limit: int, seed: int, mode: str
) -> dict[str, Any]:
    """What a subset is: mode, seed, limit, count, per-class counts and a digest of the indices."""
    chosen = labels.detach().cpu()[idx]
    classes, counts = torch.unique(chosen, return_counts=True)
    digest = hashlib.sha256(idx.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
    return {
        "mode": mode,
        "seed": seed,
        "limit": limit,
        "count": int(idx.numel()),
        "class_counts": {str(int(c)): int(k) for c, k in zip(classes, counts)},
        "indices_sha256": digest,
    }
