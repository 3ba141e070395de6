"""The run directory's non-tensor files: atomic writes, JSON that names itself when broken, and
Lightning checkpoints read without running pickled code.

(The final weights go through :mod:`largekernel.models.checkpoint`, the package's one safetensors
reader and writer.)
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigurationError

__all__ = ["SafeCheckpointIO", "atomic_write_bytes", "read_json", "read_lightning_checkpoint", "write_json"]  # noqa: F822 - built lazily


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader (or a run killed mid-write) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "Weights only load failed" in first or "Unsupported global" in str(error):
            names = _unsafe_globals(path)
            raise CheckpointError(
                f"refusing to load {path}: it holds pickled objects that could run code"
                + (f" ({', '.join(names)})" if names else "")
                + "; only checkpoints of tensors and plain containers are read"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, KeyError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {first})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint (a dict)"
        )
    return checkpoint


def _unsafe_globals(path: Path) -> list[str]:
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))[:5]
    except Exception:  # noqa: BLE001 - naming them is a courtesy; the refusal stands either way
        return []


def _lightning_checkpoint_io():
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class SafeCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoints written atomically and read with :func:`read_lightning_checkpoint`."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
            import torch

            if storage_options is not None:
                raise TypeError("SafeCheckpointIO takes no storage_options")
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            atomic_write_bytes(path, buffer.getvalue())

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
