"""How a large depthwise kernel is decomposed into a small kernel plus a dilated one.

Both LKA and LSKA replace a ``K x K`` depthwise kernel by

* a dense ``a x a`` kernel with ``a = 2d - 1`` (padding ``d - 1``), followed by
* an ``m x m`` kernel with dilation ``d`` (padding ``d * (m - 1) / 2``),

whose cascade sees a window of ``(2d - 1) + d * (m - 1)`` pixels: the receptive field.
LSKA additionally splits each of the two kernels into ``1 x n`` and ``n x 1``.

The LSKA rule (any odd ``k >= 3``, receptive field exactly ``k``)
-----------------------------------------------------------------
``k = (2d - 1) + d (m - 1)`` gives ``m = (k + 1) / d - 1``. ``m`` must be an odd integer
(so the dilated kernel is centred), which holds exactly when ``2d`` divides ``k + 1``.
``d = 1`` always qualifies, so every odd ``k`` has at least one exact decomposition.
When no dilation is given we take, among the exact ones, the ``d`` with the fewest weights
per channel (``a + m``), ties going to the smaller dilation (denser sampling). This single rule
reproduces the published table (7 -> d2, 11 -> d2, 23/35/41/53 -> d3) and extends it to any size.

The LKA rule (VAN)
------------------
VAN names the nominal size ``K`` and takes ``m`` as the smallest odd size whose receptive field
covers ``K``: K=21, d=3 gives 5x5 + 7x7 dilation 3, receptive field 23. Without a given dilation,
LKA uses the LSKA rule's dilation where it is larger than 1 (so LKA and LSKA of the same ``k``
share ``a``, ``m`` and ``d``, as in the LSKA paper's comparison) and VAN's ``d = 3`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = ["Decomposition", "check_kernel_size", "lka_decomposition", "lska_decomposition"]

# VAN's dilation; used by LKA where the exact separable rule only allows d = 1.
VAN_DILATION = 3


@dataclass(frozen=True)
class Decomposition:
    """Sizes of a two-stage (dense, then dilated) depthwise decomposition."""

    kernel_size: int  # the size asked for
    dilation: int  # d
    dense_size: int  # a = 2d - 1
    dilated_size: int  # m

    @property
    def dense_padding(self) -> int:
        return (self.dense_size - 1) // 2

    @property
    def dilated_padding(self) -> int:
        return self.dilation * (self.dilated_size - 1) // 2

    @property
    def receptive_field(self) -> int:
        """Side of the window the cascade sees: (2d - 1) + d (m - 1)."""
        return self.dense_size + self.dilation * (self.dilated_size - 1)


def check_kernel_size(kernel_size: int, module: str) -> None:
    """Raise ``ValueError`` unless ``kernel_size`` is an odd integer >= 3."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(f"{module}: kernel_size must be an int, got {type(kernel_size).__name__} {kernel_size!r}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ConfigurationError(
            f"{module}: kernel_size must be an odd integer >= 3 (so the kernel has a centre pixel), got {kernel_size}"
        )


def _check_dilation(dilation: int, module: str) -> None:
    if isinstance(dilation, bool) or not isinstance(dilation, int):
        raise TypeError(f"{module}: dilation must be an int or None, got {type(dilation).__name__} {dilation!r}")
    if dilation < 1:
        raise ConfigurationError(f"{module}: dilation must be >= 1, got {dilation}")


def exact_dilations(kernel_size: int) -> list[int]:
    """All dilations ``d`` for which a separable cascade has receptive field exactly ``kernel_size``."""
    return [d for d in range(1, (kernel_size + 1) // 2 + 1) if (kernel_size + 1) % (2 * d) == 0]


def lska_decomposition(kernel_size: int, dilation: int | None = None) -> Decomposition:
    """LSKA's decomposition of an odd ``kernel_size``; receptive field exactly ``kernel_size``.

    Args:
        kernel_size: odd size >= 3 of the kernel to emulate.
        dilation: ``None`` picks the ``d`` with the fewest weights (ties: smaller ``d``);
            a given ``d`` is used if it gives an exact decomposition, else ``ValueError``.
    """
    check_kernel_size(kernel_size, "LSKA")
    valid = exact_dilations(kernel_size)
    if dilation is None:
        # fewest weights a + m = (2d - 1) + ((k + 1) / d - 1); min() keeps the first (smaller d) on ties
        dilation = min(valid, key=lambda d: (2 * d - 1) + ((kernel_size + 1) // d - 1))
    else:
        _check_dilation(dilation, "LSKA")
        if dilation not in valid:
            raise ConfigurationError(
                f"LSKA: dilation {dilation} cannot give a receptive field of exactly {kernel_size}: "
                f"(2d-1) + d*(m-1) = {kernel_size} needs an odd m, i.e. 2d must divide kernel_size+1 = "
                f"{kernel_size + 1}. Valid dilations for kernel_size {kernel_size}: {valid}"
            )
    return Decomposition(kernel_size, dilation, 2 * dilation - 1, (kernel_size + 1) // dilation - 1)


def lka_default_dilation(kernel_size: int) -> int:
    """LKA's dilation when none is given: the LSKA rule's where it exceeds 1, else VAN's 3.

    (Capped so the dense ``2d - 1`` kernel fits in ``kernel_size``, for kernel sizes 3 and 5.)
    """
    separable = lska_decomposition(kernel_size).dilation
    return separable if separable > 1 else min(VAN_DILATION, (kernel_size + 1) // 2)


def lka_decomposition(kernel_size: int, dilation: int | None = None) -> Decomposition:
    """VAN's decomposition: dense ``(2d-1)^2`` kernel, then the smallest odd dilated ``m`` covering ``kernel_size``.

    Args:
        kernel_size: odd nominal size >= 3 (VAN's ``K``; 21 by default in VAN).
        dilation: ``None`` uses :func:`lka_default_dilation`; a given ``d`` must keep the dense
            kernel ``2d - 1`` no larger than ``kernel_size``.
    """
    check_kernel_size(kernel_size, "LKA")
    if dilation is None:
        dilation = lka_default_dilation(kernel_size)
    _check_dilation(dilation, "LKA")
    dense = 2 * dilation - 1
    if dense > kernel_size:
        raise ConfigurationError(
            f"LKA: dilation {dilation} needs a dense {dense}x{dense} first kernel, larger than "
            f"kernel_size {kernel_size}; use a dilation <= {(kernel_size + 1) // 2}"
        )
    # smallest m with dense + d (m - 1) >= K, rounded up to odd so the dilated kernel is centred
    dilated = 1 + math.ceil((kernel_size - dense) / dilation)
    if dilated % 2 == 0:
        dilated += 1
    return Decomposition(kernel_size, dilation, dense, dilated)
