"""SSL methods, one file each, registered by name in :data:`METHODS`."""

from encshield.ssl.methods import (  # noqa: F401  (registration)
    barlow_twins,
    byol,
    dino,
    mocov2plus,
    mocov3,
    nnclr,
    ressl,
    simclr,
    simsiam,
    swav,
    vibcreg,
    vicreg,
    wmse,
)
from encshield.ssl.methods.base import (
    METHODS,
    MethodConfig,
    MomentumConfig,
    MomentumProjectorMethod,
    SSLMethod,
    momentum_copy,
)

__all__ = [
    "METHODS",
    "MethodConfig",
    "MomentumConfig",
    "MomentumProjectorMethod",
    "SSLMethod",
    "momentum_copy",
]
