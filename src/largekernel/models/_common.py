"""Pieces shared by the model families: argument checks, weight init, feature info."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PyramidBackbone", "create_from_config", "check_out_indices", "check_stage_lists", "checkpoint_block", "feature_info", "init_weights"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_stage_lists(model: str, **lists: Any) -> int:
    """Check that every per-stage list has the same length; return that length (number of stages)."""
    lengths = {}
    for name, values in lists.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"{model}: {name} must be a list with one entry per stage, got {values!r}")
        lengths[name] = len(values)
    if len(set(lengths.values())) != 1:
        described = ", ".join(f"{name} has {n} ({list(lists[name])})" for name, n in lengths.items())
        raise ValueError(f"{model}: per-stage settings must all have one entry per stage, but {described}")
    num_stages = next(iter(lengths.values()))
    if num_stages < 1:
        raise ValueError(f"{model}: need at least one stage, got empty per-stage lists")
    for name in ("embed_dims", "depths"):
        if name in lists:
            for value in lists[name]:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{model}: {name} must be positive ints, got {list(lists[name])}")
    if "mlp_ratios" in lists:
        for value in lists["mlp_ratios"]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{model}: mlp_ratios must be positive numbers, got {list(lists['mlp_ratios'])}")
    return num_stages


def check_out_indices(model: str, out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
    """Validate stage indices for ``features_only`` (negative indices count from the end)."""
    indices = []
    for index in out_indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -num_stages <= index < num_stages:
            raise ValueError(
                f"{model}: out_indices must be stage indices in [0, {num_stages - 1}] "
                f"(or negative from the end), got {tuple(out_indices)}"
            )
        indices.append(index % num_stages)
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(f"{model}: out_indices must be non-empty and without repeats, got {tuple(out_indices)}")
    return tuple(sorted(indices))


def init_weights(module: nn.Module) -> None:
    """The reference codes' init: Linear trunc-normal(.02); LayerNorm 1/0; Conv2d He-normal by fan-out."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class FeatureInfo(list):
    """timm-style feature info: a list of dicts (``num_chs``, ``reduction``, ``module``, ``stage``)
    with timm's accessors ``channels()`` and ``reduction()``."""

    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self]

    def reduction(self) -> list[int]:
        return [info["reduction"] for info in self]

    def module_name(self) -> list[str]:
        return [info["module"] for info in self]


def feature_info(embed_dims: Sequence[int], reductions: Sequence[int], indices: Sequence[int]) -> FeatureInfo:
    """Channels, stride and producing module of each returned stage map."""
    return FeatureInfo(
        {"num_chs": embed_dims[i], "reduction": reductions[i], "module": f"norm{i + 1}", "stage": i} for i in indices
    )


@contextlib.contextmanager
def _keep_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    # the recomputation in the backward pass must not update BatchNorm running statistics a second time
    buffers = [
        (buffer, buffer.detach().clone())
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training
        for buffer in layer.buffers()
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def checkpoint_block(block: nn.Module, *args: Any) -> torch.Tensor:
    """Run ``block(*args)`` under activation checkpointing (recomputed in the backward pass).

    BatchNorm statistics are updated once per step, as without checkpointing.
    """
    return checkpoint(
        block,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _keep_batchnorm_statistics(block)),
    )


class PyramidBackbone(nn.Module):
    """The timm surface shared by our four-stage backbones (VAN, SMT).

    A subclass builds ``head`` (unless ``features_only``), sets ``num_features``, ``num_stages``,
    ``built_stages``, ``features_only``, ``out_indices`` and ``grad_checkpointing``, and defines
    ``_run_stage(x, i)``: stage ``i`` from an NCHW map to its normalised NCHW map.
    """

    def _run_stage(self, x: torch.Tensor, i: int) -> torch.Tensor:
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        if self.features_only:
            raise ValueError(f"{type(self).__name__}: a features_only model has no classifier")
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it)."""
        if self.features_only:
            raise ValueError(f"{type(self).__name__}: a features_only model has no classifier to reset")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"{type(self).__name__}: num_classes must be an int >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        reference = next(self.parameters())
        self.head = (
            nn.Linear(self.num_features, num_classes, device=reference.device, dtype=reference.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        self.head.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, C_last, H/32, W/32)``: the last stage's normalised map."""
        for i in range(self.built_stages):
            x = self._run_stage(x, i)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool then the classifier; ``pre_logits=True`` stops after the pool."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage maps (NCHW, normalised) for ``indices`` (default: all built stages)."""
        wanted = set(range(self.built_stages) if indices is None else check_out_indices(type(self).__name__, indices, self.num_stages))
        if max(wanted) >= self.built_stages:
            raise ValueError(f"{type(self).__name__}: this model only builds stages 0..{self.built_stages - 1}, asked for {sorted(wanted)}")
        maps = []
        for i in range(max(wanted) + 1):
            x = self._run_stage(x, i)
            if i in wanted:
                maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices)
        return self.forward_head(self.forward_features(x))


def create_from_config(cls: type[nn.Module], configs: dict[str, dict], variant: str, overrides: dict[str, Any]) -> nn.Module:
    """Build ``variant`` of a family from its config dict, with overrides, and attach its ``pretrained_cfg``."""
    config = configs[variant]
    model = cls(**{**config["arch"], **overrides})
    model.pretrained_cfg = {  # type: ignore[assignment]
        "architecture": variant,
        "url": config.get("url"),
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    return model
