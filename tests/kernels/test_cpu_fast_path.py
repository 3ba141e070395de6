"""The cpu_nhwc backend of LKA/LSKA (and trivial variants) against the plain nn.Conv2d path and F.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import largekernel as lk
from largekernel import kernels
from largekernel.kernels import cpu as cpu_kernels


def fast_cpu_path(fast: bool):
    return kernels.backend("cpu_nhwc" if fast else "torch")


LAYERS = [
    (lk.LSKA, 23),
    (lk.LSKA, 11),
    (lk.LKA, 21),
    (lk.LKA, 53),
    (lk.LSKATrivial, 7),
    (lk.LKATrivial, 7),
]


def _run(module, x, grad, fast):
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with fast_cpu_path(fast):
        y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, {name: p.grad.clone() for name, p in module.named_parameters()}


def _randomise(module):
    # non-trivial biases so a wrong border or bias handling cannot hide
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


@pytest.mark.parametrize("cls,kernel_size", LAYERS, ids=[f"{c.__name__}-{k}" for c, k in LAYERS])
@pytest.mark.parametrize(
    "shape", [(2, 8, 13, 10), (1, 8, 4, 5), (2, 8, 24, 24)], ids=["odd-even", "smaller-than-kernel", "even"]
)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fast_path_matches_plain_float32(cls, kernel_size, shape, channels_last):
    torch.manual_seed(0)
    module = _randomise(cls(shape[1], kernel_size))
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape)
    y_fast, gx_fast, gp_fast = _run(module, x, grad, True)
    y_plain, gx_plain, gp_plain = _run(module, x, grad, False)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_fast, gx_plain, rtol=1e-5, atol=1e-5)
    assert gp_fast.keys() == gp_plain.keys()
    for name in gp_plain:
        torch.testing.assert_close(gp_fast[name], gp_plain[name], rtol=1e-4, atol=1e-4, msg=name)
    # layout: NCHW in -> NCHW-contiguous out; channels_last in -> channels_last out
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert y_fast.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("cls,kernel_size", [(lk.LSKA, 23), (lk.LKA, 21)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fast_path_without_autograd_matches_plain(cls, kernel_size, channels_last):
    # no autograd: the gate multiplies in place, a different code path
    torch.manual_seed(4)
    module = _randomise(cls(8, kernel_size))
    x = torch.randn(2, 8, 17, 14)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = module(x)
        with fast_cpu_path(False):
            plain = module(x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert fast.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("cls,kernel_size", [(lk.LSKA, 23), (lk.LKA, 21), (lk.LKATrivial, 7)])
def test_fast_path_matches_plain_bfloat16(cls, kernel_size):
    torch.manual_seed(1)
    module = _randomise(cls(8, kernel_size)).to(torch.bfloat16)
    x = torch.randn(2, 8, 15, 12, dtype=torch.bfloat16)
    grad = torch.randn(2, 8, 15, 12, dtype=torch.bfloat16)
    y_fast, gx_fast, gp_fast = _run(module, x, grad, True)
    y_plain, gx_plain, gp_plain = _run(module, x, grad, False)
    assert y_fast.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa; sums of a few hundred terms differ by a few percent of their scale
    scale = lambda t: t.float().abs().max().item()
    assert (y_fast.float() - y_plain.float()).abs().max().item() <= 0.03 * scale(y_plain)
    assert (gx_fast.float() - gx_plain.float()).abs().max().item() <= 0.03 * scale(gx_plain)
    for name in gp_plain:
        assert (gp_fast[name].float() - gp_plain[name].float()).abs().max().item() <= 0.03 * scale(gp_plain[name]), name


@pytest.mark.parametrize("kernel,dilation", [(5, 1), (7, 3), (5, 2)])
@pytest.mark.parametrize("height,width", [(11, 9), (3, 4)])
def test_one_dimensional_convs_match_conv2d(kernel, dilation, height, width):
    torch.manual_seed(2)
    channels = 4
    x = torch.randn(2, channels, height, width, requires_grad=True)
    weight = torch.randn(channels, 1, kernel, 1, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True)
    pad = dilation * (kernel - 1) // 2
    for ref_kwargs, w in [
        ({"padding": (pad, 0), "dilation": (dilation, 1)}, weight),
        ({"padding": (0, pad), "dilation": (1, dilation)}, weight.transpose(2, 3)),
    ]:
        grad = torch.randn(2, channels, height, width)
        with fast_cpu_path(True):
            got = torch.autograd.grad(kernels.depthwise_cascade(x, [w], [bias], [dilation]), (x, weight, bias), grad)
        want = torch.autograd.grad(F.conv2d(x, w, bias, groups=channels, **ref_kwargs), (x, weight, bias), grad)
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2), (7, 3)])
@pytest.mark.parametrize("height,width", [(10, 13), (25, 27)], ids=["small-map-native-grad", "row-trick-grad"])
def test_square_conv_matches_conv2d(kernel, dilation, height, width):
    torch.manual_seed(3)
    channels = 4
    assert (25 * 27 >= cpu_kernels._ROW_TRICK_MIN_PIXELS) and (10 * 13 < cpu_kernels._ROW_TRICK_MIN_PIXELS)
    x = torch.randn(2, channels, height, width, requires_grad=True)
    weight = torch.randn(channels, 1, kernel, kernel, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True)
    grad = torch.randn(2, channels, height, width)
    with fast_cpu_path(True):
        got = torch.autograd.grad(kernels.depthwise_cascade(x, [weight], [bias], [dilation]), (x, weight, bias), grad)
    ref = F.conv2d(x, weight, bias, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=channels)
    want = torch.autograd.grad(ref, (x, weight, bias), grad)
    for g, r in zip(got, want):
        # weight/bias gradients sum ~1000 products: float32 rounding reaches ~1e-6 of their size
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_square_conv_impulse_response_is_the_flipped_kernel():
    # an impulse through a correlation shows the kernel mirrored: independent of any conv routine
    weight = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1.0
    with fast_cpu_path(True):
        y = kernels.depthwise_cascade(x, [weight], [None], [2])
    expected = torch.zeros(7, 7)
    expected[1:6:2, 1:6:2] = weight[0, 0].flip(0, 1)
    torch.testing.assert_close(y[0, 0], expected)


def test_layer_dispatches_to_fast_path_and_switch_turns_it_off(monkeypatch):
    calls = []
    original = cpu_kernels.cascade_forward
    monkeypatch.setattr(cpu_kernels, "cascade_forward", lambda *a: calls.append(1) or original(*a))
    module = lk.LSKA(4, 7)
    x = torch.randn(1, 4, 8, 8)
    with fast_cpu_path(True):
        module(x)
    assert calls == [1]
    with fast_cpu_path(False):
        assert kernels.get_backend() == "torch"
        module(x)
    assert calls == [1]


def test_fast_path_not_used_for_float64_or_tracing(monkeypatch):
    calls = []
    original = cpu_kernels.cascade_forward
    monkeypatch.setattr(cpu_kernels, "cascade_forward", lambda *a: calls.append(1) or original(*a))
    module = lk.LSKA(4, 7)
    x = torch.randn(1, 4, 8, 8)
    with fast_cpu_path(True):
        module.double()(x.double())
        module.float()
        assert not calls
        with pytest.warns(torch.jit.TracerWarning):
            traced = torch.jit.trace(module, x, check_trace=False)
    assert not calls
    # the traced graph holds the plain convs, not the fast path's reshapes
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::_convolution" in kinds and "aten::bmm" not in kinds


def test_mac_counting_sees_the_plain_convs():
    # FlopCounterMode (count_macs) must count the layer's convs, not the fast path's padded grids
    from largekernel.analysis.complexity import count_macs

    module = lk.LKA(8, 21)
    x_shape = (1, 8, 14, 14)
    with fast_cpu_path(False):
        plain = count_macs(module, x_shape)
    assert count_macs(module, x_shape) == plain
