"""largekernel: large-kernel convolutional attention (LKA, LSKA, SAM) for PyTorch."""

from .layers import (
    LKA,
    LSKA,
    SAM,
    LKATrivial,
    LSKATrivial,
    SpatialGatingAttention,
    create_attention,
    lka_decomposition,
    lska_decomposition,
)

__version__ = "0.1.0"

__all__ = [
    "LKA",
    "LKATrivial",
    "LSKA",
    "LSKATrivial",
    "SAM",
    "SpatialGatingAttention",
    "create_attention",
    "lka_decomposition",
    "lska_decomposition",
    "__version__",
]
