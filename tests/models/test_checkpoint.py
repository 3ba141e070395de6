"""Checkpoint loading and saving: wrappers, foreign layouts, safety, mismatches, pretrained offline."""

from __future__ import annotations

import argparse
import copyreg
import os
import sys
import types
import urllib.error
from pathlib import Path

import pytest
import torch
from model_helpers import randomize_

import largekernel as lk
from largekernel.models import checkpoint as checkpoint_module
from largekernel.models.van import checkpoint_filter, to_hf_layout, to_mmpretrain_layout

TINY_VAN = {"depths": (1, 1, 2, 1), "num_classes": 10}


def _van(**overrides):
    return lk.create_model("van_b0", **{**TINY_VAN, **overrides}).eval()


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_load_outputs_bit_identical(tmp_path):
    model = randomize_(_van())
    path = lk.save_checkpoint(model, tmp_path / "van.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["van.safetensors"]  # no temp file left behind
    loaded = lk.create_model("van_b0", checkpoint_path=path, **TINY_VAN).eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert _same_weights(model, loaded)


def test_save_requires_safetensors_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        lk.save_checkpoint(_van(), tmp_path / "van.pth")


@pytest.mark.parametrize("form", ["raw", "state_dict", "model", "module_prefix", "timm_args"])
def test_load_each_wrapper_form(tmp_path, form):
    source = randomize_(_van())
    state = source.state_dict()
    payload = {
        "raw": state,
        "state_dict": {"state_dict": state, "epoch": 7},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "module_prefix": {"state_dict": {"module." + k: v for k, v in state.items()}},
        # timm-style training scripts store their argparse.Namespace next to the weights
        "timm_args": {"state_dict": state, "args": argparse.Namespace(lr=1e-3, model="van_b0"), "arch": "van_b0"},
    }[form]
    path = tmp_path / f"{form}.pth.tar"
    torch.save(payload, path)
    target = _van()
    lk.load_checkpoint(target, path)
    assert _same_weights(source, target)


_EXECUTED = []


def _side_effect(marker: str) -> str:
    _EXECUTED.append(marker)
    return marker


class _Payload:
    def __reduce__(self):
        return (_side_effect, ("code ran",))


def test_pickle_with_arbitrary_object_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _van().state_dict(), "extra": _Payload()}, path)
    _EXECUTED.clear()
    with pytest.raises(ValueError, match=r"refusing to load .*arbitrary code"):
        lk.load_checkpoint(_van(), path)
    assert _EXECUTED == []


def test_refusal_names_the_offending_global(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _van().state_dict(), "hook": _Payload()}, path)
    with pytest.raises(ValueError, match="_side_effect"):
        lk.load_checkpoint(_van(), path)


def test_swin_style_checkpoint_with_a_config_object_loads(tmp_path, monkeypatch):
    # the SMT training code saves a yacs CfgNode next to the weights; it is read as a plain mapping
    yacs_config = types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __reduce_ex__(self, protocol):  # what a yacs node pickles to: class, items, attribute state
            return (copyreg.__newobj__, (type(self),), {"frozen": True}, None, iter(self.items()))

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    yacs_config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", yacs_config)
    source = randomize_(_van())
    path = tmp_path / "smt_style.pth"
    torch.save({"model": source.state_dict(), "config": CfgNode(MODEL=CfgNode(NAME="van_b0")), "epoch": 9}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")  # the loader must not need yacs
    target = _van()
    lk.load_checkpoint(target, path)
    assert _same_weights(source, target)


def test_num_classes_mismatch_drops_classifier_with_warning(tmp_path):
    source = randomize_(_van(num_classes=1000))
    path = lk.save_checkpoint(source, tmp_path / "in1k.safetensors")
    target = _van(num_classes=5)
    fresh_head = target.head.weight.detach().clone()
    with pytest.warns(UserWarning, match="1000 classes, the model 5"):
        lk.load_checkpoint(target, path)
    assert torch.equal(target.head.weight, fresh_head)
    assert torch.equal(target.stages[2].blocks[1].mlp.fc1.weight, source.stages[2].blocks[1].mlp.fc1.weight)
    headless = _van(num_classes=0)
    with pytest.warns(UserWarning, match="no classifier"):
        lk.load_checkpoint(headless, path)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    state = _van().state_dict()
    del state["stages.1.blocks.0.mlp.fc2.bias"]
    state["stages.1.blocks.9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"(?s)missing keys \(1\): stages\.1\.blocks\.0\.mlp\.fc2\.bias.*unexpected keys \(1\): stages\.1\.blocks\.9\.extra\.weight",
    ):
        lk.load_checkpoint(_van(), path)
    lk.load_checkpoint(_van(), path, strict=False)  # non-strict loads what fits

    k7 = tmp_path / "lska_k7.safetensors"
    lk.save_checkpoint(lk.create_model("van_lska_tiny", kernel_size=7, **TINY_VAN), k7)
    with pytest.raises(
        ValueError,
        match=r"shape differences.*conv_spatial_h\.weight: checkpoint \(32, 1, 1, 3\) vs model \(32, 1, 1, 7\)",
    ):
        lk.load_checkpoint(lk.create_model("van_lska_tiny", **TINY_VAN), k7)


def test_missing_file_and_no_state_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        lk.load_checkpoint(_van(), tmp_path / "nothing.pth")
    torch.save({"epoch": 3, "notes": "no weights"}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="found no state_dict"):
        lk.load_checkpoint(_van(), tmp_path / "empty.pth")


def test_features_only_model_loads_a_full_checkpoint(tmp_path):
    source = randomize_(_van())
    path = lk.save_checkpoint(source, tmp_path / "full.safetensors")
    features = lk.create_model(
        "van_b0", features_only=True, out_indices=(0, 1), checkpoint_path=path, depths=TINY_VAN["depths"]
    )
    assert torch.equal(
        features.model.stages[1].blocks[0].attn.proj_1.weight, source.stages[1].blocks[0].attn.proj_1.weight
    )


def test_smt_reference_checkpoint_under_model_key(tmp_path):
    source = randomize_(lk.create_model("smt_t", embed_dims=(16, 16, 32, 32), depths=(1, 1, 2, 1), num_classes=10))
    torch.save({"model": source.state_dict(), "epoch": 300, "max_accuracy": 82.2}, tmp_path / "smt.pth")
    target = lk.create_model(
        "smt_t", embed_dims=(16, 16, 32, 32), depths=(1, 1, 2, 1), num_classes=10, checkpoint_path=tmp_path / "smt.pth"
    )
    assert _same_weights(source, target)
    # a detector's checkpoint: backbone.* plus neck/head weights
    detector = {"backbone." + k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    detector["neck.lateral.weight"] = torch.zeros(3)
    torch.save({"state_dict": detector}, tmp_path / "det.pth")
    backbone = lk.create_model(
        "smt_t",
        embed_dims=(16, 16, 32, 32),
        depths=(1, 1, 2, 1),
        features_only=True,
        checkpoint_path=tmp_path / "det.pth",
    )
    assert torch.equal(backbone.model.stages[2].blocks[1].attn.kv.weight, source.stages[2].blocks[1].attn.kv.weight)


# -- foreign layouts: HuggingFace transformers VanModel and mmpretrain VAN ------------------------
# Written out from HF's modeling_van.py (VanLayer / VanStage / VanForImageClassification).
HF_FIRST_LAYER = {
    f"van.encoder.stages.0.layers.0.{name}"
    for name in [
        *(f"pre_normomalization.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        *(f"post_normalization.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        "attention.pre_projection.conv.weight",
        "attention.pre_projection.conv.bias",
        "attention.attention_layer.attention.depth_wise.weight",
        "attention.attention_layer.attention.depth_wise.bias",
        "attention.attention_layer.attention.depth_wise_dilated.weight",
        "attention.attention_layer.attention.depth_wise_dilated.bias",
        "attention.attention_layer.attention.point_wise.weight",
        "attention.attention_layer.attention.point_wise.bias",
        "attention.post_projection.weight",
        "attention.post_projection.bias",
        "attention_scaling.weight",
        "mlp_scaling.weight",
        "mlp.in_dense.weight",
        "mlp.in_dense.bias",
        "mlp.depth_wise.weight",
        "mlp.depth_wise.bias",
        "mlp.out_dense.weight",
        "mlp.out_dense.bias",
    ]
}
HF_OTHERS = {
    "van.encoder.stages.0.embeddings.convolution.weight",
    "van.encoder.stages.0.embeddings.convolution.bias",
    "van.encoder.stages.0.embeddings.normalization.running_var",
    "van.encoder.stages.0.normalization.weight",
    "van.encoder.stages.3.normalization.bias",
    "van.layernorm.weight",
    "van.layernorm.bias",
    "classifier.weight",
    "classifier.bias",
}
# Written out from mmpretrain's backbones/van.py (VAN, VANBlock, LKA, MixFFN) and LinearClsHead.
MM_FIRST_BLOCK = {
    f"backbone.blocks1.0.{name}"
    for name in [
        *(f"norm1.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        *(f"norm2.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        "attn.proj_1.weight",
        "attn.proj_1.bias",
        "attn.proj_2.weight",
        "attn.proj_2.bias",
        "attn.spatial_gating_unit.DW_conv.weight",
        "attn.spatial_gating_unit.DW_conv.bias",
        "attn.spatial_gating_unit.DW_D_conv.weight",
        "attn.spatial_gating_unit.DW_D_conv.bias",
        "attn.spatial_gating_unit.conv1.weight",
        "attn.spatial_gating_unit.conv1.bias",
        "layer_scale_1",
        "layer_scale_2",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.dwconv.weight",
        "mlp.dwconv.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
}
MM_OTHERS = {
    "backbone.patch_embed1.projection.weight",
    "backbone.patch_embed1.projection.bias",
    "backbone.patch_embed1.norm.running_mean",
    "backbone.norm1.weight",
    "backbone.norm4.bias",
    "head.fc.weight",
    "head.fc.bias",
}


def test_hf_layout_round_trip_and_load(tmp_path):
    model = randomize_(_van())
    ours = model.state_dict()
    hf = to_hf_layout(ours)
    assert {k for k in hf if k.startswith("van.encoder.stages.0.layers.0.")} == HF_FIRST_LAYER
    assert HF_OTHERS <= hf.keys() and len(hf) == len(ours) + 2  # + HF's unused final layernorm
    back = checkpoint_filter(hf)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)
    again = to_hf_layout(back)
    assert again.keys() == hf.keys() and all(torch.equal(again[k], hf[k]) for k in hf)
    # an HF hub file (pytorch_model.bin) loads through the public API
    torch.save(hf, tmp_path / "pytorch_model.bin")
    loaded = lk.create_model("van_b0", checkpoint_path=tmp_path / "pytorch_model.bin", **TINY_VAN).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_mmpretrain_layout_round_trip_and_load(tmp_path):
    model = randomize_(_van())
    ours = model.state_dict()
    mm = to_mmpretrain_layout(ours)
    assert {k for k in mm if k.startswith("backbone.blocks1.0.")} == MM_FIRST_BLOCK
    assert MM_OTHERS <= mm.keys() and len(mm) == len(ours)
    back = checkpoint_filter(mm)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)
    assert to_mmpretrain_layout(back).keys() == mm.keys()
    torch.save({"meta": {"epoch": 300}, "state_dict": mm}, tmp_path / "mmpretrain.pth")
    loaded = lk.create_model("van_b0", checkpoint_path=tmp_path / "mmpretrain.pth", **TINY_VAN)
    assert _same_weights(loaded, model)


def test_van_detection_checkpoint_in_reference_names(tmp_path):
    # VAN's own detection/segmentation code: backbone.* with the reference names, plus neck/head
    source = randomize_(_van())
    state = {"backbone." + k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    state["decode_head.conv_seg.weight"] = torch.zeros(2, 2)
    torch.save({"meta": {"iter": 160000}, "state_dict": state}, tmp_path / "upernet.pth")
    backbone = lk.create_model(
        "van_b0", features_only=True, depths=TINY_VAN["depths"], checkpoint_path=tmp_path / "upernet.pth"
    )
    assert torch.equal(
        backbone.model.stages[2].blocks[1].mlp.dwconv.dwconv.weight, source.stages[2].blocks[1].mlp.dwconv.dwconv.weight
    )


def test_mm_lska_layout_round_trip():
    ours = lk.create_model("van_lska_tiny", **TINY_VAN).state_dict()
    mm = to_mmpretrain_layout(ours)
    assert "backbone.blocks1.0.attn.spatial_gating_unit.DW_D_conv_h.weight" in mm
    assert checkpoint_filter(mm).keys() == ours.keys()


# -- pretrained=True: known locations, never downloading in tests ---------------------------------
def test_pretrained_offline_says_which_file_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, destination, progress=True):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(checkpoint_module.WeightsUnavailableError) as error:
        lk.create_model("van_b0", pretrained=True)
    message = str(error.value)
    assert (
        "https://huggingface.co/Visual-Attention-Network/VAN-Tiny-original/resolve/main/van_tiny_754.pth.tar" in message
    )
    assert "checkpoint_path" in message and str(tmp_path) in message


def test_pretrained_uses_cached_file_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = randomize_(lk.create_model("smt_t", depths=(1, 1, 2, 1)))
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"model": source.state_dict()}, cache / "smt_tiny.pth")

    def must_not_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", must_not_download)
    assert _same_weights(lk.create_model("smt_t", pretrained=True, depths=(1, 1, 2, 1)), source)


def test_pretrained_unknown_location_and_conflicting_arguments(tmp_path):
    with pytest.raises(ValueError, match="no public download location is known for 'van_b4'"):
        lk.create_model("van_b4", pretrained=True, depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="not both"):
        lk.create_model("van_b0", pretrained=True, checkpoint_path=os.fspath(tmp_path / "x.pth"))
