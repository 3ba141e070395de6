"""NHWC drop-in modules and optimize_for_cpu_training against the unchanged model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import largekernel as lk
from largekernel.kernels import optimize_for_cpu_training
from largekernel.kernels.cpu_modules import (
    NHWCGELU,
    DepthwiseConv2d,
    PointwiseConv2d,
    swap_in_nhwc_modules,
)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Conv2d(6, 5, 1),
        lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6),
        lambda: nn.Conv2d(6, 6, 5, padding=4, dilation=2, groups=6),
        nn.GELU,
    ],
    ids=["pointwise", "depthwise3", "depthwise5-dilated", "gelu"],
)
def test_swapped_module_matches_original_forward_and_backward(make):
    torch.manual_seed(0)
    original = make()
    holder = nn.Sequential(copy.deepcopy(original))
    assert swap_in_nhwc_modules(holder) == 1
    swapped = holder[0]
    assert isinstance(swapped, (PointwiseConv2d, DepthwiseConv2d, NHWCGELU))
    assert swapped.state_dict().keys() == original.state_dict().keys()
    x = torch.randn(2, 6, 26, 25).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 5 if isinstance(original, nn.Conv2d) and original.out_channels == 5 else 6, 26, 25)
    outs = []
    for module in (original, swapped):
        xi = x.detach().clone().requires_grad_()
        y = module(xi)
        y.backward(grad)
        outs.append((y, xi.grad, [p.grad for p in module.parameters()]))
    (y0, gx0, gp0), (y1, gx1, gp1) = outs
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-5)
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_strided_or_grouped_convs_are_left_alone():
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), nn.Conv2d(4, 8, 1, groups=2), nn.Conv2d(4, 4, 3)
    )
    assert swap_in_nhwc_modules(model) == 0


def test_optimize_for_cpu_training_keeps_loss_and_gradients():
    torch.manual_seed(1)
    model = lk.create_model("van_b0", embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_classes=10).train()
    fast = optimize_for_cpu_training(copy.deepcopy(model))
    assert fast.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([1, 7])
    losses = []
    for net, inp in ((model, x), (fast, x.contiguous(memory_format=torch.channels_last))):
        loss = F.cross_entropy(net(inp), target)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    grads = dict(model.named_parameters())
    for name, parameter in fast.named_parameters():
        torch.testing.assert_close(parameter.grad, grads[name].grad, rtol=1e-3, atol=1e-5, msg=name)
