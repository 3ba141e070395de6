"""Segmenters on any backbone: shapes, the registry names, checkpoints in the released and mmseg
layouts, sliding-window inference and ONNX export (checked in onnxruntime)."""

from __future__ import annotations

import re

import pytest
import torch

import largekernel as lk
from largekernel.segmentation import Segmenter, create_segmenter, list_segmenters, slide_inference

TINY_VAN = {"depths": [1, 1, 1, 1], "embed_dims": [8, 16, 24, 32], "mlp_ratios": [2, 2, 2, 2]}
TINY_UPERNET = {"channels": 16, "aux_channels": 8}
TINY_FPN = {"neck_channels": 16, "channels": 8}


def tiny(head: str = "upernet", num_classes: int = 5, backbone: str = "van_b0", **kwargs) -> Segmenter:
    head_args = TINY_UPERNET if head == "upernet" else TINY_FPN
    return create_segmenter(
        backbone,
        head,
        num_classes,
        backbone_args=TINY_VAN if backbone.startswith("van") else kwargs.pop("backbone_args"),
        **{**head_args, **kwargs},
    )


@pytest.mark.parametrize("head", ["fpn", "upernet"])
@pytest.mark.parametrize("size", [(64, 64), (45, 71)])
def test_logits_at_input_resolution(head, size) -> None:
    model = tiny(head).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 5, *size)
    model.train()
    logits, aux = model.forward_heads(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5, 16, 16)  # stride 4
    assert (aux is None) == (head == "fpn") and (aux is None or aux.shape == (2, 5, 4, 4))  # stride 16


def test_other_families_through_features_only() -> None:
    model = create_segmenter("smt_t", "fpn", 3, backbone_args={"depths": [1, 1, 1, 1]}, **TINY_FPN).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    lska = create_segmenter("van_lska_tiny", "upernet", 3, backbone_args={"depths": [1, 1, 1, 1]}, **TINY_UPERNET)
    lska_backbone = lk.create_model("van_lska_tiny", features_only=True, out_indices=(0, 1, 2, 3), depths=[1, 1, 1, 1])
    assert lska.backbone.state_dict().keys() == lska_backbone.state_dict().keys()


def test_registry_names() -> None:
    model = lk.create_model("van_b0_upernet", num_classes=150, depths=[1, 1, 1, 1], channels=16, aux_channels=8)
    assert isinstance(model, Segmenter) and model.decode_head.conv_seg.out_channels == 150
    same_backbone = lk.create_model("van_b0", features_only=True, out_indices=(0, 1, 2, 3), depths=[1, 1, 1, 1])
    assert model.backbone.state_dict().keys() == same_backbone.state_dict().keys()
    assert "van_b2_upernet" in list_segmenters() and "van_lska_small_fpn" in list_segmenters("van_lska_*")
    assert not any(name.endswith(("_fpn", "_upernet")) for name in lk.list_models())  # classifiers only
    with pytest.raises(ValueError, match="unknown model"):
        lk.create_model("van_b9_upernet")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown segmentation head 'deeplab'"):
        create_segmenter("van_b0", "deeplab", 3)
    with pytest.raises(ValueError, match="num_classes"):
        create_segmenter("van_b0", "fpn", 0)
    with pytest.raises(ValueError, match="may not set 'out_indices'"):
        create_segmenter("van_b0", "fpn", 3, backbone_args={"out_indices": (3,)})


def test_released_backbone_checkpoint_loads_into_the_backbone(tmp_path) -> None:
    # the VAN-Classification release: reference key names, a 1000-class head, wrapped in 'state_dict'
    from largekernel.models.van import to_released_layout

    classifier = lk.create_model("van_b0", **TINY_VAN)
    released = {"state_dict": to_released_layout(classifier.state_dict())}
    assert (
        "head.weight" in released["state_dict"]
        and "block1.0.attn.spatial_gating_unit.conv0.weight" in released["state_dict"]
    )
    path = tmp_path / "van_b0.pth"
    torch.save(released, path)
    model = create_segmenter("van_b0", "upernet", 5, backbone_checkpoint=path, backbone_args=TINY_VAN, **TINY_UPERNET)
    ours = classifier.state_dict()
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, ours[key.removeprefix("model.")], msg=key)


# mmpretrain's VAN names for ours (mmseg 1.x builds its VAN backbone from mmpretrain)
_MMPRETRAIN_NAMES = [
    (r"^patch_embed(\d)\.proj\.", r"patch_embed\1.projection."),
    (r"^block(\d)\.", r"blocks\1."),
    (r"spatial_gating_unit\.conv0\.", "spatial_gating_unit.DW_conv."),
    (r"spatial_gating_unit\.conv_spatial\.", "spatial_gating_unit.DW_D_conv."),
    (r"mlp\.dwconv\.dwconv\.", "mlp.dwconv."),
]


def _van_segmentation_layout(model: Segmenter) -> dict[str, torch.Tensor]:
    """VAN-Segmentation's checkpoint keys: the reference VAN names (``block1.0``...) under ``backbone.``."""
    from largekernel.models.van import to_released_layout

    state = model.state_dict()
    backbone = {
        k.removeprefix("backbone.").removeprefix("model."): v for k, v in state.items() if k.startswith("backbone.")
    }
    released = {f"backbone.{k}": v for k, v in to_released_layout(backbone).items()}
    return {**released, **{k: v for k, v in state.items() if not k.startswith("backbone.")}}


def _to_mmseg(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VAN-Segmentation keys in mmseg 1.x's layout (written here, independently of the package's converter)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            rest = key[len("backbone.") :]
            for pattern, replacement in _MMPRETRAIN_NAMES:
                rest = re.sub(pattern, replacement, rest)
            key = "backbone." + rest
        out[key] = value
    return out


def test_mmseg_checkpoint_converts_and_loads(tmp_path) -> None:
    source = tiny("upernet").eval()
    mmseg_state = _to_mmseg(_van_segmentation_layout(source))
    # the mapping really renames: these are mmseg's names, not ours
    assert (
        "backbone.patch_embed1.projection.weight" in mmseg_state
        and "backbone.blocks1.0.attn.spatial_gating_unit.DW_conv.weight" in mmseg_state
    )
    assert not any(re.match(r"backbone\.block\d", k) for k in mmseg_state)
    path = tmp_path / "upernet_van_b0_mmseg.pth"
    torch.save({"meta": {"CLASSES": ["a"] * 5}, "state_dict": mmseg_state}, path)  # mmseg's checkpoint wrapper
    converted = source.checkpoint_filter(mmseg_state)
    assert set(converted) == set(source.state_dict())
    first_conv = next(k for k in source.state_dict() if k.startswith("backbone.") and k.endswith("proj.weight"))
    torch.testing.assert_close(converted[first_conv], mmseg_state["backbone.patch_embed1.projection.weight"])
    loaded = create_segmenter(
        "van_b0", "upernet", 5, checkpoint_path=path, backbone_args=TINY_VAN, **TINY_UPERNET
    ).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


def test_reference_layout_segmenter_and_dropped_aux_head(tmp_path) -> None:
    # VAN-Segmentation's own checkpoints keep the reference backbone names under 'backbone.'
    source = tiny("upernet").eval()
    path = tmp_path / "van_segmentation.pth"
    assert "backbone.block1.0.attn.proj_1.weight" in _van_segmentation_layout(source)
    torch.save({"state_dict": _van_segmentation_layout(source)}, path)
    with pytest.warns(UserWarning, match="auxiliary_head weights dropped"):
        no_aux = create_segmenter(
            "van_b0", "upernet", 5, checkpoint_path=path, backbone_args=TINY_VAN, aux_head=False, **TINY_UPERNET
        )
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(no_aux.eval()(x), source(x))  # aux is train-time only
    wrong_classes = tmp_path / "wrong.pth"
    torch.save(tiny("upernet", num_classes=7).state_dict(), wrong_classes)
    with pytest.raises(ValueError, match=r"decode_head\.conv_seg\.weight"):
        create_segmenter("van_b0", "upernet", 5, checkpoint_path=wrong_classes, backbone_args=TINY_VAN, **TINY_UPERNET)


def test_slide_inference_equals_whole_image_for_a_pointwise_model() -> None:
    pointwise = torch.nn.Conv2d(3, 4, 1)  # each pixel's logits depend on that pixel only
    images = torch.randn(2, 3, 37, 50)
    with torch.no_grad():
        torch.testing.assert_close(slide_inference(pointwise, images, 4, crop_size=16, stride=11), pointwise(images))
        torch.testing.assert_close(slide_inference(pointwise, images, 4, crop_size=64, stride=40), pointwise(images))
    with pytest.raises(ValueError, match="crop_size >= stride"):
        slide_inference(pointwise, images, 4, crop_size=8, stride=9)


def test_slide_inference_averages_overlapping_windows() -> None:
    class WindowSize(torch.nn.Module):  # logits = the window's width: shows which windows covered a pixel
        def forward(self, x):
            return torch.full((x.shape[0], 1, *x.shape[2:]), float(x.shape[-1]))

    out = slide_inference(WindowSize(), torch.zeros(1, 3, 10, 10), 1, crop_size=10, stride=5)
    assert torch.equal(out, torch.full((1, 1, 10, 10), 10.0))


@pytest.mark.parametrize("head", ["fpn", "upernet"])
def test_onnx_export_with_dynamic_height_and_width(tmp_path, head) -> None:
    pytest.importorskip("onnxruntime")
    from largekernel.export import check_onnx, export_onnx

    model = tiny(head).eval()
    path = export_onnx(model, tmp_path / f"{head}.onnx", img_size=64)
    for shape in [(1, 3, 96, 64), (2, 3, 45, 77)]:  # neither is the traced 64 x 64
        check = check_onnx(path, model, input_shape=shape, repeats=1)
        assert check.max_abs_diff < 1e-4 * max(1.0, check.max_abs_output), check
