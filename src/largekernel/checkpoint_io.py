"""Checkpoint file I/O for the whole package (models and training): one writer, one reader.

Writing is atomic: data goes to a hidden temporary file beside the target (``.NAME.PID.tmp``),
is flushed, then renamed over the target, so a reader never sees half a file. Temporary files
that a killed writer left behind (their PID no longer runs) are removed by the next write.

Reading never runs code: ``.safetensors`` files, sharded HuggingFace checkpoints
(``*.index.json``), ``save_pretrained`` directories, or torch files read with
``torch.load(weights_only=True)`` (whatever torch's default), with an allow-list of the inert
metadata objects released checkpoints carry. Training checkpoints are unwrapped (EMA weights
preferred, as timm's loader does); tensors that cannot be weights (integer or bool dtypes) are
refused with the keys named.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, MissingFileError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "read_tensors",
    "remove_stale_temp_files",
    "torch_load_safely",
    "unwrap_state_dict",
    "write_safetensors",
]

# Where training scripts nest the weights, in order of preference: timm's train.py saves
# 'state_dict' and 'state_dict_ema' and its loader prefers the EMA; so do we.
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state_dict", "module")

# Configuration objects that training scripts store beside the weights. They are read as plain
# mappings (OrderedDict) under their own names, so none of their code is imported or run.
_CONFIG_CLASSES = (
    "yacs.config.CfgNode",  # Swin-style scripts (the SMT code)
    "mmengine.config.config.ConfigDict",
    "mmcv.utils.config.ConfigDict",
    "addict.addict.Dict",
)
# HuggingFace file names, in the order transformers itself looks for them
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


# -- writing --------------------------------------------------------------------------------------
def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers that no longer run; return them."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        pid_text = candidate.name[len(path.name) + 2 : -len(".tmp")]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it replaces ``path`` only on success.

    Example: ``with atomic_write("last.ckpt") as tmp: torch.save(state, tmp)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    temporary = _temp_path(path)
    try:
        yield temporary
        with open(temporary, "rb+") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)


def write_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` as a safetensors file, atomically; return the path.

    Tensors are copied to contiguous CPU memory first (shared storage such as tied weights is
    written twice, as safetensors requires).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"safetensors files must end in .safetensors, got {path}")
    prepared = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_write(path) as temporary:
        save_file(prepared, str(temporary), metadata={"format": "pt", **(metadata or {})})
    return path


# -- reading --------------------------------------------------------------------------------------
def _safe_globals() -> list[Any]:
    return [argparse.Namespace, *((OrderedDict, name) for name in _CONFIG_CLASSES)]


def torch_load_safely(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` (on CPU by default), with the inert metadata classes allowed.

    ``weights_only=True`` is passed explicitly, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` does not
    override, so no torch default or environment setting makes it run pickled code.

    Raises:
        CheckpointError: the file carries other pickled objects (named), or is not a torch file.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            names = [n for n in found if n not in _CONFIG_CLASSES and n != "argparse.Namespace"]
        except Exception:  # noqa: BLE001 - listing is a courtesy; the refusal stands either way
            names = []
        what = f"it references {', '.join(names)}" if names else str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled Python objects other than tensors and plain "
            f"containers ({what}); unpickling them could run code, arbitrary code of whoever made the file. "
            f"If you trust the file, extract its weights once with torch.load(path, weights_only=False) and "
            f"save them with largekernel.save_checkpoint (safetensors)."
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, KeyError, IndexError) as error:
        # a truncated or random file fails somewhere inside the unpickler, with any of these
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first})") from error


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, source: str | os.PathLike[str] = "checkpoint") -> dict[str, torch.Tensor]:
    """The state_dict inside a training checkpoint (EMA preferred), without wrapper prefixes.

    Raises:
        CheckpointError: no mapping of names to tensors inside, or a self-referencing structure.
    """
    seen: set[int] = set()
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        if id(obj) in seen:  # e.g. {'model': <itself>}: would otherwise loop forever
            raise CheckpointError(f"{source}: the checkpoint's structure refers to itself; found no state_dict")
        seen.add(id(obj))
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            kinds = {k: type(v).__name__ for k, v in list(obj.items())[:8]}
            raise CheckpointError(
                f"{source}: found no state_dict: expected a mapping of parameter names to tensors, or one "
                f"under {list(WRAPPER_KEYS)}; top-level entries are {kinds}"
            )
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source}: expected a state_dict (mapping of names to tensors), got {type(obj).__name__}"
        )
    state_dict = dict(obj)
    for prefix in ("module.", "_orig_mod."):  # DataParallel/DDP and torch.compile wrappers
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def _check_dtypes(state_dict: Mapping[str, torch.Tensor], source: Path) -> None:
    # weights are floating point; BatchNorm's step counter is the one integer buffer models keep
    bad = [
        f"{k} ({str(v.dtype).removeprefix('torch.')})"
        for k, v in state_dict.items()
        if not (v.is_floating_point() or k.endswith("num_batches_tracked"))
    ]
    if bad:
        shown = ", ".join(bad[:10]) + (f", ... ({len(bad) - 10} more)" if len(bad) > 10 else "")
        raise CheckpointError(f"{source}: tensors with a non-floating-point dtype cannot be weights: {shown}")


def _read_index(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{index}: not a sharded-checkpoint index (a JSON object with 'weight_map')") from error
    tensors: dict[str, torch.Tensor] = {}
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index}: shard {shard} is missing from {index.parent}")
        tensors.update(_read_file(shard_path))
    return tensors


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.name.endswith(".index.json"):
        return _read_index(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    return unwrap_state_dict(torch_load_safely(path), path)


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict stored at ``path``: a file, a sharded index, or a ``save_pretrained`` folder.

    Raises:
        FileNotFoundError: nothing at ``path`` (or a folder without weights files).
        CheckpointError: unsafe pickle, no state_dict inside, unreadable file, non-float tensors.
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / name for name in _HF_WEIGHT_FILES if (path / name).is_file()), None)
        if found is None:
            raise MissingFileError(f"checkpoint folder {path} holds none of {list(_HF_WEIGHT_FILES)}")
        path = found
    elif not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {path}")
    state_dict = unwrap_state_dict(_read_file(path), path)
    _check_dtypes(state_dict, path)
    return state_dict
