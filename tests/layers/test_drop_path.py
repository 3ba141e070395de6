"""Stochastic depth: whole samples dropped, expectation kept, identity in eval."""

import pytest
import torch

from largekernel.layers import DropPath


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    x = torch.ones(4000, 3, 2, 2)
    out = layer(x)
    per_sample = out.flatten(1)
    kept = per_sample[:, 0] != 0
    assert torch.all(per_sample[kept] == 1 / 0.75) and torch.all(per_sample[~kept] == 0)
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert abs(out.mean().item() - 1.0) < 0.05


def test_drop_path_is_identity_in_eval_and_at_zero():
    x = torch.randn(2, 3)
    assert torch.equal(DropPath(0.5).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)
    with pytest.raises(ValueError, match=r"drop_prob must be in \[0, 1\)"):
        DropPath(1.0)
