"""LSKA, LKA and SAM inside Ultralytics YOLO detectors, without editing or forking Ultralytics.

Importing this package registers our blocks with Ultralytics' YAML parser (see :func:`register`),
so Ultralytics' own ``YOLO``, ``train``, ``val``, ``predict`` and ``export`` work on our configs
and on your own YAMLs that name our blocks:

>>> from largekernel.integrations import yolo
>>> model = yolo.model("yolov8n-lska")            # an ultralytics.YOLO, = YOLO("yolov8n-lska.yaml")
>>> model.train(data="my-data.yaml", epochs=100)  # Ultralytics' own trainer

Our configs (:data:`RECIPES`) are built from the Ultralytics configs installed on this machine:
Ultralytics' ``yolov8n.yaml`` plus one edit (an LSKA layer after SPPF, ...), so nothing of
Ultralytics' ships in this package and the configs follow upstream.

YAML names: ``LSKA`` / ``LKA`` / ``SAM`` (channel-preserving layers; ``[-1, 1, LSKA, [11]]``),
``SPPF_LSKA`` (``[-1, 1, SPPF_LSKA, [1024, 11]]``) and ``C2f_LSKA`` / ``C3_LSKA`` / ``C3k2_LSKA``
(``[-1, 3, C2f_LSKA, [512, 11]]``): the same channel numbers as the Ultralytics block they replace,
scaled per model size by Ultralytics itself. Ultralytics is AGPL-3.0 and optional
(``pip install 'largekernel[yolo]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ConfigurationError

try:
    import ultralytics  # noqa: F401 - only to fail early, with an install hint, when it is missing
except ImportError as error:  # pragma: no cover - depends on the environment
    hint = (
        "Ultralytics needs torchvision installed (the build matching your torch)"
        if "torchvision" in str(error)
        else "pip install 'largekernel[yolo]'"
    )
    raise ImportError(
        f"largekernel.integrations.yolo needs Ultralytics, which failed to import: {error}. {hint}"
    ) from error

from .blocks import C3_LSKA, LKA, LSKA, SAM, SPPF_LSKA, AttentionBottleneck, C2f_LSKA, C3k2_LSKA
from .configs import RECIPES, available_configs
from .parser import BLOCK_NAMES, is_registered, register, unregister

__all__ = [
    "BLOCK_NAMES",
    "C3_LSKA",
    "LKA",
    "LSKA",
    "RECIPES",
    "SAM",
    "SPPF_LSKA",
    "AttentionBottleneck",
    "C2f_LSKA",
    "C3k2_LSKA",
    "available_configs",
    "config",
    "is_registered",
    "model",
    "register",
    "unregister",
]


def config(name: str) -> dict[str, Any]:
    """The model dict of one of our configs, built from the installed Ultralytics' own base config.

    ``config("yolov8n-lska")`` is ``yolov8n.yaml`` as Ultralytics loads it, with an LSKA layer after
    SPPF (see :data:`RECIPES`). Hand it to ``ultralytics.nn.tasks.DetectionModel``, or write it out
    with ``yaml.safe_dump`` to edit it (such a file needs our blocks registered to parse).

    Raises:
        largekernel.errors.ConfigurationError: not one of ours; the message lists them.
    """
    from .configs import build_config

    return build_config(name)


def model(name: str, **kwargs: Any):
    """An Ultralytics ``YOLO`` of one of our configs (``model("yolov8n-lska")``) or of a YAML file.

    The same as ``YOLO("yolov8n-lska.yaml")`` once this package is imported.

    Args:
        name: our config, scale letter after the version (see :func:`available_configs`; without
            it Ultralytics takes ``n``), ``.yaml`` optional; or a path to any model YAML.
        **kwargs: passed to ``ultralytics.YOLO`` (``task``, ``verbose``).

    Raises:
        largekernel.errors.ConfigurationError: ``name`` is neither ours nor an existing file.
    """
    from ultralytics import YOLO

    from .configs import is_our_name, unknown_name_message

    register()
    path = Path(str(name))
    if path.exists():
        return YOLO(str(path), **kwargs)
    stem = name[:-5] if name.endswith(".yaml") else name
    if not is_our_name(stem):
        raise ConfigurationError(unknown_name_message(name))
    return YOLO(f"{stem}.yaml", **kwargs)


register()
