"""Loading and saving weights safely, in any of the released layouts.

* ``.safetensors`` files, or ``.pth``/``.pth.tar``/``.bin`` files read with
  ``torch.load(weights_only=True)``: a file that carries arbitrary pickled objects is refused, never
  executed. The only non-tensor objects accepted are the inert training metadata released
  checkpoints carry: ``argparse.Namespace`` (timm scripts) and config mappings such as yacs'
  ``CfgNode`` (the SMT/Swin scripts), read as plain ``OrderedDict`` without importing their code.
* A raw state_dict, or one wrapped under ``'state_dict'`` or ``'model'`` (and ``module.`` prefixes).
* Foreign key layouts are mapped by the model's ``checkpoint_filter`` (VAN: HuggingFace, mmpretrain).
* A classifier for a different number of classes is dropped with a warning; any other mismatch
  raises a ``ValueError`` listing the missing and unexpected keys and the shape differences.
"""

from __future__ import annotations

import argparse
import os
import pickle
import urllib.error
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "WeightsUnavailableError",
    "download_weights",
    "load_checkpoint",
    "load_pretrained",
    "read_state_dict",
    "save_checkpoint",
]

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_MAX_LISTED = 20


class WeightsUnavailableError(FileNotFoundError):
    """The pretrained weights are neither cached nor downloadable (e.g. no network)."""


# Configuration objects that training scripts store beside the weights. They are read as plain
# mappings (OrderedDict) under their own names, so none of their code is imported or run.
_CONFIG_CLASSES = (
    "yacs.config.CfgNode",  # Swin-style scripts (the SMT code)
    "mmengine.config.config.ConfigDict",
    "mmcv.utils.config.ConfigDict",
    "addict.addict.Dict",
)


def _safe_globals() -> list[Any]:
    return [argparse.Namespace, *((OrderedDict, name) for name in _CONFIG_CLASSES)]


def _torch_load_safely(path: Path) -> Any:
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    try:
        if safe_globals is None:  # torch < 2.5
            return torch.load(path, map_location="cpu", weights_only=True)
        try:
            context = safe_globals(_safe_globals())
        except (TypeError, ValueError):  # torch < 2.6 has no (replacement, "module.name") entries
            context = safe_globals([argparse.Namespace])
        with context:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        try:
            names = [n for n in found(path) if n not in _CONFIG_CLASSES and n != "argparse.Namespace"] if found else []
        except Exception:  # noqa: BLE001 - listing is a courtesy; the refusal stands either way
            names = []
        what = f"it references {', '.join(names)}" if names else str(error).strip().splitlines()[0]
        raise ValueError(
            f"refusing to load {path}: it holds pickled Python objects other than tensors and plain "
            f"containers, and unpickling them could run arbitrary code ({what}). If you trust the file, "
            f"extract its weights once with torch.load(path, weights_only=False) and save them with "
            f"largekernel.save_checkpoint (safetensors)."
        ) from error


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # training checkpoints nest the weights under a known key; take the first present
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            kinds = {k: type(v).__name__ for k, v in list(obj.items())[:8]}
            raise ValueError(
                f"{path}: found no state_dict: expected a mapping of parameter names to tensors, or one "
                f"under {list(_WRAPPER_KEYS)}; top-level entries are {kinds}"
            )
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state_dict (mapping of names to tensors), got {type(obj).__name__}")  # noqa: TRY004 - a bad file, not a bad argument
    state_dict = dict(obj)
    for prefix in ("module.", "_orig_mod."):  # DataParallel/DDP and torch.compile wrappers
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file (safetensors or a weights-only torch file), unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _unwrap(load_file(str(path), device="cpu"), path)
    return _unwrap(_torch_load_safely(path), path)


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _drop_mismatched_classifier(model: nn.Module, state_dict: dict[str, torch.Tensor], expected: dict[str, Any]) -> set[str]:
    """Drop a classifier that cannot fit; return the model's head keys that may then stay missing."""
    head_keys = [k for k in state_dict if k.startswith("head.")]
    if not head_keys:
        return set()
    model_head = {k for k in expected if k.startswith("head.")}
    weight = state_dict.get("head.weight")
    if not model_head:
        reason = "the model has no classifier (num_classes=0)"
    elif weight is not None and "head.weight" in expected and tuple(weight.shape) != tuple(expected["head.weight"].shape):
        reason = f"the checkpoint's classifier has {weight.shape[0]} classes, the model {expected['head.weight'].shape[0]}"
    else:
        return set()
    for key in head_keys:
        del state_dict[key]
    if model_head:
        reason += "; the model's classifier keeps its fresh initialisation"
    warnings.warn(f"load_checkpoint: classifier weights dropped: {reason}", UserWarning, stacklevel=3)
    return model_head


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True, source: str = "checkpoint") -> Any:
    """Convert ``state_dict`` to the model's layout and load it (see :func:`load_checkpoint`)."""
    converter = getattr(model, "checkpoint_filter", None)
    if converter is not None:
        state_dict = converter(state_dict)
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
            raise ValueError(message + hint)
    # checked above; the freshly initialised classifier (if dropped) is the only gap allowed in strict mode
    return model.load_state_dict(state_dict, strict=strict and not excused)


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> Any:
    """Load weights from ``path`` into ``model``, converting known layouts.

    Args:
        model: a largekernel model (or any module; then only the wrapper handling applies).
        path: ``.safetensors``, ``.pth``, ``.pth.tar``, ``.bin`` (raw, ``'state_dict'`` or ``'model'``).
        strict: fail on missing or unexpected keys (shape differences always fail).

    Returns:
        The ``(missing_keys, unexpected_keys)`` result of ``load_state_dict``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsafe pickle, no state_dict inside, or keys/shapes that do not fit.
    """
    state_dict = read_state_dict(path)
    return load_state_dict_into(model, state_dict, strict=strict, source=f"checkpoint {os.fspath(path)}")


def save_checkpoint(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a model's state_dict (or a state_dict) as safetensors, atomically (temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_checkpoint writes safetensors; give a path ending in .safetensors, got {path}")
    state_dict = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {"format": "pt", **(metadata or {})}
    if isinstance(model, nn.Module):
        architecture = getattr(model, "pretrained_cfg", {}).get("architecture")
        if architecture:
            meta.setdefault("architecture", architecture)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata=meta)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


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


def load_pretrained(model: nn.Module, name: str) -> Any:
    """Load the released weights of model ``name`` (its ``pretrained_cfg['url']``)."""
    url = getattr(model, "pretrained_cfg", {}).get("url")
    if not url:
        raise ValueError(
            f"no public download location is known for {name!r} weights; pass checkpoint_path= with a "
            f"local checkpoint (reference, HuggingFace or mmpretrain layout) instead"
        )
    return load_checkpoint(model, download_weights(url))

