"""Self-supervised learning (SSL) methods used to pre-train victim encoders.

:mod:`encshield.ssl.losses` holds the pure loss functions of every method (SimCLR, BYOL, MoCo v2+,
SimSiam, Barlow Twins, VICReg, W-MSE, DINO, NNCLR, SwAV, ReSSL, MoCo v3, VIbCReg) and the small
pure helpers that are part of their maths; they are re-exported here.
"""

from encshield.ssl.losses import (
    barlow_twins_loss,
    byol_loss,
    dino_center_update,
    dino_loss,
    enqueue,
    infonce_loss,
    iternorm,
    mocov3_loss,
    nearest_neighbour,
    nnclr_loss,
    nt_xent_loss,
    nt_xent_multiview_loss,
    ressl_loss,
    simsiam_loss,
    sinkhorn_knopp,
    swav_loss,
    vibcreg_loss,
    vibcreg_terms,
    vicreg_loss,
    vicreg_terms,
    whiten,
    wmse_loss,
)

__all__ = [
    "barlow_twins_loss",
    "byol_loss",
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
