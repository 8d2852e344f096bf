"""Loss functions of the self-supervised learning (SSL) methods used to train victim encoders.

Every function here is pure: it takes already-computed projections / predictions (and, for the
momentum methods, the already-computed targets and memory queue) and returns a scalar loss.
Nothing here keeps state. The stateful parts of the methods (momentum encoders, the MoCo / NNCLR /
ReSSL queues, the DINO centre, the teacher-temperature schedule) are updated by the caller; where
such an update is part of a method's maths it is provided as a small pure helper that returns the
new value (:func:`enqueue`, :func:`dino_center_update`, :func:`sinkhorn_knopp`,
:func:`nearest_neighbour`, :func:`whiten`, :func:`iternorm`).

Conventions
-----------
* Shapes: ``N`` batch size, ``D`` embedding dimension, ``K`` queue length or number of
  prototypes, ``V`` number of views.
* Targets are detached inside the loss wherever the method stops their gradient (BYOL, SimSiam,
  MoCo, MoCo v3, ReSSL, DINO teacher, SwAV codes), so a caller cannot leak gradient into a target
  network by mistake.
* "Caller symmetrises": the asymmetric losses (BYOL, SimSiam, MoCo v2+, MoCo v3, NNCLR, ReSSL)
  compute one direction; the training step adds the view-swapped term itself, exactly as the
  papers' pseudo-code does (e.g. ``mocov3_loss(q1, k2) + mocov3_loss(q2, k1)``, or the mean of
  the two for BYOL/SimSiam/NNCLR/MoCo v2+ as in solo-learn).
* Defaults are the solo-learn CIFAR settings (``scripts/pretrain/cifar/*.yaml`` and the method
  defaults of solo-learn), which are also the papers' settings unless stated otherwise.
* Bad hyper-parameters raise :class:`~encshield.errors.ConfigError`; tensors of the wrong shape
  raise :class:`ValueError`. Both messages name the argument and the observed value.
"""

from encshield.precision import full_precision
from encshield.ssl.losses.contrastive import (
    enqueue,
    infonce_loss,
    mocov3_loss,
    nearest_neighbour,
    nnclr_loss,
    nt_xent_loss,
    nt_xent_multiview_loss,
)
from encshield.ssl.losses.predictive import (
    byol_loss,
    dino_center_update,
    dino_loss,
    ressl_loss,
    simsiam_loss,
    sinkhorn_knopp,
    swav_loss,
)
from encshield.ssl.losses.redundancy import (
    barlow_twins_loss,
    combine_vic_terms,
    iternorm,
    vibcreg_loss,
    vibcreg_terms,
    vicreg_loss,
    vicreg_terms,
    whiten,
    wmse_loss,
)

__all__ = [
    "full_precision",
    "barlow_twins_loss",
    "byol_loss",
    "combine_vic_terms",
    "dino_center_update",
    "dino_loss",
    "enqueue",
    "infonce_loss",
    "iternorm",
    "mocov3_loss",
    "nearest_neighbour",
    "nnclr_loss",
    "nt_xent_loss",
    "nt_xent_multiview_loss",
    "ressl_loss",
    "simsiam_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "vibcreg_loss",
    "vibcreg_terms",
    "vicreg_loss",
    "vicreg_terms",
    "whiten",
    "wmse_loss",
]
