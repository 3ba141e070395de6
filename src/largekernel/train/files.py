"""The run directory's non-tensor files: atomic writes, JSON that names itself when broken, and
Lightning checkpoints read without running pickled code.

Writing and reading go through :mod:`largekernel.checkpoint_io`, the package's one checkpoint I/O
module (the final weights through :mod:`largekernel.models.checkpoint` on top of it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..checkpoint_io import atomic_write, atomic_write_bytes, torch_load_safely
from ..errors import CheckpointError, ConfigurationError

__all__ = ["SafeCheckpointIO", "read_json", "read_lightning_checkpoint", "write_json"]  # noqa: F822 - built lazily


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def read_json(path: str | os.PathLike, what: str = "file") -> dict[str, Any]:
    """A JSON object from ``path``; a one-line :class:`ConfigurationError` naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigurationError(f"{what} {path} is not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{what} {path} holds a JSON {type(data).__name__}, expected an object")
    return data


def read_lightning_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``, whatever torch's default or the environment says.

    Our Lightning checkpoints hold tensors, numbers, strings and containers only (the timm
    scheduler's and ModelCheckpoint's states included), which torch's weights-only unpickler
    accepts without an allow-list. ``weights_only=True`` is passed explicitly, which
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` does not override: a checkpoint holding any other pickled
    object (code) is refused with a :class:`CheckpointError`, as is an empty, truncated or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    checkpoint = torch_load_safely(path, map_location=map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint (a dict)"
        )
    return checkpoint


def _lightning_checkpoint_io():
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class SafeCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoints written atomically and read with :func:`read_lightning_checkpoint`."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
            import torch

            if storage_options is not None:
                raise TypeError("SafeCheckpointIO takes no storage_options")
            with atomic_write(path) as temporary:
                torch.save(checkpoint, temporary)

        def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
            # weights_only is True whatever Lightning or the environment asks for
            return read_lightning_checkpoint(path, map_location=map_location)

    return SafeCheckpointIO


def __getattr__(name: str) -> Any:
    if name == "SafeCheckpointIO":  # built on first use: Lightning is imported only when training
        value = _lightning_checkpoint_io()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
