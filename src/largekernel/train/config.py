"""What a training run depends on, importable without torch (the CLI builds its help from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data import DataSplit

__all__ = ["TrainConfig", "DEFAULT_MODEL", "DEFAULT_SMALL_OVERRIDES"]

# The default job: a VAN-LSKA sized for 28-32 px digits. VAN's stride-4 stem turns 28 px into a 7 x 7
# first stage, so the LSKA kernel of 7 (d = 2: 1x3, 3x1, then 1x3 / 3x1 dilated 2) spans the whole
# first-stage map.
DEFAULT_MODEL = "van_lska_tiny"
DEFAULT_SMALL_OVERRIDES: dict[str, Any] = {
    # three stages: 28 px -> 7, 4, 2; a fourth stage would run on 1 x 1 maps
    "embed_dims": [32, 64, 128],
    "depths": [1, 1, 2],
    "mlp_ratios": [4, 4, 4],
    "kernel_size": 7,
}


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored as ``run.json`` in the run directory)."""

    data: str = "mnist"
    model: str | None = None  # None: DEFAULT_MODEL, sized for the data
    model_args: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    kernel_size: int | None = None
    attention: str | None = None
    drop_path: float = 0.1
    checkpoint_path: str | None = None  # published weights to fine-tune from
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    img_size: int | None = None
    in_chans: int | None = None
    val_fraction: float = 0.2
    seed: int = 0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: int = 0
    threads: int | None = None  # CPU threads per process; None: half the cores, at least 1
    out: str | None = None
    quiet: bool = False

    def model_kwargs(self, data: DataSplit) -> tuple[str, dict[str, Any]]:
        """The registered name and the ``create_model`` keyword arguments this config asks for."""
        name = self.model or DEFAULT_MODEL
        kwargs: dict[str, Any] = {}
        if self.model is None and self.checkpoint_path is None and data.img_size <= 64:
            kwargs.update(DEFAULT_SMALL_OVERRIDES)
        kwargs.update(self.model_args)
        if self.kernel_size is not None:
            kwargs["kernel_size"] = self.kernel_size
        if self.attention is not None:
            kwargs["attention"] = self.attention
        kwargs["drop_path_rate"] = self.drop_path
        return name, kwargs
