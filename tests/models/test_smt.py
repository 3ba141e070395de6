"""SMT against the published facts and an independent functional forward of the reference code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import randomize_
from torch.utils.flop_counter import FlopCounterMode

import largekernel as lk
from largekernel.analysis.complexity import count_macs, count_parameters
from largekernel.models.smt import MSA

SMT_VARIANTS = ["smt_t", "smt_s", "smt_b", "smt_l"]
PUBLISHED_GMACS = {"smt_t": 2.4, "smt_s": 4.7, "smt_b": 7.7, "smt_l": 17.7}  # ARCHITECTURES.md section 3
SMALL = {"depths": (1, 1, 2, 1), "num_classes": 10}  # smt_t widths, one block of each kind per stage


def _meta_model(name: str, **overrides):
    with torch.device("meta"):
        return lk.create_model(name, **overrides)


@pytest.mark.parametrize("name", SMT_VARIANTS)
def test_smt_params_and_keys_equal_published(name, official):
    model = _meta_model(name)
    assert count_parameters(model) == official[name]["params"]
    assert {k: list(v.shape) for k, v in model.released_state_dict().items()} == official[name]["state_dict"]


@pytest.mark.parametrize("name", SMT_VARIANTS)
def test_smt_macs_within_3_percent_of_published(name):
    # the published FLOPs leave out the attention matmuls (q k^T and attn v): count them apart
    model = _meta_model(name).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224, device="meta"))
    per_op = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    attention_matmuls = per_op.get("aten.bmm", 0)
    assert attention_matmuls > 0
    macs_without_attention = (counter.get_total_flops() - attention_matmuls) / 2e9
    assert abs(macs_without_attention - PUBLISHED_GMACS[name]) / PUBLISHED_GMACS[name] < 0.03


def test_smt_t_count_macs_includes_attention():
    macs = count_macs(_meta_model("smt_t"), (1, 3, 224, 224)) / 1e9
    assert 2.4 < macs < 2.4 * 1.05  # the matmuls add ~0.08 G on top of the published 2.4


# -- an independent forward, written from the reference code's structure -------------------------
def _ln(x, sd, p, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[p + "weight"], sd[p + "bias"], eps)


def _linear(x, sd, p):
    return F.linear(x, sd[p + "weight"], sd.get(p + "bias"))


def _to_map(x, h, w):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def _reference_sam(x, sd, p, h, w, heads):
    b, n, c = x.shape
    v = _linear(x, sd, p + "v.")
    s = _linear(x, sd, p + "s.").reshape(b, h, w, heads, c // heads).permute(3, 0, 4, 1, 2)
    outs = []
    for i in range(heads):
        y = F.conv2d(
            s[i],
            sd[p + f"local_conv_{i + 1}.weight"],
            sd[p + f"local_conv_{i + 1}.bias"],
            padding=1 + i,
            groups=c // heads,
        )
        outs.append(y.reshape(b, c // heads, -1, h, w))
    s_out = torch.cat(outs, 2).reshape(b, c, h, w)
    s_out = F.conv2d(s_out, sd[p + "proj0.weight"], sd[p + "proj0.bias"], groups=c // heads)
    s_out = F.batch_norm(
        s_out, sd[p + "bn.running_mean"], sd[p + "bn.running_var"], sd[p + "bn.weight"], sd[p + "bn.bias"]
    )
    s_out = F.conv2d(F.gelu(s_out), sd[p + "proj1.weight"], sd[p + "proj1.bias"]).reshape(b, c, n).permute(0, 2, 1)
    return _linear(s_out * v, sd, p + "proj.")


def _reference_msa(x, sd, p, h, w, heads):
    b, n, c = x.shape
    q = _linear(x, sd, p + "q.").reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)
    k, v = _linear(x, sd, p + "kv.").reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
    local = F.conv2d(
        v.transpose(1, 2).reshape(b, n, c).transpose(1, 2).reshape(b, c, h, w),
        sd[p + "local_conv.weight"],
        sd[p + "local_conv.bias"],
        padding=1,
        groups=c,
    )
    x = (attn @ v).transpose(1, 2).reshape(b, n, c) + local.reshape(b, c, n).transpose(1, 2)
    return _linear(x, sd, p + "proj.")


def reference_smt_forward(
    sd, x, depths, head_conv=3, ca_heads=(4, 4, 4, -1), sa_heads=(-1, -1, 8, 16), ca_attentions=(1, 1, 1, 0)
):
    b = x.shape[0]
    for i, depth in enumerate(depths):
        if i == 0:
            x = F.conv2d(x, sd["patch_embed1.conv.0.weight"], stride=2, padding=3 if head_conv == 7 else 1)
            p = "patch_embed1.conv.1."
            x = F.relu(F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"]))
            x = F.conv2d(x, sd["patch_embed1.conv.3.weight"], sd["patch_embed1.conv.3.bias"], stride=2)
        else:
            x = F.conv2d(
                x, sd[f"patch_embed{i + 1}.proj.weight"], sd[f"patch_embed{i + 1}.proj.bias"], stride=2, padding=1
            )
        h, w = x.shape[-2:]
        x = _ln(x.flatten(2).transpose(1, 2), sd, f"patch_embed{i + 1}.norm.", 1e-5)
        for j in range(depth):
            p = f"block{i + 1}.{j}."
            y = _ln(x, sd, p + "norm1.", 1e-6)
            if (0 if i == 2 and j % 2 != 0 else ca_attentions[i]) == 1:
                x = x + _reference_sam(y, sd, p + "attn.", h, w, ca_heads[i])
            else:
                x = x + _reference_msa(y, sd, p + "attn.", h, w, sa_heads[i])
            y = _linear(_ln(x, sd, p + "norm2.", 1e-6), sd, p + "mlp.fc1.")
            local = F.conv2d(
                _to_map(y, h, w),
                sd[p + "mlp.dwconv.dwconv.weight"],
                sd[p + "mlp.dwconv.dwconv.bias"],
                padding=1,
                groups=y.shape[-1],
            )
            y = F.gelu(y + local.flatten(2).transpose(1, 2))
            x = x + _linear(y, sd, p + "mlp.fc2.")
        x = _ln(x, sd, f"norm{i + 1}.", 1e-6)
        if i != len(depths) - 1:
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)
    return _linear(x.mean(dim=1), sd, "head.")


@pytest.mark.parametrize("head_conv", [3, 7])
def test_smt_forward_equals_independent_reference(head_conv):
    model = randomize_(lk.create_model("smt_t", head_conv=head_conv, **SMALL)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = reference_smt_forward(model.released_state_dict(), x, SMALL["depths"], head_conv)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_msa_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    msa = randomize_(MSA(32, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(2, 5 * 7, 32)
    with torch.no_grad():
        expected = _reference_msa(x, msa.state_dict(), "", 5, 7, 4)
        torch.testing.assert_close(msa.forward_tokens(x, 5, 7), expected, rtol=1e-5, atol=1e-5)


def test_sam_token_form_in_smt_equals_reference_and_nchw_form():
    model = randomize_(lk.create_model("smt_t", **SMALL)).eval()
    sam = model.stages[0].blocks[0].attn
    x = torch.randn(2, 6 * 5, 64)
    with torch.no_grad():
        tokens = sam.forward_tokens(x, 6, 5)
        torch.testing.assert_close(tokens, _reference_sam(x, sam.state_dict(), "", 6, 5, 4), rtol=1e-5, atol=1e-5)
        nchw = sam(x.transpose(1, 2).reshape(2, 64, 6, 5))
        torch.testing.assert_close(nchw.flatten(2).transpose(1, 2), tokens)


def test_smt_stage_layout_is_sam_then_mix_then_msa():
    model = _meta_model("smt_s")
    kinds = [[type(block.attn).__name__ for block in stage.blocks] for stage in model.stages]
    assert kinds[0] == ["SAM"] * 3 and kinds[1] == ["SAM"] * 4
    assert kinds[2] == ["SAM", "MSA"] * 9 and kinds[3] == ["MSA"] * 2


# -- the timm surface ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "expected"),
    [((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]), ((97, 131), [(24, 33), (12, 17), (6, 9), (3, 5)])],
)
def test_smt_features_only_shapes(size, expected):
    # stem: 3x3/2 pad 1 (ceil(n/2)) then 2x2/2 (floor); later 3x3/2 pad 1 (ceil)
    model = lk.create_model("smt_t", features_only=True, depths=(1, 1, 2, 1)).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, *size))
    assert [info["num_chs"] for info in model.feature_info] == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32] and model.feature_info.channels() == [64, 128, 256, 512]
    assert [tuple(m.shape) for m in maps] == [(1, c, h, w) for c, (h, w) in zip([64, 128, 256, 512], expected)]


def test_smt_head_reset_and_grad_checkpointing():
    model = lk.create_model("smt_t", embed_dims=(16, 16, 32, 32), **SMALL)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, plain[name], msg=name)
    model.eval()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)


def test_smt_layerscale_override_adds_gammas():
    model = _meta_model("smt_t", use_layerscale=True, layerscale_value=1e-3)
    assert model.stages[0].blocks[0].gamma_1.shape == (64,) and "block4.0.gamma_2" in model.released_state_dict()


# -- bad input ----------------------------------------------------------------------------------
def test_smt_invalid_heads_fail_clearly():
    with pytest.raises(ValueError, match=r"stage 3 uses self-attention \(MSA\) but sa_num_heads\[2\] = -1"):
        lk.create_model("smt_t", sa_num_heads=(-1, -1, -1, 16))
    with pytest.raises(ValueError, match=r"stage 1 uses scale-aware modulation \(SAM\) but ca_num_heads\[0\] = 5"):
        lk.create_model("smt_t", ca_num_heads=(5, 4, 4, -1))
    with pytest.raises(ValueError, match=r"embed_dims has 4.*depths has 3"):
        lk.create_model("smt_t", depths=(1, 1, 1))
    with pytest.raises(ValueError, match="head_conv"):
        lk.create_model("smt_t", head_conv=4)
