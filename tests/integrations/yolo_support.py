"""Shared set-up of the YOLO tests: Ultralytics kept offline and inside a temporary folder.

Imported by every ``test_yolo_*.py`` before Ultralytics itself, because Ultralytics reads its settings
folder (``YOLO_CONFIG_DIR``) once, when it is imported. Child processes inherit the environment.

What Ultralytics would otherwise reach for: the network (its settings sync, version checks and
auto-installs: ``YOLO_OFFLINE=1`` turns them off) and ``Arial.ttf``, which its dataset check asks
github.com for on every ``train`` even with ``plots=False`` (``check_font``); a local font under that
name in the settings folder answers it. Tests record every network look-up of this process
(:func:`network_lookups`) and assert there is none.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
IMGSZ = 64  # the smallest size at which the generated digits stay legible; 2 strides of 32
TRAIN_SCENES, VAL_SCENES = 16, 8

os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_VERBOSE", "False")
if "YOLO_CONFIG_DIR" not in os.environ:
    _config = tempfile.mkdtemp(prefix="yolo-config-")
    atexit.register(shutil.rmtree, _config, True)
    os.environ["YOLO_CONFIG_DIR"] = _config


def _local_font() -> None:
    import matplotlib

    settings = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    settings.mkdir(parents=True, exist_ok=True)
    if not (settings / "Arial.ttf").exists():
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", settings / "Arial.ttf")


_local_font()

_LOOKUPS: list[tuple] = []


def _audit(event: str, args: tuple) -> None:
    if event in ("socket.getaddrinfo", "socket.connect"):
        _LOOKUPS.append((event, args[:2]))


sys.addaudithook(_audit)


def network_lookups() -> list[tuple]:
    """Host look-ups and connections this process made since the tests began (should stay empty)."""
    return list(_LOOKUPS)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout's ``src`` first, one thread."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def run_child(
    args: list[str], timeout: float = 240, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run ``python args...`` in a fresh process; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def train_kwargs(data: Path, project: Path, name: str, **overrides) -> dict:
    """The settings every test run trains with: tiny, on the CPU, one process, nothing drawn."""
    kwargs = dict(
        data=str(data), epochs=1, imgsz=IMGSZ, batch=8, workers=0, device="cpu", seed=0, deterministic=True,
        project=str(project), name=name, exist_ok=True, plots=False, verbose=False, warmup_epochs=0,
    )  # fmt: skip
    kwargs.update(overrides)
    return kwargs


def cli_train_args(data: Path, project: Path, name: str, **overrides) -> list[str]:
    """:func:`train_kwargs` as ``key=value`` words for Ultralytics' CLI."""
    return [f"{key}={value}" for key, value in train_kwargs(data, project, name, **overrides).items()]
