"""Loading and saving model weights safely, in any of the released layouts.

File reading and writing is :mod:`largekernel.checkpoint_io` (weights-only, atomic); here:

* Foreign key layouts are mapped by the model's ``checkpoint_filter`` (released
  ``patch_embed1``/``block1`` keys, HuggingFace, mmpretrain, detector ``backbone.*``).
* A classifier for a different number of classes is dropped with a warning; any other mismatch
  raises a ``ValueError`` listing the missing and unexpected keys and the shape differences.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint_io import read_tensors, write_safetensors
from ..errors import CheckpointMismatchError, ConfigurationError, LargeKernelError

__all__ = [
    "WeightsUnavailableError",
    "download_weights",
    "load_checkpoint",
    "load_pretrained",
    "load_state_dict_into",
    "read_state_dict",
    "save_checkpoint",
]

_MAX_LISTED = 20


class WeightsUnavailableError(LargeKernelError, FileNotFoundError):
    """The pretrained weights are neither cached nor downloadable (e.g. no network)."""


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file or folder (see :func:`largekernel.checkpoint_io.read_tensors`)."""
    return read_tensors(path)


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _drop_mismatched_classifier(
    model: nn.Module, state_dict: dict[str, torch.Tensor], expected: dict[str, Any]
) -> set[str]:
    """Drop a classifier that cannot fit; return the model's head keys that may then stay missing."""
    head_keys = [k for k in state_dict if k.startswith("head.")]
    if not head_keys:
        return set()
    model_head = {k for k in expected if k.startswith("head.")}
    weight = state_dict.get("head.weight")
    if not model_head:
        reason = "the model has no classifier (num_classes=0)"
    elif (
        # only a different class count is a fine-tuning start; a different width is a wrong checkpoint,
        # listed with the other shape differences
        weight is not None and "head.weight" in expected and weight.shape[0] != expected["head.weight"].shape[0]
    ):
        reason = (
            f"the checkpoint's classifier has {weight.shape[0]} classes, the model {expected['head.weight'].shape[0]}"
        )
    else:
        return set()
    for key in head_keys:
        del state_dict[key]
    if model_head:
        reason += "; the model's classifier keeps its fresh initialisation"
    warnings.warn(f"load_checkpoint: classifier weights dropped: {reason}", UserWarning, stacklevel=3)
    return model_head


def load_state_dict_into(
    model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True, source: str = "checkpoint"
) -> Any:
    """Convert ``state_dict`` to the model's layout and load it (see :func:`load_checkpoint`)."""
    converter = getattr(model, "checkpoint_filter", None)
    if converter is not None:
        state_dict = converter(state_dict, model)
    pruned = getattr(model, "pruned_checkpoint_prefixes", ())
    if pruned:  # features_only models: stages after the last output and the classifier are not built
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(tuple(pruned))}
    expected = model.state_dict()
    excused = _drop_mismatched_classifier(model, state_dict, expected)

    missing = [k for k in expected if k not in state_dict and k not in excused]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if shapes or (strict and (missing or unexpected)):
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if shapes:
            problems.append(f"shape differences ({len(shapes)}): {_describe(shapes)}")
        message = f"{source} does not fit {type(model).__name__}:\n  " + "\n  ".join(problems)
        if strict or shapes:
            hint = "\n(is it a different variant or kernel size? overrides such as kernel_size=... must match the checkpoint)"
            raise CheckpointMismatchError(message + hint)
    # checked above; the freshly initialised classifier (if dropped) is the only gap allowed in strict mode
    return model.load_state_dict(state_dict, strict=strict and not excused)


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> Any:
    """Load weights from ``path`` into ``model``, converting known layouts.

    Args:
        model: a largekernel model (or any module; then only the wrapper handling applies).
        path: ``.safetensors``, ``.pth``, ``.pth.tar``, ``.bin``, a sharded ``*.index.json`` or a
            HuggingFace ``save_pretrained`` folder (raw, or under ``'state_dict_ema'``,
            ``'state_dict'``, ``'model'``: EMA weights preferred).
        strict: fail on missing or unexpected keys (shape differences always fail).

    Returns:
        The ``(missing_keys, unexpected_keys)`` result of ``load_state_dict``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unsafe pickle, no state_dict inside, unreadable file, non-float tensors.
        ValueError: keys or shapes that do not fit the model.
    """
    state_dict = read_state_dict(path)
    return load_state_dict_into(model, state_dict, strict=strict, source=f"checkpoint {os.fspath(path)}")


def save_checkpoint(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a model's state_dict (or a state_dict) as safetensors, atomically (temp file + rename)."""
    state_dict = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    meta = dict(metadata or {})
    if isinstance(model, nn.Module):
        architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if architecture:
            meta.setdefault("architecture", architecture)
    return write_safetensors(state_dict, path, meta)


def download_weights(url: str) -> Path:
    """The local copy of ``url`` in the torch hub cache, downloading it once when missing."""
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    target = directory / Path(urllib.parse.urlparse(url).path).name
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise WeightsUnavailableError(
            f"could not download the pretrained weights {url} ({error}). Without network access, download "
            f"that file elsewhere and either place it at {target} or pass checkpoint_path='/path/to/{target.name}'."
        ) from error
    return target


def load_pretrained(model: nn.Module, pretrained_cfg: Mapping[str, Any] | None = None) -> Any:
    """Load the released weights its ``pretrained_cfg`` names: ``state_dict``, ``file``, else ``url``."""
    cfg = dict(pretrained_cfg or getattr(model, "pretrained_cfg", None) or {})
    name = cfg.get("architecture", type(model).__name__)
    if cfg.get("state_dict") is not None:
        return load_state_dict_into(model, dict(cfg["state_dict"]), source=f"pretrained_cfg['state_dict'] of {name!r}")
    if cfg.get("file"):
        return load_checkpoint(model, cfg["file"])
    if not cfg.get("url"):
        raise ConfigurationError(
            f"no public download location is known for {name!r} weights; pass checkpoint_path= with a "
            f"local checkpoint (reference, HuggingFace or mmpretrain layout), or "
            f"pretrained_cfg_overlay=dict(file=...), instead"
        )
    return load_checkpoint(model, download_weights(cfg["url"]))
