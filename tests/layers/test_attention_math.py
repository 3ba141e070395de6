"""LKA / LSKA and their trivial forms against independent computations.

References used here never call the modules' own forward: direct 2D convolutions with the
outer-product (or composed) kernel, the functional cascade written from the published table,
gradient supports, and closed-form parameter and MAC counts.
"""

import pytest
import torch
import torch.nn.functional as F

import largekernel as lk
from largekernel.analysis import count_macs, count_parameters
from reference_tables import LSKA_TABLE

DIM = 4


def _zero_depthwise_biases(module):
    with torch.no_grad():
        for conv in module.children():
            if isinstance(conv, torch.nn.Conv2d) and conv.groups > 1:
                conv.bias.zero_()


def _full_conv(kernel_a, kernel_b):
    """The single kernel equal to convolving with kernel_a then kernel_b: (C,1,h,w) each."""
    channels = kernel_a.shape[0]
    kb = kernel_b.flip(-1, -2)
    pad_h, pad_w = kb.shape[-2] - 1, kb.shape[-1] - 1
    return F.conv2d(F.pad(kernel_a.transpose(0, 1), (pad_w, pad_w, pad_h, pad_h)), kb, groups=channels).transpose(0, 1)


def _dilate(kernel, dilation):
    """Insert dilation-1 zeros between the taps of a (C,1,h,w) kernel."""
    channels, _, height, width = kernel.shape
    out = kernel.new_zeros(channels, 1, (height - 1) * dilation + 1, (width - 1) * dilation + 1)
    out[..., ::dilation, ::dilation] = kernel
    return out


def _composed_kernel(module):
    """The 2D depthwise kernel that the module's depthwise cascade equals (outer products, composed)."""
    if isinstance(module, lk.LSKA):
        dense = module.conv0v.weight * module.conv0h.weight  # (C,1,a,1) * (C,1,1,a) = outer product
        dilated = module.conv_spatial_v.weight * module.conv_spatial_h.weight
        return _full_conv(dense, _dilate(dilated, module.decomposition.dilation))
    if isinstance(module, lk.LSKATrivial):
        return module.conv0v.weight * module.conv0h.weight
    if isinstance(module, lk.LKA):
        return _full_conv(module.conv0.weight, _dilate(module.conv_spatial.weight, module.decomposition.dilation))
    return module.conv0.weight


@pytest.mark.parametrize(
    "module",
    [lk.LSKA(DIM, k) for k in (3, 7, 9, 15, 23, 29)]
    + [lk.LSKATrivial(DIM, 7), lk.LKA(DIM), lk.LKA(DIM, 11), lk.LKA(DIM, 13, dilation=2), lk.LKATrivial(DIM, 9)],
    ids=repr,
)
def test_cascade_equals_direct_conv_with_composed_kernel(module):
    _zero_depthwise_biases(module)
    kernel = _composed_kernel(module)
    side = kernel.shape[-1]
    assert side == module.receptive_field
    margin = side // 2
    x = torch.randn(2, DIM, 9, 12)
    # on a zero canvas wide enough that the cascade's own padding never reaches the image
    canvas = F.pad(x, (margin, margin, margin, margin))
    out = module(canvas)[..., margin:-margin, margin:-margin]
    attention = F.conv2d(F.conv2d(x, kernel, padding=margin, groups=DIM), module.conv1.weight, module.conv1.bias)
    torch.testing.assert_close(out, x * attention, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_size", sorted(LSKA_TABLE))
def test_lska_equals_functional_cascade_from_published_table(kernel_size):
    d, a, pad_a, m, pad_m = LSKA_TABLE[kernel_size]
    module = lk.LSKA(DIM, kernel_size)
    w = {name: conv.weight for name, conv in module.named_children()}
    b = {name: conv.bias for name, conv in module.named_children()}
    assert w["conv0h"].shape[-2:] == (1, a) and w["conv_spatial_v"].shape[-2:] == (m, 1)
    x = torch.randn(2, DIM, 17, 10)
    attn = F.conv2d(x, w["conv0h"], b["conv0h"], padding=(0, pad_a), groups=DIM)
    attn = F.conv2d(attn, w["conv0v"], b["conv0v"], padding=(pad_a, 0), groups=DIM)
    attn = F.conv2d(attn, w["conv_spatial_h"], b["conv_spatial_h"], padding=(0, pad_m), dilation=d, groups=DIM)
    attn = F.conv2d(attn, w["conv_spatial_v"], b["conv_spatial_v"], padding=(pad_m, 0), dilation=d, groups=DIM)
    attn = F.conv2d(attn, w["conv1"], b["conv1"])
    torch.testing.assert_close(module(x), x * attn)


def test_lka_default_equals_van_reference_forward():
    module = lk.LKA(DIM)
    x = torch.randn(1, DIM, 15, 16)
    attn = F.conv2d(x, module.conv0.weight, module.conv0.bias, padding=2, groups=DIM)
    attn = F.conv2d(attn, module.conv_spatial.weight, module.conv_spatial.bias, padding=9, dilation=3, groups=DIM)
    attn = F.conv2d(attn, module.conv1.weight, module.conv1.bias)
    torch.testing.assert_close(module(x), x * attn)


def _gradient_support(module, size):
    """Rows/cols where d out[center] / d input is non-zero, with positive weights (no cancellation)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(parameter.abs() + 0.01)
    x = (torch.rand(1, DIM, size, size) + 0.1).requires_grad_()
    module(x)[0, :, size // 2, size // 2].sum().backward()
    nonzero = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = nonzero.any(dim=1).nonzero().flatten()
    cols = nonzero.any(dim=0).nonzero().flatten()
    filled = nonzero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1, bool(filled)


@pytest.mark.parametrize("kernel_size", [3, 5, 7, 9, 11, 13, 17, 23, 31, 53])
def test_lska_gradient_support_is_exactly_k_by_k(kernel_size):
    height, width, filled = _gradient_support(lk.LSKA(DIM, kernel_size), kernel_size + 8)
    assert (height, width, filled) == (kernel_size, kernel_size, True)


@pytest.mark.parametrize(("kernel_size", "dilation"), [(21, 3), (7, None), (53, None), (9, None), (15, 4)])
def test_lka_gradient_support_is_documented_receptive_field(kernel_size, dilation):
    module = lk.LKA(DIM, kernel_size, dilation)
    height, width, _ = _gradient_support(module, module.receptive_field + 8)
    assert (height, width) == (module.receptive_field, module.receptive_field)
    if (kernel_size, dilation) == (21, 3):
        assert module.receptive_field == 23


def _closed_form(module, dim):
    """Parameters from the published formulas (ARCHITECTURES.md), biases included."""
    pointwise = dim * dim + dim
    if isinstance(module, lk.LKA):
        dec = module.decomposition
        return dec.dense_size**2 * dim + dec.dilated_size**2 * dim + 2 * dim + pointwise
    if isinstance(module, lk.LSKA):
        dec = module.decomposition
        return 2 * dec.dense_size * dim + 2 * dec.dilated_size * dim + 4 * dim + pointwise
    if isinstance(module, lk.LKATrivial):
        return module.kernel_size**2 * dim + dim + pointwise
    return 2 * module.kernel_size * dim + 2 * dim + pointwise


@pytest.mark.parametrize("design", ["lka", "lska", "lka_trivial", "lska_trivial"])
@pytest.mark.parametrize("kernel_size", [7, 23, 53, 101])
def test_params_and_macs_match_closed_form(design, kernel_size):
    dim, size = 32, 14
    module = lk.create_attention(design, dim, kernel_size)
    params = _closed_form(module, dim)
    assert count_parameters(module) == params
    # paper: FLOPs (MACs) = weights * H * W, biases ignored
    biases = (4 if design == "lska" else 2 if design in ("lka", "lska_trivial") else 1) * dim + dim
    assert count_macs(module, (1, dim, size, size)) == (params - biases) * size * size
