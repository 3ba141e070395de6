"""Issue 16 items for models and checkpoints: each failed before its fix."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from model_helpers import randomize_
from safetensors.torch import save_file

import largekernel as lk
from largekernel import checkpoint_io
from largekernel.errors import CheckpointError, ConfigurationError
from largekernel.models.van import to_hf_layout, to_mmpretrain_layout

TINY = {"depths": (1, 1, 2, 1), "num_classes": 10}


def _van(**overrides):
    return lk.create_model("van_b0", **{**TINY, **overrides}).eval()


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_self_referencing_checkpoint_is_refused_not_looped(tmp_path):
    payload: dict = {"x": 1}
    payload["model"] = payload
    path = tmp_path / "loop.pth"
    torch.save(payload, path)
    outcome: list = []

    def load():
        try:
            lk.load_checkpoint(_van(), path)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "load_checkpoint hangs on a self-referencing checkpoint"
    assert isinstance(outcome[0], CheckpointError) and "refers to itself" in str(outcome[0])


def test_integer_and_bool_tensors_in_safetensors_are_refused(tmp_path):
    state = _van().state_dict()
    state["stages.0.blocks.0.layer_scale_1"] = torch.ones(32, dtype=torch.int64)
    state["head.bias"] = torch.ones(10, dtype=torch.bool)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "ints.safetensors")
    with pytest.raises(CheckpointError, match=r"layer_scale_1 \(int64\).*head\.bias \(bool\)"):
        lk.load_checkpoint(_van(), tmp_path / "ints.safetensors")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in _van().state_dict().items()}
    save_file(half, tmp_path / "half.safetensors")
    lk.load_checkpoint(_van(), tmp_path / "half.safetensors")  # float16 converts, as before


@pytest.mark.parametrize("bad", [{"drop_path_rate": -0.1}, {"drop_path_rate": 1.0}, {"in_chans": 0}])
@pytest.mark.parametrize("name", ["van_b0", "smt_t"])
def test_invalid_arguments_raise_configuration_error(name, bad):
    key = next(iter(bad))
    with pytest.raises(ConfigurationError, match=key):
        lk.create_model(name, **bad)


def test_smt_on_an_empty_batch_works_like_van():
    for name in ("van_b0", "smt_t"):
        model = lk.create_model(name, **TINY).eval()
        with torch.no_grad():
            assert model(torch.randn(0, 3, 32, 32)).shape == (0, 10)


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "van.safetensors"
    dead = tmp_path / f".{target.name}.999999999.tmp"  # a PID no process has
    dead.write_bytes(b"x" * 100)
    alive = tmp_path / f".{target.name}.{os.getppid()}.tmp"  # a running writer: left alone
    alive.write_bytes(b"y")
    lk.save_checkpoint(_van(), target)
    assert not dead.exists() and alive.exists() and target.is_file()
    alive.unlink()
    with checkpoint_io.atomic_write(tmp_path / "last.ckpt") as temporary:
        torch.save({"a": torch.ones(1)}, temporary)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "van.safetensors"]


def test_pretrained_from_a_local_file_through_the_cfg_overlay(tmp_path):
    source = randomize_(_van(num_classes=1000))
    torch.save({"state_dict": source.released_state_dict()}, tmp_path / "van_tiny_754.pth.tar")
    model = lk.create_model(
        "van_b0",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "van_tiny_754.pth.tar")},
        depths=TINY["depths"],
    )
    assert _same(model, source) and model.pretrained_cfg["file"].endswith("van_tiny_754.pth.tar")


def test_timm_train_checkpoint_prefers_ema(tmp_path):
    plain, ema = randomize_(_van(), seed=1), randomize_(_van(), seed=2)
    torch.save(
        {"epoch": 3, "state_dict": plain.state_dict(), "state_dict_ema": ema.state_dict()}, tmp_path / "train.pth.tar"
    )
    assert _same(lk.create_model("van_b0", checkpoint_path=tmp_path / "train.pth.tar", **TINY), ema)


# -- item 9: peer checkpoints and normalisation -------------------------------------------------
def test_headless_hf_vanmodel_loads_with_num_classes_0_and_features_only(tmp_path):
    source = randomize_(_van())
    hf = {
        k.removeprefix("van."): v
        for k, v in to_hf_layout(source.state_dict()).items()
        if not k.startswith("classifier.")
    }
    assert "layernorm.weight" in hf  # VanModel's unused final LayerNorm, without the van. prefix
    torch.save(hf, tmp_path / "pytorch_model.bin")
    headless = lk.create_model(
        "van_b0", depths=TINY["depths"], num_classes=0, checkpoint_path=tmp_path / "pytorch_model.bin"
    )
    assert torch.equal(headless.stages[3].norm.weight, source.stages[3].norm.weight)
    features = lk.create_model(
        "van_b0", depths=TINY["depths"], features_only=True, checkpoint_path=tmp_path / "pytorch_model.bin"
    )
    assert torch.equal(features.model.stages[2].blocks[1].mlp.fc1.weight, source.stages[2].blocks[1].mlp.fc1.weight)


def test_sharded_hf_checkpoint_and_save_pretrained_folder(tmp_path):
    source = randomize_(_van())
    hf = to_hf_layout(source.state_dict())
    keys = sorted(hf)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    folder = tmp_path / "van-hf"
    folder.mkdir()
    for shard, names in shards.items():
        save_file({k: hf[k].contiguous() for k in names}, folder / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, names in shards.items() for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text("{}")
    assert _same(lk.create_model("van_b0", checkpoint_path=folder / "model.safetensors.index.json", **TINY), source)
    assert _same(lk.create_model("van_b0", checkpoint_path=folder, **TINY), source)  # the save_pretrained folder


def test_each_variant_carries_its_training_normalisation():
    for name in lk.list_models():
        cfg = lk.create_model(name, depths=(1, 1, 1, 1), num_classes=0).pretrained_cfg
        if name.startswith("van"):  # VAN / VAN-LSKA: timm's ViT _cfg() in both training repos
            assert (cfg["mean"], cfg["std"], cfg["crop_pct"]) == ((0.5,) * 3, (0.5,) * 3, 0.9), name
        else:  # SMT: Swin's transform: ImageNet mean/std, Resize(256) + CenterCrop(224)
            assert (cfg["mean"], cfg["std"], cfg["crop_pct"]) == (
                (0.485, 0.456, 0.406),
                (0.229, 0.224, 0.225),
                0.875,
            ), name
        assert cfg["interpolation"] == "bicubic" and cfg["input_size"] == (3, 224, 224)
    assert lk.constants.INCEPTION_MEAN == (0.5, 0.5, 0.5)


def test_mmpretrain_file_carries_layernorm_eps(tmp_path):
    source = randomize_(_van())
    torch.save({"state_dict": to_mmpretrain_layout(source.state_dict())}, tmp_path / "mm.pth")
    loaded = lk.create_model("van_b0", checkpoint_path=tmp_path / "mm.pth", **TINY)
    assert [stage.norm.eps for stage in loaded.stages] == [1e-5] * 4
    assert [stage.norm.eps for stage in _van().stages] == [1e-6] * 4  # ours and the authors'


# -- timm.create_model with foreign layouts -----------------------------------------------------
def test_timm_checkpoint_path_and_pretrained_file_convert_layouts(tmp_path):
    timm = pytest.importorskip("timm")
    source = randomize_(_van())
    torch.save(to_hf_layout(source.state_dict()), tmp_path / "hf.bin")
    torch.save({"state_dict": to_mmpretrain_layout(source.state_dict())}, tmp_path / "mm.pth")
    torch.save({"state_dict": source.released_state_dict()}, tmp_path / "released.pth.tar")
    for path in ("hf.bin", "mm.pth", "released.pth.tar"):
        by_path = timm.create_model("van_b0", checkpoint_path=str(tmp_path / path), **TINY)
        assert _same(by_path, source), path
    overlay = timm.create_model(
        "van_b0", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "mm.pth")}, **TINY
    )
    # timm drops a classifier whose class count differs from the cfg's (1000): the rest is loaded
    ours, theirs = overlay.state_dict(), source.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("head."))
    assert not torch.equal(ours["head.weight"], theirs["head.weight"]) and overlay.stages[0].norm.eps == 1e-5
