"""Training and evaluation on Lightning: ``largekernel train`` / ``largekernel eval``.

Lightning is imported lazily: ``import largekernel.train`` stays light until training starts.
"""

from .data import EMBEDDED_DATASETS, AugmentConfig, DataSplit, augment_batch, load_data

__all__ = ["EMBEDDED_DATASETS", "AugmentConfig", "DataSplit", "augment_batch", "load_data"]
