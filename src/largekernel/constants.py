"""Normalisation and evaluation constants, in one place for the whole package.

No torch import: the CLI and configs read these without loading the library.

* ImageNet mean/std: what SMT's released weights were trained with (the SMT repo's
  ``data/build.py`` normalises with timm's ``IMAGENET_DEFAULT_MEAN/STD``).
* VAN and VAN-LSKA weights were trained with mean = std = 0.5 (both repos' models set
  ``timm.models.vision_transformer._cfg()``, which uses ``IMAGENET_INCEPTION_MEAN/STD``;
  mmpretrain's VAN configs normalise by 127.5/127.5), a 0.9 centre crop and bicubic resizing.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CROP_PCT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "SMT_CROP_PCT",
    "VAN_CROP_PCT",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)  # "(x - 0.5) / 0.5": inputs in [-1, 1]
INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

DEFAULT_CROP_PCT = 0.875  # timm's default: resize to 256, centre-crop 224
VAN_CROP_PCT = 0.9  # timm's ViT _cfg(), used by the VAN and VAN-LSKA training code
SMT_CROP_PCT = 224 / 256  # the SMT (Swin) evaluation transform: Resize(256) + CenterCrop(224)
