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
from .inference import optimize_for_inference
from .models import create_model, list_models, load_checkpoint, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "LKA",
    "LKATrivial",
    "LSKA",
    "LSKATrivial",
    "SAM",
    "SpatialGatingAttention",
    "create_attention",
    "create_model",
    "list_models",
    "optimize_for_inference",
    "load_checkpoint",
    "save_checkpoint",
    "lka_decomposition",
    "lska_decomposition",
    "__version__",
]
