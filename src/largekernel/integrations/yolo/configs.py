"""Our YOLO configs, built from the Ultralytics configs installed beside this package.

Nothing of Ultralytics' (AGPL-3.0) configs ships in this package: each of our configs is a *recipe*,
an Ultralytics base config plus one edit, applied at build time to the YAML that Ultralytics'
own loader reads from its installed ``cfg/models`` folder. So the configs follow upstream, and
``yolov8n-lska`` is whatever ``yolov8n.yaml`` is on this machine with an LSKA layer after its SPPF.

Edits (see :data:`RECIPES`):

- ``after``: insert a channel-preserving layer (``LSKA``, ``LKA``, ``SAM``) after the backbone's
  SPPF; its output takes SPPF's place downstream (every row that read SPPF now reads the layer).
- ``replace``: swap the backbone's SPPF for ``SPPF_LSKA``, or its last two CSP blocks (P4, P5) for
  the LSKA version, keeping Ultralytics' channel numbers and repeats.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError

__all__ = ["RECIPES", "Recipe", "available_configs", "build_config", "is_our_name", "split_name"]

KERNEL_SIZE = 11  # the community's LSKA kernel for YOLO necks (LSKA paper's 11 x 11)


@dataclass(frozen=True)
class Recipe:
    """One of our configs: an Ultralytics base and one edit of its backbone.

    Attributes:
        base: Ultralytics config stem without scale letter (``"yolov8"``: ``yolov8.yaml``).
        edit: ``"after"`` (insert ``module`` after the ``anchor`` row) or ``"replace"`` (the last
            ``count`` backbone rows of module ``anchor`` become ``module``).
        anchor: the Ultralytics module name the edit is placed by (``"SPPF"``, ``"C2f"``).
        module: our YAML name (see :data:`largekernel.integrations.yolo.BLOCK_NAMES`).
        args: our arguments for an inserted layer (``[11]``: kernel size 11).
        count: how many anchor rows a ``replace`` edits, from the end of the backbone.
        summary: one line for listings.
    """

    base: str
    edit: str
    anchor: str
    module: str
    args: tuple[Any, ...] = ()
    count: int = 1
    summary: str = ""


def _after_sppf(base: str, module: str, args: tuple, what: str) -> Recipe:
    return Recipe(base, "after", "SPPF", module, args, summary=f"{what} after SPPF (channels unchanged)")


def _sppf(base: str) -> Recipe:
    return Recipe(
        base,
        "replace",
        "SPPF",
        "SPPF_LSKA",
        summary=f"SPPF_LSKA: LSKA (kernel {KERNEL_SIZE}) on SPPF's pooled concatenation",
    )


def _csp(base: str, anchor: str) -> Recipe:
    return Recipe(
        base,
        "replace",
        anchor,
        f"{anchor}_LSKA",
        count=2,
        summary=f"{anchor}_LSKA (BN + spatial-gating LSKA bottlenecks) at backbone P4 and P5",
    )


# config name (without scale letter) -> recipe
RECIPES: dict[str, Recipe] = {
    "yolov5-lska": _after_sppf("yolov5", "LSKA", (KERNEL_SIZE,), f"LSKA (kernel {KERNEL_SIZE})"),
    "yolov5-sppf-lska": _sppf("yolov5"),
    "yolov5-c3-lska": _csp("yolov5", "C3"),
    "yolov8-lska": _after_sppf("yolov8", "LSKA", (KERNEL_SIZE,), f"LSKA (kernel {KERNEL_SIZE})"),
    "yolov8-lka": _after_sppf("yolov8", "LKA", (KERNEL_SIZE,), f"LKA (kernel {KERNEL_SIZE})"),
    "yolov8-sam": _after_sppf("yolov8", "SAM", (4,), "SAM (4 heads: kernels 3/5/7/9)"),
    "yolov8-sppf-lska": _sppf("yolov8"),
    "yolov8-c2f-lska": _csp("yolov8", "C2f"),
    "yolo11-lska": _after_sppf("yolo11", "LSKA", (KERNEL_SIZE,), f"LSKA (kernel {KERNEL_SIZE})"),
    "yolo11-sppf-lska": _sppf("yolo11"),
    "yolo11-c3k2-lska": _csp("yolo11", "C3k2"),
}

# "yolov8n-lska.yaml" -> ("yolov8", "n", "lska"); the scale letter is optional, as for Ultralytics' names
_NAME = re.compile(r"^(yolo(?:v\d+|\d+))([nsmlx]?)-([a-z0-9-]+?)(?:\.ya?ml)?$")


def available_configs() -> list[str]:
    """Names of our configs without scale letter, e.g. ``'yolov8-lska'``."""
    return sorted(RECIPES)


def split_name(name: str) -> tuple[str, str, str] | None:
    """``'yolov8n-lska.yaml'`` -> ``('yolov8', 'n', 'yolov8-lska')``; ``None`` if not one of ours."""
    match = _NAME.match(name)
    if match is None or f"{match.group(1)}-{match.group(3)}" not in RECIPES:
        return None
    return match.group(1), match.group(2), f"{match.group(1)}-{match.group(3)}"


def is_our_name(name: str) -> bool:
    """Whether ``name`` (a bare file name, scale letter optional) names one of our configs."""
    return split_name(name) is not None


def listing() -> str:
    """Our names with the scale placeholder, for error messages: ``yolov8{n,s,m,l,x}-lska.yaml, ...``."""
    return ", ".join(re.sub(r"^(yolov?\d+)", r"\1{n,s,m,l,x}", c) + ".yaml" for c in available_configs())


def unknown_name_message(name: str) -> str:
    """Why ``name`` is not ours, with the close matches and the full list."""
    stem = re.sub(r"\.ya?ml$", "", name)
    given = re.match(r"^yolov?\d+([nsmlx])-", stem)
    scale = given.group(1) if given else "n"  # suggest the scale asked for
    candidates = [re.sub(r"^(yolov?\d+)", rf"\g<1>{scale}", c) for c in available_configs()]
    close = difflib.get_close_matches(stem, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(c + '.yaml' for c in close)}?" if close else ""
    return f"{name!r} is not a largekernel YOLO config.{hint} largekernel's configs: {listing()}"


def build_config(name: str) -> dict[str, Any]:
    """The model dict Ultralytics builds for ``name`` (``'yolov8n-lska'``, ``.yaml`` and scale optional).

    Loads Ultralytics' own base config (``yolov8n.yaml``) with Ultralytics' loader and applies the
    recipe. Without a scale letter the dict has none, and Ultralytics' parser takes its first
    scale (``n``) with a warning, as for ``yolov8.yaml``.

    Raises:
        ConfigurationError: ``name`` is not one of ours (the message lists them), or the installed
            Ultralytics' base config no longer has the rows the recipe edits.
    """
    if not isinstance(name, str):
        raise TypeError(f"config name must be a str like 'yolov8n-lska', got {type(name).__name__}")
    parts = split_name(name)
    if parts is None:
        raise ConfigurationError(unknown_name_message(name))
    base, scale, config = parts
    from ultralytics.nn import tasks

    load = getattr(tasks.yaml_model_load, "_largekernel_original", tasks.yaml_model_load)
    d = copy.deepcopy(load(f"{base}{scale}.yaml"))
    d["scale"] = scale
    d["yaml_file"] = f"{base}{scale}-{config.split('-', 1)[1]}.yaml"
    apply_recipe(d, RECIPES[config], f"{base}.yaml")
    return d


def apply_recipe(d: dict[str, Any], recipe: Recipe, source: str = "the base config") -> None:
    """Edit the model dict ``d`` (``backbone`` / ``head`` rows) in place as ``recipe`` says."""
    from .parser import upstream_to_ours  # the parser knows each block's argument layout

    backbone = d["backbone"]
    found = [i for i, row in enumerate(backbone) if row[2] == recipe.anchor]
    wanted = 1 if recipe.edit == "after" else recipe.count
    if len(found) < wanted or (recipe.anchor == "SPPF" and len(found) != 1):
        raise ConfigurationError(
            f"Ultralytics' {source} has {len(found)} backbone {recipe.anchor} row(s); largekernel's "
            f"{recipe.module} recipe needs {'exactly one' if recipe.anchor == 'SPPF' else f'at least {wanted}'} "
            "(this Ultralytics version's config differs from the one the recipe was written for)"
        )
    if recipe.edit == "after":
        insert_row(d, found[0], [-1, 1, recipe.module, list(recipe.args)])
    else:
        for index in found[-recipe.count :]:
            source_row, repeats, _module, args = backbone[index]
            backbone[index] = [
                source_row,
                repeats,
                recipe.module,
                upstream_to_ours(recipe.module, list(args), KERNEL_SIZE),
            ]


def insert_row(d: dict[str, Any], after: int, row: list) -> None:
    """Insert ``row`` into the backbone after row ``after``; the new row's output replaces ``after``'s.

    Every later ``from`` index is renumbered: absolute references to ``after`` now name the new row,
    references past it move by one; relative ones (``-1``) are kept where they still point to the
    same layer (``-1`` right after the new row reads the new row).
    """
    rows = d["backbone"] + d["head"]
    n_backbone = len(d["backbone"])

    def moved(target: int) -> int:  # old absolute index -> new absolute index
        return target + 1 if target >= after else target

    def renumber(f: int, old_index: int) -> int:
        if old_index <= after:  # rows before the new one are unchanged
            return f
        if f >= 0:
            return moved(f)
        return moved(old_index + f) - (old_index + 1)  # relative to the row's new index

    new_rows: list[list] = []
    for old_index, (source, repeats, module, args) in enumerate(rows):
        sources = [renumber(f, old_index) for f in source] if isinstance(source, list) else renumber(source, old_index)
        new_rows.append([sources, repeats, module, args])
    new_rows.insert(after + 1, row)
    d["backbone"], d["head"] = new_rows[: n_backbone + 1], new_rows[n_backbone + 1 :]
