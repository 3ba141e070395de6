"""Model building: through timm's ``build_model_with_cfg`` when timm imports, else our equivalent.

Every family's ``_create_<family>`` calls :func:`build_model` once; the timm path and the
stand-in path take the same arguments and give the same model (pretrained cfg attached,
``features_only`` as a ``FeatureGetterNet`` over ``forward_intermediates``), so the feature
logic exists once, in :class:`~largekernel.models._common.PyramidBackbone`.

Set ``LARGEKERNEL_NO_TIMM=1`` to use the stand-in path even where timm is installed (tests do).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..errors import ConfigurationError

__all__ = [
    "build_model",
    "get_pretrained_cfg",
    "pretrained_cfg",
    "register_pretrained_cfgs",
    "resolve_pretrained_cfg",
    "timm_available",
    "unwrap_features",
]

_TIMM_IMPORTS: bool | None = None
# model name -> {tag: cfg}; the first tag is the default, as in timm's registry
_PRETRAINED_CFGS: dict[str, dict[str, dict[str, Any]]] = {}


def timm_available() -> bool:
    """Whether timm can be used (importable, and not switched off with ``LARGEKERNEL_NO_TIMM=1``)."""
    global _TIMM_IMPORTS
    if os.environ.get("LARGEKERNEL_NO_TIMM", "") not in ("", "0"):
        return False
    if _TIMM_IMPORTS is None:
        try:
            import timm.models  # noqa: F401 - imported to learn whether it imports
        except Exception:  # noqa: BLE001 - timm missing, or its own imports (torchvision) failing
            _TIMM_IMPORTS = False
        else:
            _TIMM_IMPORTS = True
    return _TIMM_IMPORTS


def register_pretrained_cfgs(cfgs: Mapping[str, dict[str, Any]]) -> None:
    """Add ``{'name.tag': cfg}`` entries (tag optional) to our pretrained-cfg registry."""
    for name_tag, cfg in cfgs.items():
        name, _, tag = name_tag.partition(".")
        _PRETRAINED_CFGS.setdefault(name, {})[tag] = {**cfg, "architecture": name, "tag": tag or None}


def all_pretrained_cfgs() -> dict[str, dict[str, Any]]:
    """Every registered ``'name.tag'`` -> cfg (what timm's ``generate_default_cfgs`` takes)."""
    return {
        (f"{name}.{tag}" if tag else name): cfg for name, tags in _PRETRAINED_CFGS.items() for tag, cfg in tags.items()
    }


def get_pretrained_cfg(name: str) -> dict[str, Any] | None:
    """The cfg of ``'name'`` (default tag) or ``'name.tag'``, or ``None``."""
    name, _, tag = name.partition(".")
    tags = _PRETRAINED_CFGS.get(name)
    if not tags:
        return None
    return copy.deepcopy(tags.get(tag) if tag else next(iter(tags.values())))


def resolve_pretrained_cfg(
    variant: str, pretrained_cfg: str | dict[str, Any] | None = None, overlay: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """timm's ``resolve_pretrained_cfg`` for the stand-in path: registry entry (or a given dict) plus overlay."""
    if isinstance(pretrained_cfg, dict):
        cfg = copy.deepcopy(pretrained_cfg)
    else:
        found = get_pretrained_cfg(f"{variant}.{pretrained_cfg}" if pretrained_cfg else variant)
        if found is None:
            raise ConfigurationError(f"no pretrained cfg {pretrained_cfg!r} for {variant!r}")
        cfg = found
    cfg.update(overlay or {})
    cfg.setdefault("architecture", variant)
    return cfg


def pretrained_cfg(
    url: str | None, *, mean: tuple, std: tuple, crop_pct: float, first_conv: str, **kwargs: Any
) -> dict[str, Any]:
    """One variant's pretrained cfg (timm's ``PretrainedCfg`` fields) for 1000-class 224-px weights."""
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": crop_pct,
        "interpolation": "bicubic",
        "mean": mean,
        "std": std,
        "first_conv": first_conv,
        "classifier": "head",
        **kwargs,
    }


def unwrap_features(model: nn.Module) -> nn.Module:
    """The backbone inside a ``features_only`` wrapper (the model itself otherwise)."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) and hasattr(model, "out_indices") else model


def build_model(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool = False,
    *,
    feature_cfg: Mapping[str, Any],
    pretrained_filter_fn: Callable[..., dict] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``variant`` of ``model_cls`` with its pretrained cfg; ``features_only`` wraps it.

    Same arguments as timm's ``build_model_with_cfg`` (``pretrained_cfg``,
    ``pretrained_cfg_overlay``, ``cache_dir``, ``features_only``, ``out_indices``, ``feature_cls``
    and the model's own keyword arguments).
    """
    if timm_available():
        from timm.models import build_model_with_cfg

        from ..integrations.timm import register_timm_models

        register_timm_models()  # timm resolves the pretrained cfg from its registry
        return build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            feature_cfg=dict(feature_cfg),
            pretrained_filter_fn=pretrained_filter_fn,
            **kwargs,
        )
    return _build_without_timm(model_cls, variant, pretrained, dict(feature_cfg), **kwargs)


def _build_without_timm(
    model_cls: Callable[..., nn.Module], variant: str, pretrained: bool, feature_cfg: dict[str, Any], **kwargs: Any
) -> nn.Module:
    from ._features import FeatureGetterNet
    from .checkpoint import load_pretrained

    cfg = resolve_pretrained_cfg(
        variant, kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None)
    )
    kwargs.pop("cache_dir", None)
    if cfg.get("num_classes") is not None and cfg["num_classes"] >= 0:
        kwargs.setdefault("num_classes", cfg["num_classes"])
    kwargs.setdefault("in_chans", cfg.get("input_size", (3,))[0])
    features = kwargs.pop("features_only", False)
    if features:
        feature_cfg.setdefault("out_indices", (0, 1, 2, 3, 4))
        if "out_indices" in kwargs:
            feature_cfg["out_indices"] = kwargs.pop("out_indices")
        feature_cls = kwargs.pop("feature_cls", feature_cfg.pop("feature_cls", "getter"))
        if feature_cls not in ("getter", FeatureGetterNet):
            raise ConfigurationError(
                f"{variant}: without timm, features_only supports feature_cls='getter' only, got {feature_cls!r}"
            )
        feature_cfg.pop("flatten_sequential", None)
    model = model_cls(**kwargs)
    model.pretrained_cfg = model.default_cfg = cfg  # type: ignore[assignment]  # plain attributes, as in timm
    if pretrained:
        load_pretrained(model, cfg)
    if features:
        model = FeatureGetterNet(model, **feature_cfg)
        features_cfg = {k: v for k, v in cfg.items() if k not in ("num_classes", "classifier", "global_pool")}
        model.pretrained_cfg = model.default_cfg = features_cfg  # type: ignore[assignment]  # as above
    return model
