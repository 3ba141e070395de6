"""Fused Triton kernels for the depthwise cascades of LSKA and LKA, forward and backward.

The cascade is a chain of up to four "same"-padded depthwise convolutions, each with its own
``KH x KW`` kernel, dilation and bias (LSKA: ``1xa -> ax1 -> 1xm(d) -> mx1(d)``; LKA:
``axa -> mxm(d)``). Each stage's output is zero outside the image, exactly as a chain of
``nn.Conv2d`` with zero padding.

Design (memory traffic is what matters: these convolutions do a few FMAs per byte)
-------------------------------------------------------------------------------
* One unit of work = one (batch, channel, spatial tile). A tile is a power-of-two block
  ``SH x SW``; when a side of the image fits in 64 pixels the block covers the whole side (no
  halo: outside the image is zero anyway; VAN's 56/28/14/7 maps are one block per plane), else
  the side is tiled with a halo equal to the cascade's total radius so the interior is exact
  (64-pixel blocks, 128 where the halo leaves a 64-block less than 16 pixels; the halo is
  recomputed, e.g. 2.3x the work for an 80x80 map at k=23). Every stage is computed over the
  whole block; wrong values near block edges (reads clipped to the block) spread at most one
  stage radius per stage, so they never reach the interior.
* Stages exchange data through a per-program scratch slot (fp32): buffers of the block plus a
  zero border as wide as the largest single-stage reach, written and read back by the same
  program between ``tl.debug_barrier()``s. Triton exposes no shared-memory indexing, so shifted
  reads of an intermediate go through this slot, which stays in L1/L2. Thanks to the zero
  border every tap is an unmasked load at a compile-time offset (taps unrolled): per tap and
  element one load and one FMA, no index or mask arithmetic. The border is zeroed once per
  program; the grid is persistent (a few programs per SM looping over work items) so the
  scratch working set is ``programs x buffers x slot x 4`` bytes, not the tensor size.
* Register budget (compiled for sm_90 without a GPU, ``cuobjdump -res-usage``, 64x64 blocks,
  16 warps): 64-84 registers, no or tiny spills (a first version with masked loads needed
  118-128 registers plus ~10 integer operations per tap and element). None of this has been
  timed on a GPU yet: block sizes and the persistent grid are untuned starting points.
* Forward: reads ``x`` once, writes the cascade output once (eager PyTorch: 4 reads + 4 writes
  for LSKA, 2 + 2 for LKA). All arithmetic in fp32 (fp64 for fp64 inputs).
* Backward: one kernel recomputes the forward intermediates of its tile in scratch, then walks
  the cascade backwards: stage ``s`` weight and bias gradients are block reductions of
  ``grad_out_s * shifted(input_s)`` over the tile's owned pixels (written as per-tile partials,
  summed on the host side in a deterministic second stage); ``grad_in_s`` is the transposed
  convolution (flipped kernel). Reads ``x`` and ``grad_out`` once, writes ``grad_x`` once
  (eager: 16 tensor passes for LSKA's four convolutions plus the saved intermediates).
* Any strides work (NCHW, channels_last, non-contiguous gradients): loads and stores use the
  tensor's strides; outputs keep the input's memory format. channels_last planes are strided
  by ``C`` in memory; work items run channel-fastest so neighbouring programs share those
  sectors through L2.

Nothing here is imported by ``largekernel`` unless the fused path is used: importing this module
imports triton.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .ops import plain_cascade

__all__ = ["depthwise_cascade", "fused_backward", "fused_forward", "lka_cascade", "lska_cascade", "plain_cascade"]

MAX_STAGES = 4
# A side up to this many pixels is covered by one block (no halo); longer sides are tiled.
_WHOLE_SIDE_MAX = 64
# Block sides tried for tiled axes, smallest first; the first leaving an interior >= _MIN_TILE wins.
_TILED_BLOCKS: tuple[int, ...] = (64, 128)
_MIN_TILE = 16


# ----------------------------------------------------------------------------------------------
# device functions
# ----------------------------------------------------------------------------------------------


@triton.jit
def _conv(
    buf,
    pos,
    gr,
    gc,
    H,
    W,
    w_ptr,
    bias,
    KH: tl.constexpr,
    KW: tl.constexpr,
    D: tl.constexpr,
    FLIP: tl.constexpr,
    PW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
):
    """One depthwise conv (cross-correlation, or convolution with FLIP) over the block, zero outside the image.

    ``buf + pos`` addresses the block inside a zero-bordered scratch buffer of row stride ``PW``,
    so every tap is an unmasked load at a compile-time offset: no index or mask arithmetic.
    Taps reaching a whole block side or further only ever read zeros and are skipped.
    """
    acc = tl.zeros_like((gr + gc).to(buf.dtype.element_ty)) + bias
    ptrs = buf + pos
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            off_r = D * i - D * (KH - 1) // 2  # constexpr (static loop)
            off_c = D * j - D * (KW - 1) // 2
            if off_r < SH and -off_r < SH and off_c < SW and -off_c < SW:
                if FLIP:
                    wv = tl.load(w_ptr + (KH - 1 - i) * KW + (KW - 1 - j))
                else:
                    wv = tl.load(w_ptr + i * KW + j)
                acc += wv * tl.load(ptrs + (off_r * PW + off_c))
    inside = (gr >= 0) & (gr < H) & (gc >= 0) & (gc < W)
    return tl.where(inside, acc, 0.0)


@triton.jit
def _weight_grad(
    g_owned,
    buf,
    pos,
    part_ptr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    D: tl.constexpr,
    PW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
):
    """part[i*KW+j] = sum over the block of g_owned * (stage input shifted by tap (i, j))."""
    ptrs = buf + pos
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            off_r = D * i - D * (KH - 1) // 2  # constexpr (static loop)
            off_c = D * j - D * (KW - 1) // 2
            if off_r < SH and -off_r < SH and off_c < SW and -off_c < SW:
                v = tl.load(ptrs + (off_r * PW + off_c))
                tl.store(part_ptr + i * KW + j, tl.sum(tl.sum(g_owned * v, axis=1), axis=0))
            else:  # this tap only ever sees zero padding
                tl.store(part_ptr + i * KW + j, 0.0)


@triton.jit
def _zero_slot(slot, numel, ZB: tl.constexpr):
    """Zero a program's scratch slot once: the borders are never written again and serve as padding."""
    offs = tl.arange(0, ZB)
    for start in range(0, numel, ZB):
        tl.store(slot + start + offs, tl.zeros([ZB], dtype=slot.dtype.element_ty), mask=start + offs < numel)
    tl.debug_barrier()


@triton.jit
def _item_coords(item, C, tiles_w, n_tiles, tile_h, tile_w, halo_h, halo_w, SH: tl.constexpr, SW: tl.constexpr):
    plane = item // n_tiles
    t = item % n_tiles
    b = plane // C
    c = plane % C
    own_r0 = (t // tiles_w) * tile_h  # first row / column this item writes
    own_c0 = (t % tiles_w) * tile_w
    gr = own_r0 - halo_h + tl.arange(0, SH)[:, None]  # image coordinates of the block
    gc = own_c0 - halo_w + tl.arange(0, SW)[None, :]
    return b, c, gr, gc, own_r0, own_c0


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _cascade_fwd_kernel(
    x_ptr,
    out_ptr,
    w_ptr,
    b_ptr,
    scratch_ptr,
    C,
    H,
    W,
    n_items,
    tiles_w,
    n_tiles,
    tile_h,
    tile_w,
    halo_h,
    halo_w,
    sxb,
    sxc,
    sxh,
    sxw,
    sob,
    soc,
    soh,
    sow,
    NST: tl.constexpr,
    WT: tl.constexpr,
    K0H: tl.constexpr,
    K0W: tl.constexpr,
    D0: tl.constexpr,
    WO0: tl.constexpr,
    K1H: tl.constexpr,
    K1W: tl.constexpr,
    D1: tl.constexpr,
    WO1: tl.constexpr,
    K2H: tl.constexpr,
    K2W: tl.constexpr,
    D2: tl.constexpr,
    WO2: tl.constexpr,
    K3H: tl.constexpr,
    K3W: tl.constexpr,
    D3: tl.constexpr,
    WO3: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PADH: tl.constexpr,
    PADW: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    PW: tl.constexpr = SW + 2 * PADW
    SLOT: tl.constexpr = (SH + 2 * PADH) * PW  # one zero-bordered buffer
    buf0 = scratch_ptr + pid.to(tl.int64) * (2 * SLOT)
    buf1 = buf0 + SLOT
    _zero_slot(buf0, 2 * SLOT, 1024)
    pos = (tl.arange(0, SH)[:, None] + PADH) * PW + (tl.arange(0, SW)[None, :] + PADW)
    for item in range(pid, n_items, nprog):
        b, c, gr, gc, own_r0, own_c0 = _item_coords(item, C, tiles_w, n_tiles, tile_h, tile_w, halo_h, halo_w, SH, SW)
        inside = (gr >= 0) & (gr < H) & (gc >= 0) & (gc < W)
        x_plane = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
        wc = w_ptr + c * WT
        bc = b_ptr + c * NST
        # ping-pong: stage s reads buffer s % 2 and its output goes to the other one
        tl.store(buf0 + pos, tl.load(x_plane + gr * sxh + gc * sxw, mask=inside, other=0.0).to(buf0.dtype.element_ty))
        tl.debug_barrier()
        acc = _conv(buf0, pos, gr, gc, H, W, wc + WO0, tl.load(bc), K0H, K0W, D0, False, PW, SH, SW)
        if NST > 1:
            tl.store(buf1 + pos, acc)
            tl.debug_barrier()
            acc = _conv(buf1, pos, gr, gc, H, W, wc + WO1, tl.load(bc + 1), K1H, K1W, D1, False, PW, SH, SW)
        if NST > 2:
            tl.store(buf0 + pos, acc)
            tl.debug_barrier()
            acc = _conv(buf0, pos, gr, gc, H, W, wc + WO2, tl.load(bc + 2), K2H, K2W, D2, False, PW, SH, SW)
        if NST > 3:
            tl.store(buf1 + pos, acc)
            tl.debug_barrier()
            acc = _conv(buf1, pos, gr, gc, H, W, wc + WO3, tl.load(bc + 3), K3H, K3W, D3, False, PW, SH, SW)
        own = (gr >= own_r0) & (gr < own_r0 + tile_h) & (gc >= own_c0) & (gc < own_c0 + tile_w) & inside
        o_plane = out_ptr + b.to(tl.int64) * sob + c.to(tl.int64) * soc
        tl.store(o_plane + gr * soh + gc * sow, acc.to(out_ptr.dtype.element_ty), mask=own)
        tl.debug_barrier()  # the next item overwrites the scratch slot


@triton.jit
def _bwd_stage(
    s: tl.constexpr,
    g,
    own,
    slot,
    gbuf,
    pos,
    gr,
    gc,
    H,
    W,
    w_stage,
    wpart,
    bpart,
    KH: tl.constexpr,
    KW: tl.constexpr,
    D: tl.constexpr,
    PW: tl.constexpr,
    SLOT: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
):
    """Gradients of stage ``s`` given ``g`` = d loss / d output_s over the block; returns d loss / d input_s."""
    g_owned = tl.where(own, g, 0.0)
    tl.store(bpart + s, tl.sum(tl.sum(g_owned, axis=1), axis=0))
    _weight_grad(g_owned, slot + s * SLOT, pos, wpart, KH, KW, D, PW, SH, SW)  # buffer s holds stage s's input
    tl.store(gbuf + pos, g)
    tl.debug_barrier()
    return _conv(gbuf, pos, gr, gc, H, W, w_stage, 0.0, KH, KW, D, True, PW, SH, SW)


@triton.jit
def _cascade_bwd_kernel(
    x_ptr,
    gy_ptr,
    gx_ptr,
    w_ptr,
    b_ptr,
    scratch_ptr,
    wpart_ptr,
    bpart_ptr,
    C,
    H,
    W,
    n_items,
    tiles_w,
    n_tiles,
    tile_h,
    tile_w,
    halo_h,
    halo_w,
    sxb,
    sxc,
    sxh,
    sxw,
    sgb,
    sgc,
    sgh,
    sgw,
    sdb,
    sdc,
    sdh,
    sdw,
    NST: tl.constexpr,
    WT: tl.constexpr,
    K0H: tl.constexpr,
    K0W: tl.constexpr,
    D0: tl.constexpr,
    WO0: tl.constexpr,
    K1H: tl.constexpr,
    K1W: tl.constexpr,
    D1: tl.constexpr,
    WO1: tl.constexpr,
    K2H: tl.constexpr,
    K2W: tl.constexpr,
    D2: tl.constexpr,
    WO2: tl.constexpr,
    K3H: tl.constexpr,
    K3W: tl.constexpr,
    D3: tl.constexpr,
    WO3: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PADH: tl.constexpr,
    PADW: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    PW: tl.constexpr = SW + 2 * PADW
    SLOT: tl.constexpr = (SH + 2 * PADH) * PW
    # scratch slot: buffer s = input of stage s (x, then the forward intermediates), then two
    # gradient buffers used alternately
    slot = scratch_ptr + pid.to(tl.int64) * ((NST + 2) * SLOT)
    gbuf0 = slot + NST * SLOT
    gbuf1 = gbuf0 + SLOT
    _zero_slot(slot, (NST + 2) * SLOT, 1024)
    pos = (tl.arange(0, SH)[:, None] + PADH) * PW + (tl.arange(0, SW)[None, :] + PADW)
    for item in range(pid, n_items, nprog):
        b, c, gr, gc, own_r0, own_c0 = _item_coords(item, C, tiles_w, n_tiles, tile_h, tile_w, halo_h, halo_w, SH, SW)
        inside = (gr >= 0) & (gr < H) & (gc >= 0) & (gc < W)
        own = (gr >= own_r0) & (gr < own_r0 + tile_h) & (gc >= own_c0) & (gc < own_c0 + tile_w) & inside
        x_plane = x_ptr + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
        gy_plane = gy_ptr + b.to(tl.int64) * sgb + c.to(tl.int64) * sgc
        wc = w_ptr + c * WT
        bc = b_ptr + c * NST
        wpart = wpart_ptr + item * WT
        bpart = bpart_ptr + item * NST
        # recompute the stage inputs into buffers 0..NST-1
        tl.store(slot + pos, tl.load(x_plane + gr * sxh + gc * sxw, mask=inside, other=0.0).to(slot.dtype.element_ty))
        tl.debug_barrier()
        if NST > 1:
            h = _conv(slot, pos, gr, gc, H, W, wc + WO0, tl.load(bc), K0H, K0W, D0, False, PW, SH, SW)
            tl.store(slot + SLOT + pos, h)
            tl.debug_barrier()
        if NST > 2:
            h = _conv(slot + SLOT, pos, gr, gc, H, W, wc + WO1, tl.load(bc + 1), K1H, K1W, D1, False, PW, SH, SW)
            tl.store(slot + 2 * SLOT + pos, h)
            tl.debug_barrier()
        if NST > 3:
            h = _conv(slot + 2 * SLOT, pos, gr, gc, H, W, wc + WO2, tl.load(bc + 2), K2H, K2W, D2, False, PW, SH, SW)
            tl.store(slot + 3 * SLOT + pos, h)
            tl.debug_barrier()
        # walk back from the last stage; g = d loss / d (output of the current stage)
        g = tl.load(gy_plane + gr * sgh + gc * sgw, mask=inside, other=0.0).to(slot.dtype.element_ty)
        if NST > 3:
            g = _bwd_stage(
                3, g, own, slot, gbuf1, pos, gr, gc, H, W, wc + WO3, wpart + WO3, bpart, K3H, K3W, D3, PW, SLOT, SH, SW
            )
        if NST > 2:
            g = _bwd_stage(
                2, g, own, slot, gbuf0, pos, gr, gc, H, W, wc + WO2, wpart + WO2, bpart, K2H, K2W, D2, PW, SLOT, SH, SW
            )
        if NST > 1:
            g = _bwd_stage(
                1, g, own, slot, gbuf1, pos, gr, gc, H, W, wc + WO1, wpart + WO1, bpart, K1H, K1W, D1, PW, SLOT, SH, SW
            )
        g = _bwd_stage(
            0, g, own, slot, gbuf0, pos, gr, gc, H, W, wc + WO0, wpart + WO0, bpart, K0H, K0W, D0, PW, SLOT, SH, SW
        )
        gx_plane = gx_ptr + b.to(tl.int64) * sdb + c.to(tl.int64) * sdc
        tl.store(gx_plane + gr * sdh + gc * sdw, g.to(gx_ptr.dtype.element_ty), mask=own)
        tl.debug_barrier()  # the next item overwrites the scratch slot


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _axis_plan(size: int, halo: int) -> tuple[int, int, int, int] | None:
    """(block, tile, tiles, halo) for one image axis, or None if the halo leaves no usable interior."""
    if size <= _WHOLE_SIDE_MAX:
        return triton.next_power_of_2(max(size, 1)), size, 1, 0
    for block in _TILED_BLOCKS:
        tile = block - 2 * halo
        if tile >= _MIN_TILE:
            return block, tile, triton.cdiv(size, tile), halo
    return None


def _plan(H: int, W: int, stages: Sequence[tuple[int, int, int]]) -> dict | None:
    halo_h = sum(d * (kh - 1) // 2 for kh, _, d in stages)
    halo_w = sum(d * (kw - 1) // 2 for _, kw, d in stages)
    rows, cols = _axis_plan(H, halo_h), _axis_plan(W, halo_w)
    if rows is None or cols is None:
        return None
    SH, tile_h, tiles_h, halo_h = rows
    SW, tile_w, tiles_w, halo_w = cols
    # zero border of the scratch buffers: the largest single-stage reach along each axis, capped at
    # the block side minus one (the kernels skip taps reaching further: those read only zeros)
    pad_h = min(max(d * (kh - 1) // 2 for kh, _, d in stages), SH - 1)
    pad_w = min(max(d * (kw - 1) // 2 for _, kw, d in stages), SW - 1)
    return {
        "SH": SH,
        "SW": SW,
        "tile_h": tile_h,
        "tile_w": tile_w,
        "tiles_w": tiles_w,
        "n_tiles": tiles_h * tiles_w,
        "halo_h": halo_h,
        "halo_w": halo_w,
        "PADH": pad_h,
        "PADW": pad_w,
        "slot": (SH + 2 * pad_h) * (SW + 2 * pad_w),
    }


def supports(x: torch.Tensor, stages: Sequence[tuple[int, int, int]]) -> bool:
    """Whether the fused kernels handle this input and cascade (else the caller uses the plain path)."""
    return (
        x.dtype in _SUPPORTED_DTYPES
        and x.dim() == 4
        and 1 <= len(stages) <= MAX_STAGES
        and x.numel() > 0
        and _plan(x.shape[2], x.shape[3], stages) is not None
    )


def _stage_constexprs(stages: Sequence[tuple[int, int, int]]) -> dict:
    meta: dict = {"NST": len(stages)}
    offset = 0
    for s in range(MAX_STAGES):
        kh, kw, d = stages[s] if s < len(stages) else (1, 1, 1)
        meta.update({f"K{s}H": kh, f"K{s}W": kw, f"D{s}": d, f"WO{s}": offset})
        if s < len(stages):
            offset += kh * kw
    meta["WT"] = offset
    return meta


def _num_warps(plan: dict) -> int:
    # ~8 block elements per thread: ~120 registers, no spills (64x64 -> 16 warps, 8x8 -> 1)
    return max(1, min(16, plan["SH"] * plan["SW"] // 256))


def _grid_size(n_items: int, device: torch.device, warps_per_sm: int, num_warps: int) -> int:
    """Persistent grid: enough programs for ~``warps_per_sm`` resident warps per SM, no more (scratch ~ grid)."""
    if device.type != "cuda":  # interpreter: a few programs, enough to exercise the persistent loop
        return max(1, min(n_items, 3))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    per_sm = min(32, max(1, warps_per_sm // num_warps))
    return max(1, min(n_items, sms * per_sm))


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _prepare(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], dilations: Sequence[int]
):
    """(stages, plan, constexprs, accumulation dtype, all weights (C, taps), all biases (C, stages))."""
    stages = tuple((w.shape[2], w.shape[3], d) for w, d in zip(weights, dilations))
    C, H, W = x.shape[1:]
    acc = _acc_dtype(x)
    w_all = torch.cat([w.detach().reshape(C, -1) for w in weights], 1).to(acc).contiguous()
    b_all = torch.stack([b.detach() for b in biases], 1).to(acc).contiguous()
    return stages, _plan(H, W, stages), _stage_constexprs(stages), acc, w_all, b_all


def fused_forward(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], dilations: Sequence[int]
) -> torch.Tensor:
    """The cascade's output through the forward kernel (no autograd; arguments as :func:`depthwise_cascade`)."""
    _stages, plan, meta, acc, w_all, b_all = _prepare(x, weights, biases, dilations)
    B, C, H, W = x.shape
    out = torch.empty_like(x)  # keeps x's memory format (NCHW or channels_last)
    n_items = B * C * plan["n_tiles"]
    num_warps = _num_warps(plan)
    grid = _grid_size(n_items, x.device, warps_per_sm=32, num_warps=num_warps)
    scratch = torch.empty(grid * 2 * plan["slot"], device=x.device, dtype=acc)
    _cascade_fwd_kernel[(grid,)](
        x,
        out,
        w_all,
        b_all,
        scratch,
        C,
        H,
        W,
        n_items,
        plan["tiles_w"],
        plan["n_tiles"],
        plan["tile_h"],
        plan["tile_w"],
        plan["halo_h"],
        plan["halo_w"],
        *x.stride(),
        *out.stride(),
        SH=plan["SH"],
        SW=plan["SW"],
        PADH=plan["PADH"],
        PADW=plan["PADW"],
        num_warps=num_warps,
        **meta,
    )
    return out


def fused_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    dilations: Sequence[int],
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(grad_x, weight grads, bias grads) through the backward kernel, which recomputes the intermediates."""
    stages, plan, meta, acc, w_all, b_all = _prepare(x, weights, biases, dilations)
    B, C, H, W = x.shape
    n_items = B * C * plan["n_tiles"]
    num_warps = _num_warps(plan)
    # the backward slot holds NST + 2 buffers: fewer resident programs keep the scratch in L2
    grid = _grid_size(n_items, x.device, warps_per_sm=16, num_warps=num_warps)
    nst = len(stages)
    scratch = torch.empty(grid * (nst + 2) * plan["slot"], device=x.device, dtype=acc)
    wpart = torch.empty(n_items, meta["WT"], device=x.device, dtype=acc)
    bpart = torch.empty(n_items, nst, device=x.device, dtype=acc)
    grad_x = torch.empty_like(x)
    _cascade_bwd_kernel[(grid,)](
        x,
        grad_out,
        grad_x,
        w_all,
        b_all,
        scratch,
        wpart,
        bpart,
        C,
        H,
        W,
        n_items,
        plan["tiles_w"],
        plan["n_tiles"],
        plan["tile_h"],
        plan["tile_w"],
        plan["halo_h"],
        plan["halo_w"],
        *x.stride(),
        *grad_out.stride(),
        *grad_x.stride(),
        SH=plan["SH"],
        SW=plan["SW"],
        PADH=plan["PADH"],
        PADW=plan["PADW"],
        num_warps=num_warps,
        **meta,
    )
    # second stage of the reduction: items are ordered (batch, channel, tile)
    grad_w_all = wpart.view(B, C, plan["n_tiles"], -1).sum((0, 2))
    grad_b_all = bpart.view(B, C, plan["n_tiles"], -1).sum((0, 2))
    grad_ws, grad_bs = [], []
    offset = 0
    for s, (kh, kw, _) in enumerate(stages):
        # separate tensors (clone), not views of one: the op's outputs may not alias each other
        grad_ws.append(grad_w_all[:, offset : offset + kh * kw].reshape(weights[s].shape).to(weights[s].dtype).clone())
        grad_bs.append(grad_b_all[:, s].reshape(biases[s].shape).to(biases[s].dtype).clone())
        offset += kh * kw
    return grad_x, grad_ws, grad_bs


class _DepthwiseCascade(torch.autograd.Function):
    """Chain of same-padded depthwise convolutions; params = (w0, b0, w1, b1, ...), w_s of shape (C, 1, KH, KW)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dilations: tuple[int, ...], *params: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, *params)
        ctx.dilations = dilations
        return fused_forward(x, params[0::2], params[1::2], dilations)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, *params = ctx.saved_tensors
        grad_x, grad_ws, grad_bs = fused_backward(grad_out, x, params[0::2], params[1::2], ctx.dilations)
        grads = [g for pair in zip(grad_ws, grad_bs) for g in pair]
        return (grad_x, None, *grads)


def _check_cascade_args(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], dilations: Sequence[int]
) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(
            f"depthwise_cascade: x must be a 4-D (B, C, H, W) tensor, got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    if x.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"depthwise_cascade: x dtype must be one of {_SUPPORTED_DTYPES}, got {x.dtype}")
    if not (len(weights) == len(biases) == len(dilations)) or not 1 <= len(weights) <= MAX_STAGES:
        raise ValueError(
            f"depthwise_cascade: need 1..{MAX_STAGES} stages with one weight, bias and dilation each, "
            f"got {len(weights)} weights, {len(biases)} biases, {len(dilations)} dilations"
        )
    C = x.shape[1]
    for s, (w, b, d) in enumerate(zip(weights, biases, dilations)):
        if w.dim() != 4 or w.shape[0] != C or w.shape[1] != 1 or w.shape[2] % 2 == 0 or w.shape[3] % 2 == 0:
            raise ValueError(
                f"depthwise_cascade: stage {s} weight must be a depthwise (C={C}, 1, odd, odd) tensor, "
                f"got {tuple(w.shape)}"
            )
        if b.shape != (C,):
            raise ValueError(f"depthwise_cascade: stage {s} bias must have shape ({C},), got {tuple(b.shape)}")
        if w.device != x.device or b.device != x.device:
            raise ValueError(f"depthwise_cascade: stage {s} parameters are on {w.device}, input on {x.device}")
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"depthwise_cascade: stage {s} dilation must be an int >= 1, got {d!r}")
    stages = [(w.shape[2], w.shape[3], d) for w, d in zip(weights, dilations)]
    if _plan(x.shape[2], x.shape[3], stages) is None:
        raise ValueError(
            f"depthwise_cascade: the receptive field is too large to tile an input of "
            f"{x.shape[2]}x{x.shape[3]}; use the plain PyTorch path"
        )


def depthwise_cascade(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], dilations: Sequence[int]
) -> torch.Tensor:
    """Fused chain of same-padded depthwise convolutions (differentiable in x, weights and biases).

    Equal to applying ``F.conv2d(h, w_s, b_s, padding=d_s*(k-1)//2, dilation=d_s, groups=C)`` for
    each stage in turn. Weights have the ``nn.Conv2d`` depthwise shape ``(C, 1, KH, KW)`` with odd
    ``KH``, ``KW``.
    """
    _check_cascade_args(x, weights, biases, dilations)
    params: list[torch.Tensor] = []
    for w, b in zip(weights, biases):
        params += [w, b]
    return _DepthwiseCascade.apply(x, tuple(int(d) for d in dilations), *params)


def lska_cascade(
    x: torch.Tensor,
    w0h: torch.Tensor,
    b0h: torch.Tensor,
    w0v: torch.Tensor,
    b0v: torch.Tensor,
    wsh: torch.Tensor,
    bsh: torch.Tensor,
    wsv: torch.Tensor,
    bsv: torch.Tensor,
    dilation: int,
) -> torch.Tensor:
    """LSKA's depthwise cascade ``1xa -> ax1 -> 1xm (dilation) -> mx1 (dilation)``, before ``conv1``."""
    return depthwise_cascade(x, [w0h, w0v, wsh, wsv], [b0h, b0v, bsh, bsv], [1, 1, dilation, dilation])


def lka_cascade(
    x: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor, wsp: torch.Tensor, bsp: torch.Tensor, dilation: int
) -> torch.Tensor:
    """LKA's depthwise cascade ``axa -> mxm (dilation)``, before ``conv1``."""
    return depthwise_cascade(x, [w0, wsp], [b0, bsp], [1, dilation])
