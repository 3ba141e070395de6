"""Reusable attention layers; each knows nothing of the models that use it."""

from .attention import ATTENTIONS, SpatialGatingAttention, create_attention
from .decomposition import Decomposition, lka_decomposition, lska_decomposition
from .drop import DropPath, drop_path
from .lka import LKA, LKATrivial
from .lska import LSKA, LSKATrivial
from .mhsa import MSA
from .sam import SAM

__all__ = [
    "ATTENTIONS",
    "LKA",
    "LSKA",
    "MSA",
    "SAM",
    "Decomposition",
    "DropPath",
    "LKATrivial",
    "LSKATrivial",
    "SpatialGatingAttention",
    "create_attention",
    "drop_path",
    "lka_decomposition",
    "lska_decomposition",
]
