"""The timm model contract over every registered model, as timm's own tests/test_models.py checks
it, through ``largekernel.create_model`` (timm's builder and the no-timm stand-in) and ``timm.create_model``.

Small inputs (32 px) and one block per stage keep every variant's widths while staying fast.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import largekernel as lk
from largekernel.models._features import feature_classes, take_indices

NAMES = lk.list_models()
SMALL = {"depths": (1, 1, 2, 1), "num_classes": 7}
x64 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # stride 32: a 1x1 last map


@pytest.fixture(params=["timm", "no_timm"])
def builder(request, monkeypatch):
    """Both build paths: timm's build_model_with_cfg, and our stand-in (LARGEKERNEL_NO_TIMM=1)."""
    if request.param == "timm":
        pytest.importorskip("timm")
    else:
        monkeypatch.setenv("LARGEKERNEL_NO_TIMM", "1")
    return request.param


@pytest.mark.parametrize("name", NAMES)
def test_model_contract(name):
    torch.manual_seed(0)
    # each variant's own widths; one block per stage (SMT: two in stage 3, which alternates SAM and MSA)
    model = lk.create_model(name, **(SMALL if name.startswith("smt") else {**SMALL, "depths": (1, 1, 1, 1)}))
    out = model(x64)
    assert out.shape == (2, 7) and not torch.isnan(out).any()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad}"

    model.eval()
    with torch.no_grad():
        features = model.forward_features(x64)
        torch.testing.assert_close(model.forward_head(features), model(x64))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
        final, intermediates = model.forward_intermediates(x64)
        torch.testing.assert_close(final, features)
        torch.testing.assert_close(intermediates[-1], features)
        assert [t.shape[1] for t in intermediates] == [info["num_chs"] for info in model.feature_info]
        assert [32 // t.shape[-1] for t in intermediates] == [info["reduction"] for info in model.feature_info]
        last_two = model.forward_intermediates(x64, indices=2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in intermediates[-2:]]
        _, early = model.forward_intermediates(x64, indices=[0], stop_early=True, output_fmt="NHWC")
        torch.testing.assert_close(early[0], intermediates[0].permute(0, 2, 3, 1))


@pytest.mark.parametrize("name", ["van_b0", "smt_t"])
def test_intermediates_under_grad_checkpointing(name, builder):
    torch.manual_seed(0)
    model = lk.create_model(name, **SMALL)
    final, intermediates = model.forward_intermediates(x64)
    model.set_grad_checkpointing(True)
    final_ckpt, intermediates_ckpt = model.forward_intermediates(x64)
    torch.testing.assert_close(final_ckpt, final)
    for got, want in zip(intermediates_ckpt, intermediates):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(model.forward_features(x64), final)
    intermediates_ckpt[0].sum().backward()  # the checkpointed graph runs backward


@pytest.mark.parametrize("name", ["van_b0", "smt_t"])
def test_features_only_and_reset_classifier(name, builder):
    torch.manual_seed(0)
    full = lk.create_model(name, **SMALL).eval()
    features = lk.create_model(name, depths=SMALL["depths"], features_only=True, out_indices=(1, -1)).eval()
    features.model.load_state_dict(full.state_dict(), strict=False)
    feature_info_cls, getter_cls = feature_classes()  # timm's own classes where timm is used
    assert type(features) is getter_cls and type(features.feature_info) is feature_info_cls
    assert getter_cls.__module__.startswith("timm." if builder == "timm" else "largekernel.")
    assert features.feature_info.channels() == [full.feature_info[1]["num_chs"], full.feature_info[3]["num_chs"]]
    assert features.feature_info.reduction() == [8, 32]
    assert [d["module"] for d in features.feature_info.get_dicts()] == ["stages.1", "stages.3"]
    assert features.feature_info.channels(1) == full.feature_info[1]["num_chs"]
    with torch.no_grad():
        maps = features(x64)
        _, want = full.forward_intermediates(x64, indices=[1, 3])
    assert [m.shape for m in maps] == [w.shape for w in want]
    for got, expected in zip(maps, want):
        torch.testing.assert_close(got, expected)
    assert "pretrained_cfg" in vars(features) or hasattr(features, "pretrained_cfg")

    model = lk.create_model(name, **SMALL).eval()
    model.reset_classifier(3, global_pool="max")
    with torch.no_grad():
        pooled = model.forward_features(x64).amax(dim=(2, 3))
        torch.testing.assert_close(model(x64), model.head(pooled))
    model.reset_classifier(0)
    assert model(x64).shape == (2, model.num_features)
    with pytest.raises(lk.errors.ConfigurationError, match="global_pool"):
        model.reset_classifier(3, global_pool="median")


# -- torch.fx and TorchScript, as timm's test_models checks them ----------------------------------
FAMILIES = {"van": "van_b0", "van_lska": "van_lska_tiny", "smt": "smt_t"}  # one small variant per family


def test_every_family_is_covered():
    # a new family must get its own entry above (so it is FX-traced and scripted below)
    assert {name.rsplit("_", 1)[0] for name in NAMES} == set(FAMILIES)


def _scripted(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.14
        return torch.jit.script(module)


@pytest.fixture(scope="module", params=sorted(FAMILIES.values()))
def eager(request):
    """One small eval-mode model per family and its eager output (shared by the FX and TorchScript tests)."""
    torch.manual_seed(0)
    model = lk.create_model(request.param, **SMALL).eval()
    with torch.no_grad():
        return model, model(x64)


def test_fx_trace(eager):
    model, want = eager
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x64), want)
    # the graph holds the plain conv modules (the fast kernels stay out of FX graphs)
    convs = {node.target for node in traced.graph.nodes if node.op == "call_module"}
    assert {"stages.0.downsample.proj", "stages.0.downsample.conv.0"} & convs


def test_jit_script(eager):
    model, want = eager
    model.set_grad_checkpointing(True)  # an eager training feature: scripting compiles the plain path
    try:
        scripted = _scripted(model)
    finally:
        model.set_grad_checkpointing(False)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save/load are deprecated in torch 2.14
        torch.jit.save(scripted, buffer)  # no Python left in the module: it saves and loads
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x64), want)
        torch.testing.assert_close(loaded(x64), want)


@pytest.mark.parametrize("name", ["van_b0", "smt_t"])
def test_jit_script_features_only(name, builder):
    # timm's own FeatureGetterNet (and our stand-in) script, as for timm's ConvNeXt
    torch.manual_seed(0)
    features = lk.create_model(name, depths=SMALL["depths"], features_only=True, out_indices=(1, -1)).eval()
    scripted = _scripted(features)
    with torch.no_grad():
        got, want = scripted(x64), features(x64)
    assert [t.shape[1] for t in got] == features.feature_info.channels()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_scripted_take_indices_agrees_with_eager():
    # what a scripted forward_intermediates (timm's FeatureGetterNet) selects, against the eager helper
    from largekernel.models._common import _take_indices_scripted

    scripted = _scripted(_take_indices_scripted)
    for indices in (None, 1, 4, [0], [3, 1], [-1, 0], [-4]):
        assert tuple(scripted(4, indices, "NCHW")) == take_indices(4, indices)
    for indices, fmt in ((0, "NCHW"), (5, "NCHW"), ([4], "NCHW"), ([1, -3], "NCHW"), (None, "CHW")):
        with pytest.raises(torch.jit.Error, match="forward_intermediates: "):
            scripted(4, indices, fmt)


# -- the same calls through timm.create_model -----------------------------------------------------
def test_timm_surface():
    timm = pytest.importorskip("timm")
    from timm.optim import create_optimizer_v2

    model = timm.create_model("van_b0", num_classes=5, global_pool="max", depths=(1, 1, 1, 1))
    assert model.global_pool == "max" and model.num_classes == 5 and model.head_hidden_size == 256
    cfg = model.pretrained_cfg
    assert (
        cfg["crop_pct"] == 0.9 and cfg["interpolation"] == "bicubic" and cfg["first_conv"] == "stages.0.downsample.proj"
    )
    assert cfg["classifier"] == "head" and model.default_cfg == cfg
    on_meta = timm.create_model("van_b6", device="meta")  # 200M parameters, shapes only
    assert next(on_meta.parameters()).device.type == "meta"
    features = timm.create_model(
        "smt_t", features_only=True, out_indices=(0, 2), feature_cls="getter", depths=(1, 1, 2, 1)
    )
    assert type(features).__name__ == "FeatureGetterNet" and features.feature_info.channels() == [64, 256]
    assert [t.shape[1] for t in features(x64)] == [64, 256]
    # layer-wise lr decay: one lr scale per depth (stem, each block, the norms), as for ConvNeXt
    optimizer = create_optimizer_v2(timm.create_model("van_b0", depths=(1, 1, 2, 1)), "adamw", lr=1e-3, layer_decay=0.7)
    scales = {round(group["lr_scale"], 6) for group in optimizer.param_groups}
    assert len(scales) == 1 + 5 + 1  # stem, five blocks, final group
    no_decay = [g for g in optimizer.param_groups if g["weight_decay"] == 0]
    assert no_decay  # 1-d tensors (biases, norms, layer scales) excluded from weight decay
