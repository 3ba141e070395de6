"""Analysis: parameters, FLOPs, latency, memory and effective receptive fields."""

from .complexity import count_macs, count_parameters
from .erf import ERFResult, area_ratios, effective_receptive_field
from .profile import ModelProfile, profile_model, profile_models, profile_scaling

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
