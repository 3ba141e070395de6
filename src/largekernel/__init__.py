"""largekernel: large-kernel convolutional attention (LKA, LSKA, SAM) for PyTorch.

The public names below are imported on first use (PEP 562), so ``import largekernel`` and the
``largekernel`` command's ``--help`` stay light: torch is imported only when a layer, model or
tool is first touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# imports neither torch nor timm (installed below, once this module's names exist)
from ._lazy import lazy_getattr
from .integrations import _timm_hook

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "LKA": "largekernel.layers",
    "LKATrivial": "largekernel.layers",
    "LSKA": "largekernel.layers",
    "LSKATrivial": "largekernel.layers",
    "SAM": "largekernel.layers",
    "SpatialGatingAttention": "largekernel.layers",
    "create_attention": "largekernel.layers",
    "lka_decomposition": "largekernel.layers",
    "lska_decomposition": "largekernel.layers",
    "optimize_for_inference": "largekernel.inference",
    "create_model": "largekernel.models",
    "list_models": "largekernel.models",
    "load_checkpoint": "largekernel.models",
    "save_checkpoint": "largekernel.models",
}
_SUBPACKAGES = (
    "analysis",
    "checkpoint_io",
    "constants",
    "export",
    "inference",
    "integrations",
    "kernels",
    "layers",
    "models",
    "segmentation",
    "train",
)

__all__ = [  # the names of _EXPORTS (a test checks they agree), spelled out for linters and type checkers
    "LKA",
    "LSKA",
    "SAM",
    "LKATrivial",
    "LSKATrivial",
    "SpatialGatingAttention",
    "__version__",
    "create_attention",
    "create_model",
    "list_models",
    "lka_decomposition",
    "load_checkpoint",
    "lska_decomposition",
    "optimize_for_inference",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from .inference import optimize_for_inference
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
    from .models import create_model, list_models, load_checkpoint, save_checkpoint

# our models appear in timm's registry once timm is imported (now, or whenever it is)
_timm_hook.install()


__getattr__ = lazy_getattr(globals(), _EXPORTS, _SUBPACKAGES)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBPACKAGES})
