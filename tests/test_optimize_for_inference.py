"""optimize_for_inference: same outputs as the eval-mode model, fewer ops, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import largekernel as lk
from largekernel.inference import FoldedVANBlock, fold_batchnorm_into_conv


def _randomise_batchnorms(model: nn.Module) -> nn.Module:
    # non-trivial running statistics and affine parameters, so a wrong fold cannot hide
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    for name, parameter in model.named_parameters():
        if "layer_scale" in name or "gamma" in name:
            with torch.no_grad():
                parameter.copy_(torch.rand(parameter.shape, generator=generator) + 0.1)
    return model


def _assert_close_relative(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-4) -> None:
    assert got.shape == want.shape
    error = (got - want).abs().max().item()
    assert error <= rtol * want.abs().max().item(), f"max abs diff {error:.3e} vs scale {want.abs().max().item():.3e}"


TINY = {
    "van_b0": {"embed_dims": (8, 16, 24, 32), "depths": (1, 1, 2, 1), "num_classes": 10, "drop_path_rate": 0.1},
    "van_lska_tiny": {"embed_dims": (8, 16, 24, 32), "depths": (1, 1, 2, 1), "num_classes": 10, "drop_path_rate": 0.1},
    "smt_t": {"embed_dims": (16, 32, 32, 64), "depths": (1, 1, 2, 1), "num_classes": 10, "use_layerscale": True},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_folded_model_matches_eval_model(name):
    torch.manual_seed(0)
    model = _randomise_batchnorms(lk.create_model(name, **TINY[name])).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
    optimized = lk.optimize_for_inference(model)
    with torch.no_grad():
        got = optimized(x)
    _assert_close_relative(got, want)
    # the BatchNorms inside blocks, patch embeddings and SAM are gone
    remaining = [n for n, m in optimized.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert remaining == []
    assert not any(isinstance(m, (nn.Dropout, lk.layers.DropPath)) for m in optimized.modules())
    if name.startswith("van"):
        assert sum(isinstance(m, FoldedVANBlock) for m in optimized.modules()) == sum(TINY[name]["depths"])


def test_train_mode_model_is_folded_with_running_statistics_and_left_untouched():
    torch.manual_seed(1)
    model = _randomise_batchnorms(lk.create_model("van_b0", **TINY["van_b0"])).train()
    x = torch.randn(2, 3, 64, 64)
    optimized = lk.optimize_for_inference(model)
    assert model.training, "the caller's model must keep its mode"
    assert not optimized.training and not any(m.training for m in optimized.modules())
    with torch.no_grad():
        want = model.eval()(x)  # running statistics: what eval() uses
        batch_stats = model.train()(x)  # batch statistics: must differ, or the test could not fail
        got = optimized(x)
    _assert_close_relative(got, want)
    assert (batch_stats - want).abs().max() > 1e-3


def test_folded_block_output_channels_last_and_nchw_inputs():
    model = _randomise_batchnorms(lk.create_model("van_lska_tiny", **TINY["van_lska_tiny"])).eval()
    optimized = lk.optimize_for_inference(model)
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        want = model(x)
        _assert_close_relative(optimized(x), want)
        _assert_close_relative(optimized(x.contiguous(memory_format=torch.channels_last)), want)


def test_user_model_with_our_layer_and_conv_bn():
    torch.manual_seed(2)
    model = _randomise_batchnorms(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), lk.LSKA(8, 11))
    ).eval()
    optimized = lk.optimize_for_inference(model)
    assert isinstance(optimized[1], nn.Identity)
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        _assert_close_relative(optimized(x), model(x))


def test_fold_batchnorm_into_conv_matches_a_direct_computation():
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    bn = _randomise_batchnorms(nn.BatchNorm2d(6)).eval()
    x = torch.randn(1, 4, 9, 9)
    # eval BatchNorm written out by hand: (y - mean) / sqrt(var + eps) * weight + bias
    y = conv(x)
    expected = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    expected = expected * bn.weight[:, None, None] + bn.bias[:, None, None]
    _assert_close_relative(fold_batchnorm_into_conv(conv, bn)(x).detach(), expected.detach())


def test_nothing_to_fold_is_a_clear_error():
    with pytest.raises(ValueError, match="nothing to fold"):
        lk.optimize_for_inference(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        lk.optimize_for_inference("van_b0")  # type: ignore[arg-type]  # the wrong type is the point of the test
