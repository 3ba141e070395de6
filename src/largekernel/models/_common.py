"""What the model families share: argument checks, weight init, the released key layout, and
:class:`PyramidBackbone`, the timm surface of our four-stage backbones (VAN, SMT)."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigurationError
from ._features import StageInfo, take_indices

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PyramidBackbone",
    "check_common_args",
    "check_stage_lists",
    "checkpoint_block",
    "from_released_layout",
    "init_weights",
    "to_released_layout",
]

_POOLS = ("avg", "max", "avgmax", "")


def check_stage_lists(model: str, **lists: Any) -> int:
    """Check that every per-stage list has the same length; return that length (number of stages)."""
    lengths = {}
    for name, values in lists.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"{model}: {name} must be a list with one entry per stage, got {values!r}")
        lengths[name] = len(values)
    if len(set(lengths.values())) != 1:
        described = ", ".join(f"{name} has {n} ({list(lists[name])})" for name, n in lengths.items())
        raise ConfigurationError(f"{model}: per-stage settings must all have one entry per stage, but {described}")
    num_stages = next(iter(lengths.values()))
    if num_stages < 1:
        raise ConfigurationError(f"{model}: need at least one stage, got empty per-stage lists")
    for name in ("embed_dims", "depths"):
        if name in lists:
            for value in lists[name]:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigurationError(f"{model}: {name} must be positive ints, got {list(lists[name])}")
    if "mlp_ratios" in lists:
        for value in lists["mlp_ratios"]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(
                    f"{model}: mlp_ratios must be positive numbers, got {list(lists['mlp_ratios'])}"
                )
    return num_stages


def check_common_args(model: str, num_classes: Any, in_chans: Any, drop_path_rate: Any, global_pool: Any) -> None:
    """The arguments every backbone takes, checked the same way."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigurationError(f"{model}: num_classes must be an int >= 0, got {num_classes!r}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigurationError(f"{model}: in_chans must be an int >= 1, got {in_chans!r}")
    if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) or not 0 <= drop_path_rate < 1:
        raise ConfigurationError(f"{model}: drop_path_rate must be a number in [0, 1), got {drop_path_rate!r}")
    if global_pool not in _POOLS:
        raise ConfigurationError(f"{model}: global_pool must be one of {list(_POOLS)}, got {global_pool!r}")


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


# -- the released key layout (patch_embed1 / block1 / norm1) <-> ours (stages.0.downsample / blocks / norm)
_RELEASED = re.compile(r"(patch_embed|block|norm)(\d+)\.(.+)")
_OURS = re.compile(r"stages\.(\d+)\.(downsample|blocks|norm)\.(.+)")
_TO_OURS = {"patch_embed": "downsample", "block": "blocks", "norm": "norm"}
_TO_RELEASED = {ours: released for released, ours in _TO_OURS.items()}


def from_released_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference repos' keys (``patch_embed1.*``, ``block1.0.*``, ``norm1.*``) -> ours (``stages.0.*``)."""
    out = {}
    for key, value in state_dict.items():
        match = _RELEASED.fullmatch(key)
        out[f"stages.{int(match[2]) - 1}.{_TO_OURS[match[1]]}.{match[3]}" if match else key] = value
    return out


def to_released_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the reference repos' (what their code and the published key lists use)."""
    out = {}
    for key, value in state_dict.items():
        match = _OURS.fullmatch(key)
        out[f"{_TO_RELEASED[match[2]]}{int(match[1]) + 1}.{match[3]}" if match else key] = value
    return out


def _remap_on_load(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    # load_state_dict pre-hook: plain model.load_state_dict(released or foreign layout) works,
    # which is what timm.create_model(..., checkpoint_path=...) calls
    keys = [k for k in state_dict if k.startswith(prefix)]
    local = {k[len(prefix) :]: state_dict[k] for k in keys}
    if not local or all(k.startswith(("stages.", "head.")) for k in local):
        return
    mapped = module.checkpoint_filter(local)  # type: ignore[operator]  # untyped nn.Module attribute
    for key in keys:
        del state_dict[key]
    state_dict.update({prefix + k: v for k, v in mapped.items()})


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


def _take_indices_scripted(num_stages: int, indices: int | list[int] | None, output_fmt: str) -> tuple[list[int], int]:
    # TorchScript's form of take_indices (same indices for valid input); eager mode uses take_indices,
    # whose messages need Python (repr, type names)
    if output_fmt != "NCHW" and output_fmt != "NHWC":
        raise ValueError("forward_intermediates: output_fmt must be 'NCHW' or 'NHWC', got " + output_fmt)
    if indices is None:
        return list(range(num_stages)), num_stages - 1
    if isinstance(indices, int):
        if indices < 1 or indices > num_stages:
            raise ValueError(f"forward_intermediates: last-n indices={indices} is out of range (1 to {num_stages})")
        return list(range(num_stages - indices, num_stages)), num_stages - 1
    taken: list[int] = []
    for index in indices:
        if index < -num_stages or index >= num_stages or index % num_stages in taken:
            raise ValueError(
                f"forward_intermediates: indices must be distinct stage indices in [0, {num_stages - 1}] "
                "(or negative from the end)"
            )
        taken.append(index % num_stages)
    if len(taken) == 0:
        raise ValueError("forward_intermediates: indices must be non-empty")
    return taken, max(taken)


def _pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "avg":
        return x.mean(dim=(2, 3))
    if kind == "max":
        return x.amax(dim=(2, 3))
    if kind == "avgmax":
        return 0.5 * (x.mean(dim=(2, 3)) + x.amax(dim=(2, 3)))
    return x


class PyramidBackbone(nn.Module):
    """The timm surface shared by our four-stage backbones (VAN, SMT).

    A subclass builds ``self.stages`` (an ``nn.ModuleList`` of stages, each NCHW in, its
    normalised NCHW map out, with a ``grad_checkpointing`` flag) and calls :meth:`_finish`.
    Everything else (classifier, pooling, grad checkpointing, ``forward_intermediates``,
    pruning, parameter groups, checkpoint key mapping) lives here once.

    ``torch.jit.script`` and ``torch.fx.symbolic_trace`` work on the models and on their
    ``features_only`` wrappers (timm's ``FeatureGetterNet``); both compile the plain PyTorch path
    (grad checkpointing and the fast kernels are eager-mode features).
    """

    if TYPE_CHECKING:  # declared for the type checker only: a class annotation would break torch.jit
        stages: nn.ModuleList

    def _finish(
        self, embed_dims: Sequence[int], num_classes: int, in_chans: int, global_pool: str, first_conv: str
    ) -> None:
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.feature_info = StageInfo(
            {"num_chs": dim, "reduction": 4 * 2**i, "module": f"stages.{i}", "index": i, "stage": i}
            for i, dim in enumerate(embed_dims)
        )
        self.first_conv = first_conv
        self.grad_checkpointing = False
        # keys a full checkpoint has that a pruned model (features_only) intentionally lacks
        self.pruned_checkpoint_prefixes: tuple[str, ...] = ()
        self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        self.register_load_state_dict_pre_hook(_remap_on_load)

    # -- timm's training hooks ------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups by depth (timm's layer-wise lr decay): stem, then each block, then norms."""
        return {
            "stem": r"^stages\.0\.downsample",
            "blocks": r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.norm", (99999,)),
            ],
        }

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names excluded from weight decay besides timm's rule (1-d tensors: biases, norms, layer scales)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable  # type: ignore[assignment]  # a plain bool attribute of our stages

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it); optionally the pooling."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigurationError(f"{type(self).__name__}: num_classes must be an int >= 0, got {num_classes!r}")
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ConfigurationError(
                    f"{type(self).__name__}: global_pool must be one of {list(_POOLS)}, got {global_pool!r}"
                )
            self.global_pool = global_pool
        if num_classes > 0 and not self.global_pool:
            raise ConfigurationError(
                f"{type(self).__name__}: a classifier needs pooled features; global_pool='' allows num_classes=0 only"
            )
        self.num_classes = num_classes
        reference = next(self.parameters())
        self.head = (
            nn.Linear(self.num_features, num_classes, device=reference.device, dtype=reference.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        self.head.apply(init_weights)

    # -- forward --------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, C_last, H/32, W/32)``: the last stage's normalised map."""
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pooling then the classifier; ``pre_logits=True`` stops after the pooling."""
        x = _pool(x, self.global_pool)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the stage maps at ``indices`` and the final features.

        Args:
            indices: ``None`` all stages, an int the last n, a list (or tuple, outside TorchScript)
                the given ones (negative from the end).
            norm: accepted for timm's API; every stage map here is already normalised (each stage ends
                in its own LayerNorm), so it changes nothing.
            stop_early: stop after the last requested stage (the "final" map is then that stage's).
            output_fmt: ``'NCHW'`` or ``'NHWC'``.
            intermediates_only: return only the list.

        Returns:
            ``(final, intermediates)``, or the list alone with ``intermediates_only``.
        """
        if torch.jit.is_scripting():
            take, max_index = _take_indices_scripted(len(self.stages), indices, output_fmt)
        else:  # the eager checks, with messages TorchScript cannot compile (kept out of this body)
            take, max_index = self._intermediate_indices(indices, output_fmt)
        last = max_index if stop_early or intermediates_only else len(self.stages) - 1
        intermediates: list[torch.Tensor] = []
        # stages after ``last`` are skipped, not sliced off: TorchScript cannot slice a ModuleList at run time
        for i, stage in enumerate(self.stages):
            if i <= last:
                x = stage(x)
                if i in take:
                    intermediates.append(x.permute(0, 2, 3, 1) if output_fmt == "NHWC" else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.unused
    def _intermediate_indices(self, indices: int | list[int] | None, output_fmt: str) -> tuple[list[int], int]:
        if output_fmt not in ("NCHW", "NHWC"):
            raise ConfigurationError(f"{type(self).__name__}: output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        return take_indices(len(self.stages), indices, type(self).__name__)

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the classifier); return the kept indices."""
        num_stages = len(self.stages)
        take, max_index = take_indices(num_stages, indices, type(self).__name__)
        self.stages = self.stages[: max_index + 1]
        pruned = [f"stages.{i}." for i in range(max_index + 1, num_stages)]
        if max_index < num_stages - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < num_stages - 1:
            self.reset_classifier(0, "")
            pruned.append("head.")
        self.pruned_checkpoint_prefixes = (*self.pruned_checkpoint_prefixes, *pruned)
        return take

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """``state_dict()`` in the reference repos' key layout (``patch_embed1``, ``block1.0``, ``norm1``)."""
        return to_released_layout(self.state_dict())
