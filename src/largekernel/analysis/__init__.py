"""Analysis: parameters, FLOPs, latency, memory and effective receptive fields.

Names are imported on first use, so ``largekernel.analysis.defaults`` (what the CLI's help reads)
does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "count_macs": ".complexity",
    "count_parameters": ".complexity",
    "ERFResult": ".erf",
    "area_ratios": ".erf",
    "effective_receptive_field": ".erf",
    "ModelProfile": ".profile",
    "profile_model": ".profile",
    "profile_models": ".profile",
    "profile_scaling": ".profile",
}

__all__ = [
    "ERFResult",
    "ModelProfile",
    "area_ratios",
    "count_macs",
    "count_parameters",
    "effective_receptive_field",
    "profile_model",
    "profile_models",
    "profile_scaling",
]

if TYPE_CHECKING:
    from .complexity import count_macs, count_parameters
    from .erf import ERFResult, area_ratios, effective_receptive_field
    from .profile import ModelProfile, profile_model, profile_models, profile_scaling


__getattr__ = lazy_getattr(globals(), _EXPORTS)
