"""Self-supervised learning (SSL) methods used to pre-train victim encoders.

:mod:`encshield.ssl.losses` holds the pure loss functions of every method (SimCLR, BYOL, MoCo v2+,
SimSiam, Barlow Twins, VICReg, W-MSE, DINO, NNCLR, SwAV, ReSSL, MoCo v3, VIbCReg) and the small
pure helpers that are part of their maths; they are re-exported here.
"""

from encshield.ssl.losses import *  # noqa: F403 - the losses are this package's public API
from encshield.ssl.losses import __all__  # noqa: F401
