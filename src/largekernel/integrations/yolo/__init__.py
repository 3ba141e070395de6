"""LSKA, LKA and SAM inside Ultralytics YOLO detectors, without editing or forking Ultralytics.

Importing this package registers our blocks with Ultralytics' YAML parser (see :func:`register`),
so Ultralytics' own ``YOLO``, ``train``, ``val``, ``predict`` and ``export`` work on the configs
shipped here and on your own YAMLs that name our blocks:

>>> from largekernel.integrations import yolo
>>> model = yolo.model("yolov8n-lska")            # an ultralytics.YOLO
>>> model.train(data="my-data.yaml", epochs=100)  # Ultralytics' own trainer

YAML names: ``LSKA`` / ``LKA`` / ``SAM`` (channel-preserving layers; ``[-1, 1, LSKA, [11]]``),
``SPPF_LSKA`` (``[-1, 1, SPPF_LSKA, [1024, 11]]``) and ``C2f_LSKA`` / ``C3_LSKA`` / ``C3k2_LSKA``
(``[-1, 3, C2f_LSKA, [512, 11]]``): the same channel numbers as the Ultralytics block they replace,
scaled per model size by Ultralytics itself. Ultralytics is AGPL-3.0 and optional
(``pip install 'largekernel[yolo]'``).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import ultralytics  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    hint = (
        "Ultralytics needs torchvision installed (the build matching your torch)"
        if "torchvision" in str(error)
        else "pip install 'largekernel[yolo]'"
    )
    raise ImportError(f"largekernel.integrations.yolo needs Ultralytics, which failed to import: {error}. {hint}") from error

from .blocks import C2f_LSKA, C3_LSKA, C3k2_LSKA, SPPF_LSKA, AttentionBottleneck
from .parser import BLOCK_NAMES, is_registered, register, unregister

__all__ = [
    "BLOCK_NAMES",
    "AttentionBottleneck",
    "C2f_LSKA",
    "C3_LSKA",
    "C3k2_LSKA",
    "SPPF_LSKA",
    "available_configs",
    "config_path",
    "is_registered",
    "model",
    "register",
    "resolve_model_arg",
    "unregister",
]

SCALES = "nsmlx"
# the scale letter follows the version number, as Ultralytics reads it: yolov8n-lska, yolo11s-c3k2-lska
_SCALED_NAME = re.compile(r"^(yolo(?:v)?\d+)([nsmlx])(-.+)$")


def _config_dir() -> Path:
    return Path(str(resources.files(__package__) / "cfg"))


def available_configs() -> list[str]:
    """Names of the shipped configs without scale letter, e.g. ``'yolov8-lska'``."""
    return sorted(p.stem for p in _config_dir().glob("*.yaml"))


def config_path(name: str) -> Path:
    """Path Ultralytics accepts for a shipped config, with its scale: ``'yolov8s-lska'`` -> ``.../yolov8s-lska.yaml``.

    The file on disk is the unscaled ``yolov8-lska.yaml``; Ultralytics' loader strips the scale letter
    to find it and reads the scale from the name, exactly as for ``yolov8s.yaml``.
    """
    if not isinstance(name, str):
        raise TypeError(f"config name must be a str like 'yolov8n-lska', got {type(name).__name__}")
    stem = name[:-5] if name.endswith(".yaml") else name
    match = _SCALED_NAME.match(stem)
    if match is None or f"{match.group(1)}{match.group(3)}" not in available_configs():
        examples = ", ".join(f"{c.replace('-', 'n-', 1)}" for c in available_configs())
        raise ValueError(
            f"unknown YOLO config {name!r}: expected a shipped config with a scale letter (n/s/m/l/x) after the "
            f"version, one of: {examples} (any of n/s/m/l/x)"
        )
    return _config_dir() / f"{stem}.yaml"


def resolve_model_arg(value: str) -> str:
    """A ``model=`` value for Ultralytics: shipped config names become their path; anything else is unchanged."""
    if Path(value).exists() or Path(value).suffix not in ("", ".yaml"):
        return value
    try:
        return str(config_path(Path(value).name))
    except ValueError:
        return value


def model(name: str, **kwargs: Any):
    """An Ultralytics ``YOLO`` built from a shipped config, e.g. ``model("yolov8n-lska")``.

    Args:
        name: shipped config with scale letter (see :func:`available_configs`), or a path to any YAML.
        **kwargs: passed to ``ultralytics.YOLO`` (``task``, ``verbose``).
    """
    from ultralytics import YOLO

    register()
    path = name if Path(str(name)).exists() else config_path(name)
    return YOLO(str(path), **kwargs)


register()
