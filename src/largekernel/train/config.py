"""What a training run depends on, and the published recipes; importable without torch (the CLI's help).

A :class:`TrainConfig` leaves every recipe setting ``None``; :func:`resolve_config` fills them from
the chosen recipe (``--recipe``), scales the learning rate by the global batch, and returns the
config that the run uses and stores as ``run.json``. Options given explicitly always win.

The recipes (sources in docs/train.md):

* ``van``: VAN-Classification's ``train.sh`` + ``train.py`` defaults (timm 0.4.12 ``train.py``):
  AdamW, lr 1e-3 at a global batch of 1024 (8 GPUs x 128), weight decay 0.05, 300 epochs of cosine
  (per epoch) after 5 warmup epochs from 1e-6, 10 cool-down epochs at min lr 1e-6, RandAugment
  ``rand-m9-mstd0.5-inc1``, random erasing 0.25 (pixel), Mixup 0.8 / CutMix 1.0, label smoothing 0.1,
  colour jitter 0.4, random-resized crop (0.08-1), drop path 0.1 (b3: 0.2), no EMA, no clipping.
* ``van_lska``: LSKA's ``train_lska.sh`` + ``train.py`` (VAN's script): the same settings, with the
  lr of 1e-3 at the global batch its script uses (2 GPUs x 64 = 128); drop path 0.1.
* ``smt``: SMT's ``config.py`` + ``configs/smt/*.yaml`` + ``main.py`` (Swin's script): AdamW, lr 1e-3
  per 512 images scaled linearly (warmup lr 1e-7 and min lr 1e-6 likewise), 300 epochs of cosine
  stepped per iteration after 5 warmup epochs, weight decay 0.05, gradient clipping 5.0, Mixup 0.2 /
  CutMix 1.0, RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25, label smoothing 0.1, bicubic;
  drop path 0.1 / 0.2 / 0.3 for t / s / b (l: 0.1, its ImageNet-22K config).
* ``digits``: the default for the embedded 28 px digit sets: 10 epochs, a light crop (no flips, no
  colour, no Mixup), EMA of the weights evaluated each epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SMALL_OVERRIDES",
    "EMBEDDED_NAMES",
    "RECIPES",
    "RECIPE_FIELDS",
    "RESULT_FREE_FIELDS",
    "TrainConfig",
    "recipe_for",
    "resolve_config",
    "resolved",
]

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
EMBEDDED_NAMES = ("mnist", "digits")  # the names largekernel.train.data.EMBEDDED_DATASETS serves

_IMAGENET_COMMON: dict[str, Any] = {
    "opt": "adamw",
    "weight_decay": 0.05,
    "epochs": 300,
    "warmup_epochs": 5.0,
    "label_smoothing": 0.1,
    "scale": [0.08, 1.0],
    "ratio": [3 / 4, 4 / 3],
    "hflip": 0.5,
    "color_jitter": 0.4,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "reprob": 0.25,
    "remode": "pixel",
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "model_ema": False,
    "model_ema_decay": 0.9998,
}

# The VAN classification recipe (the authors' train script); VAN-LSKA's repository uses the same
# settings at its own batch size.
_VAN_RECIPE: dict[str, Any] = {
    **_IMAGENET_COMMON,
    "lr_base": 1e-3,
    "lr_base_size": 1024,
    "warmup_lr": 1e-6,
    "min_lr": 1e-6,
    "cooldown_epochs": 10,
    "sched_on_epochs": True,
    "warmup_prefix": False,
    "clip_grad": None,
    "mixup": 0.8,
    "cutmix": 1.0,
    "train_interpolation": "random",
    "drop_path": 0.1,
    "drop_path_by_model": {"van_b3": 0.2},
}

# name -> settings; "drop_path_by_model" refines drop_path per registered variant
RECIPES: dict[str, dict[str, Any]] = {
    "van": _VAN_RECIPE,
    "van_lska": {**_VAN_RECIPE, "lr_base_size": 128, "drop_path_by_model": {}},
    "smt": {
        **_IMAGENET_COMMON,
        "lr_base": 1e-3,
        "lr_base_size": 512,
        "warmup_lr": 1e-7,
        "min_lr": 1e-6,
        "cooldown_epochs": 0,
        "sched_on_epochs": False,
        "warmup_prefix": True,
        "clip_grad": 5.0,
        "mixup": 0.2,
        "cutmix": 1.0,
        "train_interpolation": "bicubic",
        "drop_path": 0.1,
        "drop_path_by_model": {"smt_t": 0.1, "smt_s": 0.2, "smt_b": 0.3, "smt_l": 0.1},
    },
    "digits": {
        "opt": "adamw",
        "lr_base": 2e-3,
        "lr_base_size": 64,
        "warmup_lr": 2e-5,
        "min_lr": 2e-5,
        "weight_decay": 0.05,
        "epochs": 10,
        "warmup_epochs": 1.0,
        "cooldown_epochs": 0,
        "sched_on_epochs": False,
        "warmup_prefix": False,
        "clip_grad": None,
        "label_smoothing": 0.1,
        "scale": [0.7, 1.0],
        "ratio": [0.8, 1.25],
        "hflip": 0.0,
        "color_jitter": None,
        "auto_augment": None,
        "reprob": 0.0,
        "remode": "pixel",
        "mixup": 0.0,
        "cutmix": 0.0,
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.5,
        "train_interpolation": "bilinear",
        "model_ema": True,
        "model_ema_decay": 0.998,
        "drop_path": 0.1,
        "drop_path_by_model": {},
    },
}

# the TrainConfig fields a recipe sets (everything in a recipe but its per-model table)
RECIPE_FIELDS = tuple(key for key in RECIPES["van"] if key != "drop_path_by_model")

# settings that may differ when resuming: they do not change the numbers. ``threads`` is not among
# them: CPU kernels split their reductions by thread count, so 1 and 2 threads give other weights.
RESULT_FREE_FIELDS = frozenset({"num_workers", "quiet", "out"})


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored as ``run.json`` in the run directory).

    ``None`` means "from the recipe" (or, for ``lr``, ``lr_base * global batch / lr_base_size``).
    """

    data: str = "mnist"
    model: str | None = None  # None: DEFAULT_MODEL, sized for the data
    model_args: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    kernel_size: int | None = None
    attention: str | None = None
    checkpoint_path: str | None = None  # published weights to fine-tune from
    recipe: str = "auto"  # auto: digits for the embedded sets, else the model family's
    epochs: int | None = None
    batch_size: int = 64
    opt: str | None = None
    lr: float | None = None
    lr_base: float | None = None
    lr_base_size: int | None = None
    warmup_lr: float | None = None
    min_lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    cooldown_epochs: int | None = None
    sched_on_epochs: bool | None = None
    warmup_prefix: bool | None = None
    clip_grad: float | None = None
    drop_path: float | None = None
    label_smoothing: float | None = None
    scale: list[float] | None = None
    ratio: list[float] | None = None
    hflip: float | None = None
    color_jitter: float | None = None
    auto_augment: str | None = None
    train_interpolation: str | None = None
    reprob: float | None = None
    remode: str | None = None
    mixup: float | None = None
    cutmix: float | None = None
    mixup_prob: float | None = None
    mixup_switch_prob: float | None = None
    model_ema: bool | None = None
    model_ema_decay: float | None = None
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
    threads: int = 1  # CPU threads per process; fixed (not the machine's core count) so runs agree
    out: str | None = None
    quiet: bool = False
    world_size: int | None = None  # filled by resolve_config: the global batch is batch_size * world_size

    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL

    def model_kwargs(self, img_size: int) -> tuple[str, dict[str, Any]]:
        """The registered name and the ``create_model`` keyword arguments this config asks for."""
        kwargs: dict[str, Any] = {}
        if self.model is None and self.checkpoint_path is None and img_size <= 64:
            kwargs.update(DEFAULT_SMALL_OVERRIDES)
        kwargs.update(self.model_args)
        if self.kernel_size is not None:
            kwargs["kernel_size"] = self.kernel_size
        if self.attention is not None:
            kwargs["attention"] = self.attention
        if self.drop_path is not None:
            kwargs["drop_path_rate"] = self.drop_path
        return self.model_name(), kwargs

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def recipe_for(config: TrainConfig) -> str:
    """The recipe ``auto`` stands for: ``digits`` on the embedded sets, else the model family's."""
    if config.recipe != "auto":
        if config.recipe not in RECIPES:
            from ..errors import ConfigurationError

            raise ConfigurationError(f"--recipe must be auto or one of {', '.join(RECIPES)}; got {config.recipe!r}")
        return config.recipe
    if config.data in EMBEDDED_NAMES:
        return "digits"
    name = config.model_name()
    for prefix, recipe in (("van_lska", "van_lska"), ("van", "van"), ("smt", "smt")):
        if name.startswith(prefix):
            return recipe
    return "van"


def resolve_config(config: TrainConfig, world_size: int = 1) -> TrainConfig:
    """``config`` with the recipe's values where it has ``None`` and the learning rates scaled.

    The lr (and, with it, the warmup and minimum lr) scale linearly with the global batch
    ``batch_size * world_size`` against the recipe's ``lr_base_size``, as SMT's script and timm's
    ``--lr-base`` do; an explicit ``--lr`` is taken as it is.
    """
    name = recipe_for(config)
    recipe = RECIPES[name]
    values = {key: getattr(config, key) for key in RECIPE_FIELDS}
    for key in RECIPE_FIELDS:
        if values[key] is None and key not in ("drop_path",):
            values[key] = recipe[key]
    if config.epochs is not None and config.cooldown_epochs is None:
        values["cooldown_epochs"] = 0  # the recipe's cool-down belongs to its own epoch count
    if values["drop_path"] is None:
        values["drop_path"] = recipe["drop_path_by_model"].get(config.model_name(), recipe["drop_path"])
    factor = config.batch_size * world_size / values["lr_base_size"]
    lr = config.lr if config.lr is not None else values["lr_base"] * factor
    if config.lr is not None:  # an explicit lr: the warmup and floor keep their ratio to it
        factor = config.lr / values["lr_base"]
    if config.warmup_lr is None:
        values["warmup_lr"] = recipe["warmup_lr"] * factor
    if config.min_lr is None:
        values["min_lr"] = recipe["min_lr"] * factor
    data = config.data
    if data not in EMBEDDED_NAMES:
        data = str(Path(data).expanduser().resolve())  # eval and resume work from any directory
    checkpoint_path = config.checkpoint_path
    if checkpoint_path is not None:
        checkpoint_path = str(Path(checkpoint_path).expanduser().resolve())
    resolved = replace(
        config, recipe=name, lr=lr, data=data, checkpoint_path=checkpoint_path, world_size=world_size, **values
    )
    check_config(resolved)
    return resolved


_T = TypeVar("_T")


def resolved(value: _T | None, name: str) -> _T:
    """A recipe field of a resolved config: never ``None`` after :func:`resolve_config` (typed so)."""
    if value is None:
        raise RuntimeError(f"TrainConfig.{name} is None: pass the config through resolve_config first")
    return value


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(config: TrainConfig) -> None:
    """Refuse settings no run can use, naming the option (a resolved config: no ``None`` recipe values)."""
    from ..errors import ConfigurationError

    def fail(name: str, rule: str) -> None:
        raise ConfigurationError(f"{_option(name)} must be {rule}, got {getattr(config, name)!r}")

    for name in ("epochs", "batch_size", "num_nodes", "threads", "lr_base_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(name, "a positive integer")
    for name in ("num_workers", "cooldown_epochs"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(name, "an integer >= 0")
    for name in ("lr", "lr_base"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
            fail(name, "a positive number")
    for name in ("warmup_lr", "min_lr", "weight_decay", "warmup_epochs", "mixup", "cutmix", "color_jitter"):
        value = getattr(config, name)
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
            fail(name, "a number >= 0")
    if config.clip_grad is not None and not config.clip_grad > 0:
        fail("clip_grad", "a positive number (or left out: no clipping)")
    for name in ("drop_path", "label_smoothing"):
        if not 0.0 <= getattr(config, name) < 1.0:
            fail(name, "in [0, 1)")
    for name in ("hflip", "reprob", "mixup_prob", "mixup_switch_prob"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            fail(name, "a probability in [0, 1]")
    if not 0.0 < getattr(config, "model_ema_decay") < 1.0:  # noqa: B009 - resolved: never None here
        fail("model_ema_decay", "in (0, 1)")
    for name in ("scale", "ratio"):
        pair = getattr(config, name)
        if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
            fail(name, "two positive numbers, low <= high")
    if getattr(config, "scale")[1] > 1.0:  # noqa: B009 - resolved: never None here
        fail("scale", "at most 1 (fractions of the image area)")
    if not 0.0 < config.val_fraction < 1.0:
        fail("val_fraction", "in (0, 1)")
