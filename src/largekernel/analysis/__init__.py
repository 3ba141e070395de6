"""Analysis: parameters, FLOPs, latency, memory and effective receptive fields."""

from .complexity import count_macs, count_parameters

__all__ = ["count_macs", "count_parameters"]
