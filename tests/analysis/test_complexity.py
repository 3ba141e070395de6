"""MAC counting against hand formulas, including attention matmuls on the CPU."""

import torch
import torch.nn.functional as F

from largekernel.analysis import count_macs, count_parameters


class _Attention(torch.nn.Module):
    def forward(self, q):
        return F.scaled_dot_product_attention(q, q, q)


def test_cpu_attention_matmuls_are_counted():
    batch, heads, tokens, head_dim = 2, 3, 40, 8
    # q k^T and attn v: tokens * tokens * head_dim MACs each, per batch and head
    assert count_macs(_Attention(), (batch, heads, tokens, head_dim)) == 2 * batch * heads * tokens * tokens * head_dim


def test_linear_and_grouped_conv_counts():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, padding=1, groups=4), torch.nn.Flatten(), torch.nn.Linear(16 * 5 * 5, 10)
    )
    assert count_parameters(model) == 16 * 2 * 9 + 16 + 400 * 10 + 10
    assert count_macs(model, (1, 8, 5, 5)) == 16 * 2 * 9 * 25 + 400 * 10
