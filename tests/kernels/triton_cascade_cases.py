"""Fused Triton cascade vs the plain PyTorch convolutions, through Triton's CPU interpreter.

Not collected by the normal run (the name has no ``test_`` prefix): Triton's interpreter must be
switched on (``TRITON_INTERPRET=1``) before triton is imported, so
``tests/kernels/test_triton_cascade.py`` runs this file in a subprocess with that variable set.
Run by hand: ``TRITON_INTERPRET=1 PYTHONPATH=src python -m pytest tests/kernels/triton_cascade_cases.py``.
The interpreter is slow, so shapes are tiny; the GPU tests in test_triton_cascade.py use real sizes.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 set before triton is imported", allow_module_level=True)

from largekernel import LKA, LSKA, kernels
from largekernel.kernels import triton_available
from largekernel.kernels import triton_cascade as tc

DEPTHWISE = {
    LSKA: ["conv0h", "conv0v", "conv_spatial_h", "conv_spatial_v"],
    LKA: ["conv0", "conv_spatial"],
}


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts calls of the fused forward, so a test knows the module really took the fused path."""
    calls = []
    original = tc.fused_forward

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tc, "fused_forward", spy)
    with kernels.backend("triton"):
        yield calls


@pytest.fixture
def small_tiles(monkeypatch):
    """Force the tiled (halo) path on small images: sides above 8 pixels are tiled with 16- or 32-pixel blocks."""
    monkeypatch.setattr(tc, "_WHOLE_SIDE_MAX", 8)
    monkeypatch.setattr(tc, "_TILED_BLOCKS", (16, 32))
    monkeypatch.setattr(tc, "_MIN_TILE", 2)


def _module_grads(module, x, weight_out):
    """Output and gradients (x, then every depthwise weight and bias) of sum(module(x) * weight_out)."""
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad()
    y = module(x)
    (y * weight_out).sum().backward()
    grads = [x.grad]
    for name in DEPTHWISE[type(module)]:
        conv = getattr(module, name)
        grads += [conv.weight.grad, conv.bias.grad]
    return y.detach(), grads


def _compare_module(cls, kernel_size, shape, fused_calls, dtype=torch.float32, channels_last=False, tol=1e-5):
    torch.manual_seed(kernel_size + shape[2] * 7 + shape[3])
    module = cls(shape[1], kernel_size).to(dtype)
    x = torch.randn(shape, dtype=dtype)
    weight_out = torch.randn(shape, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    assert triton_available(x)
    with kernels.backend("torch"):
        y_ref, g_ref = _module_grads(module, x, weight_out)
    assert not fused_calls
    y, g = _module_grads(module, x, weight_out)
    assert fused_calls, "the module did not take the fused path"
    assert y.dtype == dtype
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    names = ["x"] + [f"{n}.{p}" for n in DEPTHWISE[cls] for p in ("weight", "bias")]
    for name, a, b in zip(names, g, g_ref):
        scale = max(1.0, b.abs().max().item())  # weight grads sum over B*H*W pixels
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale, msg=lambda m, n=name: f"grad {n}: {m}")


# --- LSKA: table sizes 7, 11, 23 and a non-table size 15; odd and even sides -------------------


@pytest.mark.parametrize(
    "kernel_size, shape",
    [
        (7, (2, 2, 9, 6)),
        (11, (1, 2, 8, 11)),
        (15, (1, 2, 10, 7)),
        (23, (1, 2, 13, 12)),
        # dilated taps reaching past the whole 8-pixel block (VAN's 7x7 stage at k=53): skipped taps
        (23, (1, 2, 5, 6)),
        (53, (1, 1, 7, 7)),
    ],
)
def test_lska_matches_plain(kernel_size, shape, fused_calls):
    _compare_module(LSKA, kernel_size, shape, fused_calls)


def test_lska_channels_last(fused_calls):
    _compare_module(LSKA, 11, (2, 3, 7, 10), fused_calls, channels_last=True)


def test_lska_tiled_with_halo(small_tiles, fused_calls):
    # 21 x 13 is split into several tiles; the halo must make tile borders invisible
    plan = tc._plan(21, 13, [(1, 3, 1), (3, 1, 1), (1, 3, 2), (3, 1, 2)])
    assert plan["n_tiles"] > 1 and plan["halo_h"] == 3
    _compare_module(LSKA, 7, (1, 2, 21, 13), fused_calls, channels_last=True)


# --- LKA: a x a then dilated m x m -----------------------------------------------------------


@pytest.mark.parametrize("kernel_size, shape", [(7, (2, 2, 8, 9)), (11, (1, 2, 6, 7))])
def test_lka_matches_plain(kernel_size, shape, fused_calls):
    _compare_module(LKA, kernel_size, shape, fused_calls)


def test_lka_van_kernel_21(fused_calls):
    # VAN's module: 5x5 then 7x7 dilation 3
    _compare_module(LKA, 21, (1, 1, 9, 8), fused_calls)


def test_lka_tiled_channels_last(small_tiles, fused_calls):
    _compare_module(LKA, 7, (1, 1, 12, 9), fused_calls, channels_last=True)


# --- half precision: fp32 accumulation, compared with fp32 math on the same rounded values ------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    torch.manual_seed(0)
    stages = [(1, 5), (5, 1), (1, 7), (7, 1)]
    weights = [(0.3 * torch.randn(3, 1, kh, kw)).to(dtype).requires_grad_() for kh, kw in stages]
    biases = [(0.1 * torch.randn(3)).to(dtype).requires_grad_() for _ in stages]
    dilations = [1, 1, 3, 3]
    x = torch.randn(1, 3, 8, 9).to(dtype).requires_grad_()
    y = tc.depthwise_cascade(x, weights, biases, dilations)
    assert y.dtype == dtype
    grads = torch.autograd.grad(y.float().square().sum(), [x, *weights, *biases])
    # reference: the same (rounded) numbers in fp32
    ref_leaves = [t.detach().float().requires_grad_() for t in [x, *weights, *biases]]
    y_ref = tc.plain_cascade(ref_leaves[0], ref_leaves[1:5], ref_leaves[5:], dilations)
    ref_grads = torch.autograd.grad(y_ref.to(dtype).float().square().sum(), ref_leaves)
    torch.testing.assert_close(y.float(), y_ref, rtol=1e-2, atol=1e-2 * y_ref.abs().max().item())
    for a, b in zip(grads, ref_grads):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, rtol=3e-2, atol=3e-2 * b.abs().max().item())


# --- float64 gradcheck of the autograd.Function ------------------------------------------------


def _fp64_params(stages, C, seed):
    generator = torch.Generator().manual_seed(seed)
    weights = [
        torch.randn(C, 1, kh, kw, dtype=torch.float64, generator=generator).requires_grad_() for kh, kw, _ in stages
    ]
    biases = [torch.randn(C, dtype=torch.float64, generator=generator).requires_grad_() for _ in stages]
    return weights, biases, [d for *_, d in stages]


def test_gradcheck_lska_fp64():
    weights, biases, dilations = _fp64_params([(1, 3, 1), (3, 1, 1), (1, 3, 2), (3, 1, 2)], C=1, seed=1)
    x = torch.randn(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)

    def cascade(x, *params):
        return tc.depthwise_cascade(x, params[0::2], params[1::2], dilations)

    params = [p for pair in zip(weights, biases) for p in pair]
    assert torch.autograd.gradcheck(cascade, (x, *params), eps=1e-6, atol=1e-7, fast_mode=True)


def test_gradcheck_lka_tiled_fp64(small_tiles):
    weights, biases, dilations = _fp64_params([(3, 3, 1), (3, 3, 2)], C=2, seed=2)
    x = torch.randn(1, 2, 10, 9, dtype=torch.float64, requires_grad=True)

    def cascade(x, *params):
        return tc.depthwise_cascade(x, params[0::2], params[1::2], dilations)

    params = [p for pair in zip(weights, biases) for p in pair]
    assert torch.autograd.gradcheck(cascade, (x, *params), eps=1e-6, atol=1e-7, fast_mode=True)


# --- strides of the incoming gradient, and the public functions' argument checks ----------------


def test_expanded_and_sliced_grad_out():
    weights, biases, dilations = _fp64_params([(1, 3, 1), (3, 1, 1), (1, 5, 2), (5, 1, 2)], C=2, seed=3)
    x = torch.randn(2, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    for loss_of in (lambda y: y.sum(), lambda y: y[:, :, 1:, ::2].sum()):  # stride-0 and strided grads
        y = tc.lska_cascade(
            x, weights[0], biases[0], weights[1], biases[1], weights[2], biases[2], weights[3], biases[3], dilation=2
        )
        got = torch.autograd.grad(loss_of(y), [x, *weights, *biases])
        y_ref = tc.plain_cascade(x, weights, biases, dilations)
        want = torch.autograd.grad(loss_of(y_ref), [x, *weights, *biases])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_lka_cascade_function():
    weights, biases, _ = _fp64_params([(5, 5, 1), (7, 7, 3)], C=1, seed=4)
    x = torch.randn(1, 1, 6, 5, dtype=torch.float64)
    got = tc.lka_cascade(x, weights[0], biases[0], weights[1], biases[1], dilation=3)
    torch.testing.assert_close(got, tc.plain_cascade(x, weights, biases, [1, 3]))


def test_bad_arguments():
    w, b = torch.randn(2, 1, 1, 3), torch.randn(2)
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match="depthwise"):
        tc.depthwise_cascade(x, [torch.randn(2, 1, 2, 3)], [b], [1])  # even kernel side
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        tc.depthwise_cascade(x, [w], [torch.randn(3)], [1])
    with pytest.raises(ValueError, match="dilation"):
        tc.depthwise_cascade(x, [w], [b], [0])
    with pytest.raises(TypeError, match="dtype"):
        tc.depthwise_cascade(x.to(torch.int32), [w], [b], [1])
    with pytest.raises(ValueError, match="4-D"):
        tc.depthwise_cascade(x[0], [w], [b], [1])


def test_unsupported_plan_falls_back_to_plain(monkeypatch, fused_calls):
    # a receptive field too large for any tile: the module must silently use the plain convolutions
    monkeypatch.setattr(tc, "_WHOLE_SIDE_MAX", 8)
    monkeypatch.setattr(tc, "_TILED_BLOCKS", (16,))
    module = LSKA(2, 23)
    x = torch.randn(1, 2, 12, 12)
    with kernels.backend("torch"):
        want = module(x)
    torch.testing.assert_close(module(x), want)
    assert not fused_calls
