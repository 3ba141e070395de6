"""VAN / VAN-LSKA against the published facts and an independent functional forward."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from model_helpers import randomize_

import largekernel as lk
from largekernel.analysis.complexity import count_macs, count_parameters
from largekernel.models._common import from_released_layout

VAN_VARIANTS = ["van_b0", "van_b1", "van_b2", "van_b3", "van_b4", "van_b5", "van_b6"]
LSKA_VARIANTS = {"tiny": "van_lska_tiny", "small": "van_lska_small", "base": "van_lska_base"}
LSKA_KERNELS = [7, 11, 23, 35, 41, 53]
# ARCHITECTURES.md section 1: published GFLOPs (MACs) at 224
PUBLISHED_GMACS = {
    "van_b0": 0.88,
    "van_b1": 2.5,
    "van_b2": 5.0,
    "van_b3": 9.0,
    "van_b4": 12.2,
    "van_b5": 17.2,
    "van_b6": 38.9,
}
# ARCHITECTURES.md section 2: VAN-Tiny, (params M, GMACs) per kernel size and design
VAN_TINY_TABLE = {
    7: {"lka_trivial": (4.064, 0.848), "lka": (4.016, 0.829), "lska_trivial": (4.010, 0.826), "lska": (4.010, 0.825)},
    23: {"lka_trivial": (4.832, 1.152), "lka": (4.106, 0.864), "lska_trivial": (4.061, 0.846), "lska": (4.029, 0.833)},
    53: {"lka_trivial": (8.480, 2.597), "lka": (4.490, 1.016), "lska_trivial": (4.157, 0.884), "lska": (4.061, 0.845)},
}


def _meta_model(name: str, **overrides):
    with torch.device("meta"):  # shapes only: builds even b6 (200M params) in about a second
        return lk.create_model(name, **overrides)


def _shapes(model) -> dict[str, list[int]]:
    # our keys (stages.N...) in the released layout (patch_embedN/blockN/normN); the map is one-to-one
    released = model.released_state_dict()
    assert len(released) == len(model.state_dict())
    assert from_released_layout(released).keys() == model.state_dict().keys()
    return {key: list(value.shape) for key, value in released.items()}


@pytest.mark.parametrize("name", VAN_VARIANTS)
def test_van_params_and_keys_equal_published(name, official):
    model = _meta_model(name)
    assert count_parameters(model) == official[name]["params"]
    assert _shapes(model) == official[name]["state_dict"]


@pytest.mark.parametrize("size", list(LSKA_VARIANTS))
@pytest.mark.parametrize("kernel_size", LSKA_KERNELS)
def test_van_lska_params_and_keys_equal_published(size, kernel_size, official):
    model = _meta_model(LSKA_VARIANTS[size], kernel_size=kernel_size)
    reference = official[f"lska_van_{size}_k{kernel_size}"]
    assert count_parameters(model) == reference["params"]
    assert _shapes(model) == reference["state_dict"]


def test_van_lska_defaults_to_kernel_23_and_large_is_b3_with_lska():
    tiny = _meta_model("van_lska_tiny")
    assert tiny.kernel_size == 23 and tiny.attention == "lska"
    large, b3 = _meta_model("van_lska_large"), _meta_model("van_b3")
    assert large.depths == b3.depths == [3, 5, 27, 3] and large.embed_dims == b3.embed_dims


@pytest.mark.parametrize("name", VAN_VARIANTS)
def test_van_macs_within_3_percent_of_published(name):
    macs = count_macs(_meta_model(name), (1, 3, 224, 224))  # FlopCounterMode runs on meta tensors
    assert abs(macs / 1e9 - PUBLISHED_GMACS[name]) / PUBLISHED_GMACS[name] < 0.03


def test_van_macs_on_meta_equal_real_run():
    real = count_macs(lk.create_model("van_b0", depths=(1, 1, 2, 1)), (1, 3, 64, 64))
    assert count_macs(_meta_model("van_b0", depths=(1, 1, 2, 1)), (1, 3, 64, 64)) == real


@pytest.mark.parametrize("kernel_size", sorted(VAN_TINY_TABLE))
def test_van_tiny_kernel_table_reproduced(kernel_size):
    for attention, (params_m, gmacs) in VAN_TINY_TABLE[kernel_size].items():
        model = _meta_model("van_b0", attention=attention, kernel_size=kernel_size)
        assert round(count_parameters(model) / 1e6, 3) == params_m, attention
        assert abs(count_macs(model, (1, 3, 224, 224)) / 1e9 - gmacs) <= 0.0015, attention


# -- an independent forward, written from the reference code's structure -------------------------
def _bn(x, sd, prefix):
    return F.batch_norm(
        x, sd[prefix + "running_mean"], sd[prefix + "running_var"], sd[prefix + "weight"], sd[prefix + "bias"], eps=1e-5
    )


def _conv(x, sd, prefix, **kwargs):
    return F.conv2d(x, sd[prefix + "weight"], sd[prefix + "bias"], **kwargs)


def _reference_lka(x, sd, p):  # 5x5 pad 2 -> 7x7 dilation 3 pad 9 -> 1x1, times input
    c = x.shape[1]
    attn = _conv(x, sd, p + "conv0.", padding=2, groups=c)
    attn = _conv(attn, sd, p + "conv_spatial.", padding=9, dilation=3, groups=c)
    return x * _conv(attn, sd, p + "conv1.")


def _reference_lska_23(x, sd, p):  # the LSKA repo's k_size=23 branch
    c = x.shape[1]
    attn = _conv(x, sd, p + "conv0h.", padding=(0, 2), groups=c)
    attn = _conv(attn, sd, p + "conv0v.", padding=(2, 0), groups=c)
    attn = _conv(attn, sd, p + "conv_spatial_h.", padding=(0, 9), dilation=3, groups=c)
    attn = _conv(attn, sd, p + "conv_spatial_v.", padding=(9, 0), dilation=3, groups=c)
    return x * _conv(attn, sd, p + "conv1.")


def reference_van_forward(sd, x, depths, gating=_reference_lka):
    for i, depth in enumerate(depths):
        p = f"patch_embed{i + 1}."
        x = _conv(x, sd, p + "proj.", stride=4 if i == 0 else 2, padding=3 if i == 0 else 1)
        x = _bn(x, sd, p + "norm.")
        for j in range(depth):
            b = f"block{i + 1}.{j}."
            y = _bn(x, sd, b + "norm1.")
            y = gating(F.gelu(_conv(y, sd, b + "attn.proj_1.")), sd, b + "attn.spatial_gating_unit.")
            y = _conv(y, sd, b + "attn.proj_2.") + _bn(x, sd, b + "norm1.")
            x = x + sd[b + "layer_scale_1"].view(-1, 1, 1) * y
            y = _conv(_bn(x, sd, b + "norm2."), sd, b + "mlp.fc1.")
            y = F.gelu(_conv(y, sd, b + "mlp.dwconv.dwconv.", padding=1, groups=y.shape[1]))
            x = x + sd[b + "layer_scale_2"].view(-1, 1, 1) * _conv(y, sd, b + "mlp.fc2.")
        batch, channels, height, width = x.shape
        tokens = F.layer_norm(
            x.flatten(2).transpose(1, 2), (channels,), sd[f"norm{i + 1}.weight"], sd[f"norm{i + 1}.bias"], 1e-6
        )
        if i != len(depths) - 1:
            x = tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    return F.linear(tokens.mean(dim=1), sd["head.weight"], sd["head.bias"])


@pytest.mark.parametrize(("name", "gating"), [("van_b0", _reference_lka), ("van_lska_tiny", _reference_lska_23)])
def test_van_forward_equals_independent_reference(name, gating):
    model = randomize_(lk.create_model(name, num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        expected = reference_van_forward(model.released_state_dict(), x, model.depths, gating)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


# -- the timm surface ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(224, 224), (97, 131)])
def test_van_features_only_shapes(size):
    model = lk.create_model("van_b0", features_only=True, out_indices=(0, 1, 2, 3), depths=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, *size))
    assert [info["num_chs"] for info in model.feature_info] == [32, 64, 160, 256]
    assert [info["reduction"] for info in model.feature_info] == [4, 8, 16, 32]
    for feature, info in zip(maps, model.feature_info):
        # stem 7x7/4 pad 3 gives ceil(n/4); every later 3x3/2 pad 1 halves, rounding up
        height, width = -(-size[0] // 4), -(-size[1] // 4)
        for _ in range(info["stage"]):
            height, width = -(-height // 2), -(-width // 2)
        assert feature.shape == (1, info["num_chs"], height, width)


def test_van_features_only_equal_full_model_stages_and_prune_unused():
    full = randomize_(lk.create_model("van_b0", depths=(1, 2, 1, 1))).eval()
    features = lk.create_model("van_b0", depths=(1, 2, 1, 1), features_only=True, out_indices=(1, 2))
    backbone = features.model  # the pruned model inside timm's FeatureGetterNet
    result = backbone.load_state_dict({k: v for k, v in full.state_dict().items() if k in backbone.state_dict()})
    assert not result.missing_keys
    assert not any(k.startswith(("stages.3.", "head.")) for k in backbone.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = features.eval()(x)
        expected = full.forward_intermediates(x, (1, 2), intermediates_only=True)
    assert [m.shape[1] for m in maps] == [64, 160]
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want)


def test_van_forward_head_and_reset_classifier():
    model = lk.create_model("van_b0", num_classes=7, depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (1, 256)
        torch.testing.assert_close(model(x), F.linear(pooled, model.head.weight, model.head.bias))
        model.reset_classifier(3)
        assert model(x).shape == (1, 3) and model.num_classes == 3
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)


def test_van_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = lk.create_model("van_b0", num_classes=4, embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1))
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, plain[name], msg=name)


def test_van_grad_checkpointing_updates_batchnorm_statistics_once():
    torch.manual_seed(0)
    plain = lk.create_model("van_b0", num_classes=4, embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1))
    checkpointed = lk.create_model("van_b0", num_classes=4, embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1))
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, checkpointed):
        model(x).sum().backward()
    for (name, ours), theirs in zip(checkpointed.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=name)


def test_van_any_kernel_and_dilation_override():
    model = lk.create_model("van_b0", kernel_size=31, dilation=4, depths=(1, 1, 1, 1), num_classes=5).eval()
    unit = model.stages[0].blocks[0].attn.spatial_gating_unit
    assert unit.conv_spatial.dilation == (4, 4) and unit.conv0.kernel_size == (7, 7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'van_b7'.*'van_b[0-6]'"):
        lk.create_model("van_b7")
    with pytest.raises(ValueError, match="van_lska_tiny"):
        lk.create_model("van_lksa_tiny")


def test_inconsistent_stage_lists_fail_clearly():
    with pytest.raises(ValueError, match=r"embed_dims has 4.*depths has 3"):
        lk.create_model("van_b0", depths=(1, 1, 1))
    with pytest.raises(ValueError, match="unknown attention"):
        lk.create_model("van_b0", attention="sam")
    with pytest.raises(ValueError, match="out_indices"):
        lk.create_model("van_b0", features_only=True, out_indices=(4,))


def test_list_models_pattern():
    assert lk.list_models("van_lska_*") == ["van_lska_base", "van_lska_large", "van_lska_small", "van_lska_tiny"]
    assert "van_b6" in lk.list_models()


@pytest.mark.parametrize("attention", ["lka", "lska"])
def test_folded_blocks_script_and_trace(attention):
    # the inference form (FusedBlock) compiles too, for TorchScript and torch.fx
    torch.manual_seed(0)
    model = lk.create_model(
        "van_b0", embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), attention=attention, kernel_size=7
    )
    randomize_(model)
    folded = lk.optimize_for_inference(model.eval(), channels_last=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.14
        scripted = torch.jit.script(folded)
    traced = torch.fx.symbolic_trace(folded)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = folded(x)
        torch.testing.assert_close(scripted(x), want)
        torch.testing.assert_close(traced(x), want)
