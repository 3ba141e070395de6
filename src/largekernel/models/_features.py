"""Feature extraction the timm way: index selection, ``FeatureInfo`` and ``FeatureGetterNet``.

Where timm imports, its own ``FeatureInfo`` and ``FeatureGetterNet`` are used (see
:func:`feature_classes`); the two small classes here are the stand-ins with the same behaviour
for installs without timm. Both wrap a model's ``forward_intermediates`` and
``prune_intermediate_layers``, so the feature logic lives once, in the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigurationError

__all__ = ["FeatureGetterNet", "FeatureInfo", "StageInfo", "feature_classes", "take_indices"]


def take_indices(num_features: int, indices: int | Sequence[int] | None, owner: str = "model") -> tuple[list[int], int]:
    """timm's ``feature_take_indices`` with a clear error: ``None`` all, ``int`` last n, list (negatives from the end).

    Returns the absolute indices (sorted as given) and the largest.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, bool):
        raise ConfigurationError(f"{owner}: indices must be an int or a list of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ConfigurationError(f"{owner}: last-n indices={indices} is out of range (1 to {num_features})")
        taken = list(range(num_features - indices, num_features))
    else:
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
            raise ConfigurationError(f"{owner}: indices must be an int or a list of ints, got {indices!r}")
        taken = []
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not -num_features <= index < num_features:
                raise ConfigurationError(
                    f"{owner}: out_indices/indices must be stage indices in [0, {num_features - 1}] "
                    f"(or negative from the end), got {tuple(indices)}"
                )
            taken.append(index % num_features)
        if not taken or len(set(taken)) != len(taken):
            raise ConfigurationError(
                f"{owner}: out_indices/indices must be non-empty and without repeats, got {tuple(indices)}"
            )
    return taken, max(taken)


class StageInfo(list):
    """A model's per-stage feature info: a list of dicts (``num_chs``, ``reduction``, ``module``,
    ``index``), as timm models keep it, with ``channels()``/``reduction()``/``module_name()``."""

    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self]

    def reduction(self) -> list[int]:
        return [info["reduction"] for info in self]

    def module_name(self) -> list[str]:
        return [info["module"] for info in self]


class FeatureInfo:
    """Stand-in for ``timm.models.FeatureInfo``: per-stage dicts plus the selected ``out_indices``."""

    def __init__(self, feature_info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        for i, info in enumerate(feature_info):
            info.setdefault("index", i)
        self.out_indices = tuple(out_indices)
        self.info = feature_info

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        return FeatureInfo(deepcopy(self.info), out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        def pick(i: int) -> dict[str, Any]:
            return self.info[i] if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, int):
            return pick(idx)
        return [pick(i) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


class FeatureGetterNet(nn.ModuleDict):
    """Stand-in for ``timm.models.FeatureGetterNet``: the pruned model's ``forward_intermediates``."""

    if TYPE_CHECKING:  # for the type checker only: a class annotation would break torch.jit
        model: Any  # a backbone with timm's forward_intermediates

    def __init__(
        self,
        model: nn.Module,
        out_indices: int | Sequence[int] = 4,
        out_map: Sequence[int | str] | None = None,
        return_dict: bool = False,
        output_fmt: str = "NCHW",
        norm: bool = False,
        prune: bool = True,
    ) -> None:
        super().__init__()
        if prune and hasattr(model, "prune_intermediate_layers"):
            out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm)  # type: ignore[operator]  # untyped nn.Module attribute
        self.feature_info = FeatureInfo(deepcopy(list(model.feature_info)), out_indices)  # type: ignore[arg-type]  # untyped nn.Module attribute
        self.model = model
        self.out_indices = out_indices
        self.out_map = out_map
        self.return_dict = return_dict
        self.output_fmt = output_fmt
        self.norm = norm

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # no mypy ignore comment in this body: TorchScript would parse it as a type annotation
        features = self.model.forward_intermediates(
            x, indices=self.out_indices, norm=self.norm, output_fmt=self.output_fmt, intermediates_only=True
        )
        assert isinstance(features, list)  # intermediates_only: the list alone (narrows TorchScript's Union)
        return features


def feature_classes() -> tuple[type, type]:
    """``(FeatureInfo, FeatureGetterNet)``: timm's own where timm imports, else the stand-ins above."""
    from ._builder import timm_available

    if timm_available():
        from timm.models._features import FeatureGetterNet as TimmFeatureGetterNet
        from timm.models._features import FeatureInfo as TimmFeatureInfo

        return TimmFeatureInfo, TimmFeatureGetterNet
    return FeatureInfo, FeatureGetterNet
