"""SAM against the published SMT block and a loop-by-loop reading of the paper."""

import math

import pytest
import torch
import torch.nn.functional as F

import largekernel as lk
from largekernel.analysis import count_parameters


@pytest.mark.parametrize(("block", "dim"), [("block1.0", 64), ("block2.0", 128), ("block3.0", 256)])
def test_parameters_equal_published_smt_block(official_state_dicts, block, dim):
    published = official_state_dicts["smt_t"]["state_dict"]
    prefix = f"{block}.attn."
    attn = {k[len(prefix) :]: v for k, v in published.items() if k.startswith(prefix)}
    sam = lk.SAM(dim, num_heads=4, expand_ratio=2)
    ours = {k: list(v.shape) for k, v in sam.state_dict().items()}
    assert ours == attn  # same names and shapes, buffers included
    parameters = sum(
        math.prod(shape) for name, shape in attn.items() if "running" not in name and "num_batches" not in name
    )
    assert count_parameters(sam) == parameters


def _sam_reference(sam: lk.SAM, x: torch.Tensor) -> torch.Tensor:
    """SAM written from the paper, channel by channel, with functional ops on the module's weights."""
    dim = x.shape[1]
    heads, head_dim = sam.num_heads, dim // sam.num_heads
    tokens = x.permute(0, 2, 3, 1)  # B, H, W, C
    v = F.linear(tokens, sam.v.weight, sam.v.bias).permute(0, 3, 1, 2)
    s = F.linear(tokens, sam.s.weight, sam.s.bias).permute(0, 3, 1, 2)
    aggregated = torch.empty_like(s)
    for head in range(heads):
        conv = getattr(sam, f"local_conv_{head + 1}")
        kernel = 3 + 2 * head
        mixed = F.conv2d(
            s[:, head * head_dim : (head + 1) * head_dim], conv.weight, conv.bias, padding=kernel // 2, groups=head_dim
        )
        for channel in range(head_dim):  # channel c of head i -> position c * heads + i
            aggregated[:, channel * heads + head] = mixed[:, channel]
    hidden = F.conv2d(aggregated, sam.proj0.weight, sam.proj0.bias, groups=head_dim)
    bn = sam.bn
    hidden = (hidden - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    hidden = F.gelu(hidden * bn.weight[:, None, None] + bn.bias[:, None, None])
    modulator = F.conv2d(hidden, sam.proj1.weight, sam.proj1.bias)
    out = (modulator * v).permute(0, 2, 3, 1)
    return F.linear(out, sam.proj.weight, sam.proj.bias).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("dim", "heads", "expand"), [(16, 4, 2), (12, 3, 3), (8, 2, 1)])
def test_sam_matches_paper_reading(dim, heads, expand):
    sam = lk.SAM(dim, num_heads=heads, expand_ratio=expand).eval()
    with torch.no_grad():
        sam.bn.running_mean.normal_()
        sam.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, dim, 11, 8)
    torch.testing.assert_close(sam(x), _sam_reference(sam, x), rtol=1e-4, atol=1e-5)


def test_token_form_equals_nchw_form():
    sam = lk.SAM(16).eval()
    x = torch.randn(2, 16, 6, 9)
    tokens = x.flatten(2).transpose(1, 2)
    out = sam.forward_tokens(tokens, 6, 9)
    torch.testing.assert_close(out.transpose(1, 2).reshape_as(x), sam(x))


def test_bad_heads():
    with pytest.raises(ValueError, match="dim 10 must be divisible by num_heads 4"):
        lk.SAM(10, num_heads=4)
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        lk.SAM(8, num_heads=0)
