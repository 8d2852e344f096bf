"""encshield: security of pre-trained self-supervised image encoders.

Get a victim encoder, attack it with downstream-agnostic adversarial examples or backdoors,
defend the downstream model, and evaluate everything under one recorded protocol.

Conventions (see docs/architecture.md): every image tensor crossing a public API is float32,
NCHW, in [0, 1]; normalisation lives inside the model wrappers.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
