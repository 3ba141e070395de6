"""The errors a user can act on.

Everything the package raises for bad input (an argument, a file, a dataset) derives from
:class:`LargeKernelError`; the ``largekernel`` command prints those as one line and exits 2, and
shows a traceback for anything else (a bug). Each also derives from the built-in type that fits
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "CheckpointMismatchError", "ConfigurationError", "DataError", "LargeKernelError"]


class LargeKernelError(Exception):
    """Base of the errors that report bad input rather than a bug."""


class ConfigurationError(LargeKernelError, ValueError):
    """An argument, option or model configuration that cannot be used (named in the message)."""


class CheckpointError(LargeKernelError, ValueError):
    """A checkpoint file that cannot be read, or whose contents do not fit the model."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose keys or shapes do not fit the model (the differences are listed)."""


class DataError(LargeKernelError, ValueError):
    """A dataset, image or label file that cannot be used (the file is named in the message)."""
