"""Teach Ultralytics' YAML parser our blocks, with channel handling identical to its own blocks.

Ultralytics' ``parse_model`` scales a block's channels by the width multiple only for classes in two
sets it builds *inside* the function (``base_modules``, ``repeat_modules``); an unknown class gets its
raw YAML arguments and is assumed to keep its input channels. Adding to those sets is impossible
without editing Ultralytics, and guessing channels in our blocks is how community ports go wrong.

So :func:`register` wraps ``ultralytics.nn.tasks.parse_model`` (a module attribute, looked up at call
time by ``DetectionModel``): each of our rows is parsed by Ultralytics as its *twin* (``C2f_LSKA`` as
``C2f``, ``SPPF_LSKA`` as ``SPPF``, a plain ``LSKA`` layer as ``nn.BatchNorm2d``, which receives the
incoming channel count), and the built twin is then replaced by our block with the channels, repeats
and scale flags Ultralytics resolved for it. Width/depth scaling, ``max_channels`` and the
m/l/x-only ``c3k`` flag therefore follow Ultralytics exactly, in every version that has the twins.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.nn.modules.block import SPPF

from ...errors import ConfigurationError, MissingFileError
from ...layers.attention import SpatialGatingAttention
from ...layers.decomposition import Decomposition
from ...layers.lka import LKA
from ...layers.lska import LSKA
from ...layers.sam import SAM
from . import blocks

__all__ = ["BLOCK_NAMES", "is_registered", "register", "unregister", "upstream_to_ours"]


@dataclass(frozen=True)
class _BlockSpec:
    """How one YAML name is parsed (as ``twin``) and then built from the parsed twin."""

    twin: str  # module name Ultralytics parses in our place
    usage: str  # the YAML row form, for error messages
    max_args: int  # YAML args after the channel count (or all args for channel-preserving layers)
    twin_args: Callable[[list], list]  # our YAML args -> the twin's YAML args
    build_args: Callable[[Any, list], list]  # (parsed twin, our YAML args) -> our constructor args
    block: type[nn.Module]
    keeps_channels: bool = False  # a plain layer: channels come from the previous layer


def _arg(args: Sequence, index: int, default: Any) -> Any:
    return args[index] if len(args) > index else default


def _plain(layer: type[nn.Module], names: Sequence[str]) -> _BlockSpec:
    return _BlockSpec(
        twin="nn.BatchNorm2d",
        usage=f"[-1, 1, {layer.__name__}, [{', '.join(names)}]]",
        max_args=len(names),
        twin_args=lambda args: [],
        build_args=lambda twin, args: [twin.num_features, *args],
        block=layer,
        keeps_channels=True,
    )


def _c3k2_args(twin: Any, args: list) -> list:
    from ultralytics.nn.modules.block import C3k

    c3k = isinstance(twin.m[0], C3k)  # resolved by Ultralytics: True at m/l/x even if the YAML says False
    channels = [twin.cv1.conv.in_channels, twin.cv2.conv.out_channels]
    return [*channels, len(twin.m), c3k, _arg(args, 3, 0.5), _arg(args, 1, 11)]


# YAML name -> spec. Channel-changing blocks take [c2, kernel_size, ...] like their twin takes [c2, ...].
_SPECS: dict[str, _BlockSpec] = {
    "LSKA": _plain(blocks.LSKA, ["kernel_size=23", "dilation=None"]),
    "LKA": _plain(blocks.LKA, ["kernel_size=21", "dilation=None"]),
    "SAM": _plain(blocks.SAM, ["num_heads=4", "expand_ratio=2"]),
    "SPPF_LSKA": _BlockSpec(
        "SPPF",
        "[-1, 1, SPPF_LSKA, [c2, kernel_size=11, pool=5]]",
        3,
        lambda a: [a[0], _arg(a, 2, 5)],
        lambda t, a: [t.cv1.conv.in_channels, t.cv2.conv.out_channels, _arg(a, 2, 5), _arg(a, 1, 11)],
        blocks.SPPF_LSKA,
    ),
    "C2f_LSKA": _BlockSpec(
        "C2f",
        "[-1, n, C2f_LSKA, [c2, kernel_size=11, e=0.5]]",
        3,
        lambda a: [a[0], False, 1, _arg(a, 2, 0.5)],
        lambda t, a: [t.cv1.conv.in_channels, t.cv2.conv.out_channels, len(t.m), _arg(a, 1, 11), _arg(a, 2, 0.5)],
        blocks.C2f_LSKA,
    ),
    "C3_LSKA": _BlockSpec(
        "C3",
        "[-1, n, C3_LSKA, [c2, kernel_size=11, e=0.5]]",
        3,
        lambda a: [a[0], True, 1, _arg(a, 2, 0.5)],
        lambda t, a: [t.cv1.conv.in_channels, t.cv3.conv.out_channels, len(t.m), _arg(a, 1, 11), _arg(a, 2, 0.5)],
        blocks.C3_LSKA,
    ),
    "C3k2_LSKA": _BlockSpec(
        "C3k2",
        "[-1, n, C3k2_LSKA, [c2, kernel_size=11, c3k=False, e=0.5]]",
        4,
        lambda a: [a[0], _arg(a, 2, False), _arg(a, 3, 0.5)],
        _c3k2_args,
        blocks.C3k2_LSKA,
    ),
}
BLOCK_NAMES: tuple[str, ...] = tuple(_SPECS)

# classes a saved model may reference; allow-listed for torch's weights_only loading (Ultralytics' safe load)
_SAFE_GLOBALS: list[Any] = [
    LSKA,
    LKA,
    SAM,
    SpatialGatingAttention,
    Decomposition,
    *(spec.block for spec in _SPECS.values()),
    blocks.AttentionBottleneck,
]

# the Ultralytics rows our CSP/SPPF blocks replace: their YAML args -> ours (kernel size inserted after c2).
# Arguments our block cannot take (groups, attention flags) are refused rather than dropped.
_UPSTREAM_ARGS: dict[str, tuple[str, Callable[[list], bool]]] = {
    "SPPF_LSKA": ("[c2, pool]", lambda a: len(a) <= 2),
    "C2f_LSKA": ("[c2, shortcut]", lambda a: len(a) <= 2),
    "C3_LSKA": ("[c2, shortcut]", lambda a: len(a) <= 2),
    "C3k2_LSKA": ("[c2, c3k, e]", lambda a: len(a) <= 3),
}


def upstream_to_ours(module: str, args: list, kernel_size: int) -> list:
    """YAML args of the Ultralytics row that ``module`` replaces -> ``module``'s YAML args.

    ``SPPF [c2, pool]`` -> ``SPPF_LSKA [c2, k, pool]``; ``C2f / C3 [c2, shortcut]`` -> ``[c2, k]``
    (our bottlenecks carry their own shortcut); ``C3k2 [c2, c3k, e]`` -> ``[c2, k, c3k, e]``.
    """
    form, fits = _UPSTREAM_ARGS[module]
    if not args or not fits(args):
        raise ConfigurationError(
            f"{module} replaces an Ultralytics row with args {form}, got {args}: this Ultralytics "
            "version's config differs from the one largekernel's recipe was written for"
        )
    if module in ("C2f_LSKA", "C3_LSKA"):
        return [args[0], kernel_size]
    return [args[0], kernel_size, *args[1:]]


def _check_row(index: int, row: list, spec: _BlockSpec, name: str) -> list:
    source, _repeats, _name, args = row
    args = [_literal(a) for a in args]
    if spec.keeps_channels and source != -1:
        raise ConfigurationError(
            f"layer {index} ({name}): a channel-preserving attention layer must take the previous layer "
            f"(from=-1), got from={source!r}; expected {spec.usage}"
        )
    limit = spec.max_args + (0 if spec.keeps_channels else 1)
    if len(args) > limit or (not spec.keeps_channels and not args):
        raise ConfigurationError(f"layer {index} ({name}): got args {args}; expected {spec.usage}")
    return args


def _literal(value: Any) -> Any:
    """YAML strings such as ``"None"`` become Python values, as parse_model does for its own rows."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(value)
    return value


@contextlib.contextmanager
def _yaml_activation(spec: str | None) -> Iterator[None]:
    """Build our blocks' Conv layers under the YAML's ``activation:`` as parse_model does for its own."""
    if not spec:
        yield
        return
    from ultralytics.nn import tasks
    from ultralytics.nn.modules import Conv

    safe = getattr(tasks, "_SafeLoad", None)
    default = Conv.default_act
    Conv.default_act = safe.activation(spec) if safe is not None else eval(spec, {"nn": nn, "torch": torch})
    try:
        yield
    finally:
        Conv.default_act = default


class _HoldRecords(logging.Filter):
    """Holds back a logger's records (Ultralytics' layer table) so that they can be corrected and re-emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _table_row(record: logging.LogRecord, twin: Any, block: Any, args: list) -> bool:
    """Rewrite Ultralytics' table row of ``twin`` to show ``block``; False if the row is not recognised."""
    message = record.getMessage()
    placeholder = f"{twin.np:10.0f}  {twin.type:<45}"  # as parse_model prints params and module
    if not message.startswith(f"{twin.i:>3}") or placeholder not in message:
        return False
    module = f"{block.type:<45}" if len(block.type) < 45 else f"{block.type} "  # keep a space before the args
    record.msg = message[: message.index(placeholder)] + f"{block.np:10.0f}  {module}{args!s:<30}"
    record.args = None
    return True


def _wrap(original: Callable) -> Callable:
    @functools.wraps(original)
    def parse_model(d: dict, ch: int, verbose: bool = True):
        rows = d["backbone"] + d["head"]
        plan = {
            i: (_SPECS[row[2]], row[2]) for i, row in enumerate(rows) if isinstance(row[2], str) and row[2] in _SPECS
        }
        if not plan:
            return original(d, ch, verbose)
        d = {**d, "backbone": [list(r) for r in d["backbone"]], "head": [list(r) for r in d["head"]]}
        ours: dict[int, list] = {}
        n_backbone = len(d["backbone"])
        for i, (spec, name) in plan.items():
            row = d["backbone"][i] if i < n_backbone else d["head"][i - n_backbone]
            ours[i] = _check_row(i, row, spec, name)
            row[2], row[3] = spec.twin, spec.twin_args(ours[i])

        from ultralytics.utils import LOGGER

        held = _HoldRecords()
        LOGGER.addFilter(held)  # the layer table is printed while parsing: hold it until our blocks are in
        rewritten: set[int] = set()
        try:
            model, save = original(d, ch, verbose)
            with _yaml_activation(d.get("activation")):
                for i, (spec, _name) in plan.items():
                    twin: Any = model[i]  # an Ultralytics block, with the attributes parse_model set
                    twins: list[Any] = list(twin) if isinstance(twin, nn.Sequential) and spec.keeps_channels else [twin]
                    args = [spec.build_args(t, ours[i]) for t in twins]
                    built: list[Any] = [spec.block(*a) for a in args]
                    if isinstance(twins[0], SPPF):  # parse_model sets cv1.act for legacy rows after construction
                        for ours_sppf, twin_sppf in zip(built, twins):
                            ours_sppf.cv1.act = twin_sppf.cv1.act
                    block: Any = nn.Sequential(*built) if len(built) > 1 else built[0]
                    block.np = sum(p.numel() for p in block.parameters())
                    block.i, block.f = twin.i, twin.f
                    block.type = f"{spec.block.__module__}.{spec.block.__qualname__}"
                    model[i] = block
                    if any(_table_row(r, twin, block, args[0]) for r in held.records):
                        rewritten.add(i)
        finally:
            LOGGER.removeFilter(held)
            for record in held.records:
                LOGGER.handle(record)
        if verbose:
            for i in sorted(set(plan) - rewritten):  # an Ultralytics whose table we do not recognise
                LOGGER.info(f"largekernel: layer {i} is {model[i].type} ({model[i].np:,} params)")
        return model, save

    parse_model._largekernel_original = original  # type: ignore[attr-defined]  # a marker on the function object, for unwrapping
    return parse_model


def _wrap_yaml_load(original: Callable) -> Callable:
    @functools.wraps(original)
    def yaml_model_load(path):
        from . import configs

        name = Path(str(path)).name
        if not Path(str(path)).exists() and str(path) == name and configs.is_our_name(name):
            return configs.build_config(name)  # ours, built from the installed Ultralytics config
        try:
            return original(path)
        except FileNotFoundError as error:
            if re.match(r"^yolo(v5|v8|11)[nsmlx]?-", name):  # looks like one of ours: list them
                raise MissingFileError(f"{error}. {configs.unknown_name_message(name)}") from None
            raise

    yaml_model_load._largekernel_original = original  # type: ignore[attr-defined]  # a marker on the function object, for unwrapping
    return yaml_model_load


# Ultralytics modules that call yaml_model_load by a name of their own (imported with `from ... import`)
_YAML_LOAD_USERS = ("ultralytics.nn.tasks", "ultralytics.engine.model")


def register() -> None:
    """Make Ultralytics parse ``LSKA``, ``LKA``, ``SAM``, ``SPPF_LSKA``, ``C2f_LSKA``, ``C3_LSKA``, ``C3k2_LSKA``.

    Also makes Ultralytics' YAML loader know our config names (``YOLO("yolov8n-lska.yaml")``,
    ``yolo train model=yolov8n-lska.yaml``), and allow-lists our classes for
    ``torch.load(weights_only=True)`` so Ultralytics' safe loading (``ULTRALYTICS_SAFE_LOAD=1``)
    accepts checkpoints of these models. Idempotent; importing :mod:`largekernel.integrations.yolo`
    already calls it.
    """
    import importlib

    from ultralytics.nn import tasks

    if not hasattr(tasks.parse_model, "_largekernel_original"):
        tasks.parse_model = _wrap(tasks.parse_model)
    for module_name in _YAML_LOAD_USERS:
        module = importlib.import_module(module_name)
        load = getattr(module, "yaml_model_load")  # noqa: B009 - a module attribute mypy cannot see
        if not hasattr(load, "_largekernel_original"):
            setattr(module, "yaml_model_load", _wrap_yaml_load(load))  # noqa: B010 - as above: an attribute mypy cannot see
    torch.serialization.add_safe_globals(_SAFE_GLOBALS)


def unregister() -> None:
    """Restore Ultralytics' own ``parse_model`` and YAML loader (the safe-load allow-list stays, as torch keeps it)."""
    import importlib

    from ultralytics.nn import tasks

    original = getattr(tasks.parse_model, "_largekernel_original", None)
    if original is not None:
        tasks.parse_model = original
    for module_name in _YAML_LOAD_USERS:
        module = importlib.import_module(module_name)
        original = getattr(getattr(module, "yaml_model_load"), "_largekernel_original", None)  # noqa: B009 - a module attribute mypy cannot see
        if original is not None:
            setattr(module, "yaml_model_load", original)  # noqa: B010 - as above


def is_registered() -> bool:
    """Whether Ultralytics' parser currently knows our blocks."""
    from ultralytics.nn import tasks

    return hasattr(tasks.parse_model, "_largekernel_original")
