"""The recipe through timm: resolved settings, optimizer groups, schedule, Mixup, EMA, safe checkpoints."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from train_helpers import REPO, TINY_MODEL_ARGS

import largekernel
from largekernel.checkpoint_io import atomic_write_bytes
from largekernel.errors import CheckpointError, ConfigurationError
from largekernel.train.config import RECIPES, TrainConfig, resolve_config
from largekernel.train.files import read_lightning_checkpoint
from largekernel.train.module import ImageClassifier


def test_recipes_resolve_to_the_published_settings_scaled_by_the_global_batch():
    # SMT (Swin's script): lr 1e-3 per 512 images, linear: 8 GPUs x 128 -> 2e-3, warmup/min lr likewise
    smt = resolve_config(TrainConfig(data="/tmp", model="smt_s", batch_size=128), world_size=8)
    assert smt.recipe == "smt" and smt.lr == pytest.approx(2e-3) and smt.min_lr == pytest.approx(2e-6)
    assert smt.warmup_lr == pytest.approx(2e-7) and smt.drop_path == 0.2 and smt.clip_grad == 5.0
    assert (smt.mixup, smt.cutmix, smt.epochs, smt.warmup_epochs, smt.weight_decay) == (0.2, 1.0, 300, 5.0, 0.05)
    # VAN: 1e-3 at 8 x 128; b3 has drop path 0.2; 300 + 10 cool-down epochs
    van = resolve_config(TrainConfig(data="/tmp", model="van_b3", batch_size=128), world_size=8)
    assert van.recipe == "van" and van.lr == pytest.approx(1e-3) and van.drop_path == 0.2
    assert (van.mixup, van.cutmix, van.reprob, van.auto_augment) == (0.8, 1.0, 0.25, "rand-m9-mstd0.5-inc1")
    assert (van.epochs, van.cooldown_epochs, van.model_ema) == (300, 10, False)
    # LSKA's script: 1e-3 at 2 x 64
    assert resolve_config(
        TrainConfig(data="/tmp", model="van_lska_small", batch_size=64), world_size=2
    ).lr == pytest.approx(1e-3)
    # the embedded digits: the light recipe; explicit options win, the lr is then taken as given
    digits = resolve_config(TrainConfig(lr=5e-3, epochs=3, mixup=0.3))
    assert digits.recipe == "digits" and digits.lr == 5e-3 and digits.epochs == 3 and digits.mixup == 0.3
    assert digits.min_lr == pytest.approx(5e-3 * RECIPES["digits"]["min_lr"] / RECIPES["digits"]["lr_base"])
    # resolving twice changes nothing (resume reads the resolved run.json)
    assert resolve_config(van, world_size=8) == van


def test_relative_data_is_stored_resolved(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_config(TrainConfig(data="images")).data == str(tmp_path / "images")


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"weight_decay": -0.1}, "--weight-decay"),
        ({"warmup_epochs": -1.0}, "--warmup-epochs"),
        ({"drop_path": -0.2}, "--drop-path"),
        ({"lr": 0.0}, "--lr"),
        ({"threads": 0}, "--threads"),
        ({"mixup": -1.0}, "--mixup"),
        ({"scale": [0.5, 2.0]}, "--scale"),
        ({"epochs": 0}, "--epochs"),
    ],
)
def test_bad_settings_are_refused_naming_the_option(overrides, option):
    with pytest.raises(ConfigurationError, match=option):
        resolve_config(TrainConfig(**overrides))


def _tiny_model() -> nn.Module:
    return largekernel.create_model("van_lska_tiny", num_classes=3, in_chans=1, kernel_size=7, **TINY_MODEL_ARGS)


def _attach(module: ImageClassifier, steps: int, epochs: int) -> None:
    module._trainer = SimpleNamespace(
        estimated_stepping_batches=steps, max_epochs=epochs
    )  # what configure_optimizers reads


def test_optimizer_is_timms_adamw_without_decay_on_norms_biases_and_layer_scales():
    model = _tiny_model()
    module = ImageClassifier(model, 3, config=resolve_config(TrainConfig(weight_decay=0.05)))
    _attach(module, 100, 10)
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    # independent of the ndim rule: what the names say they are
    for name in by_decay[0.0]:
        assert name.endswith(".bias") or "norm" in name or "layer_scale" in name or ".bn." in name, name
    for name in by_decay[0.05]:
        assert name.endswith(".weight") and "norm" not in name and "layer_scale" not in name, name
    assert any("layer_scale" in n for n in by_decay[0.0])
    assert len(by_decay[0.0]) + len(by_decay[0.05]) == len(list(model.parameters()))


def test_schedule_is_linear_warmup_then_cosine_per_step():
    config = resolve_config(TrainConfig(lr=1e-2, warmup_lr=0.0, min_lr=1e-4, warmup_epochs=1.0, epochs=10))
    module = ImageClassifier(_tiny_model(), 3, config=config)
    _attach(module, 100, 10)  # 10 steps per epoch: 10 warmup steps of 100
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    optimizer = scheduler.optimizer

    def lr_after(step: int) -> float:
        module._trainer.global_step = step
        module.lr_scheduler_step(scheduler, None)  # what Lightning calls after each optimizer step
        return optimizer.param_groups[0]["lr"]

    assert lr_after(5) == pytest.approx(1e-2 * 5 / 10)  # linear warmup from 0
    # after warmup (timm: t counted from 0, warmup inside t_initial): min + (max - min) (1 + cos(pi t / T)) / 2
    for step in (10, 40, 70, 99):
        expected = 1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * step / 100))
        assert lr_after(step) == pytest.approx(expected, rel=1e-6)


def test_mixup_uses_timms_soft_targets_and_ema_is_what_is_evaluated():
    from timm.data import Mixup
    from timm.utils import ModelEmaV3

    config = resolve_config(TrainConfig(mixup=0.8, cutmix=1.0, model_ema=True))
    module = ImageClassifier(_tiny_model(), 3, config=config)
    assert isinstance(module.mixup, Mixup) and isinstance(module.model_ema, ModelEmaV3)
    images = torch.randn(4, 1, 16, 16)
    module.eval()
    torch.testing.assert_close(module(images), module.model_ema.module(images))
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.add_(1.0)
    assert not torch.allclose(module(images), module.model(images))  # the EMA, not the raw weights
    module.model_ema.update(module.model, step=10_000)  # a late step: decay close to 0.998
    decay = module.model_ema.get_decay(10_000)
    assert 0.99 < decay < 1.0


def test_atomic_write_keeps_the_old_file_when_the_rename_never_happens(tmp_path: Path, monkeypatch):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")

    def crash(*args, **kwargs):
        raise OSError("killed before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # no temporary left behind


class _Planted:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_planted_checkpoint_even_when_torch_is_told_to_unpickle_everything(tmp_path: Path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "code-ran"
    payload = _Planted()
    payload.marker = marker
    torch.save({"state_dict": {}, "epoch": 0, "x": payload}, run / "checkpoints" / "last.ckpt")
    config = resolve_config(
        TrainConfig(epochs=1, batch_size=500, out=str(run), quiet=True, model_args={"depths": [1, 1, 1]})
    )
    (run / "run.json").write_text(json.dumps(config.to_json()))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "largekernel", "train", "--out", str(run), "--resume"],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2 and "could run code" in completed.stderr, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr and not marker.exists()


def test_broken_lightning_checkpoints_name_the_file(tmp_path: Path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(2)}, "epoch": 1}, good)
    assert read_lightning_checkpoint(good)["epoch"] == 1
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:200])
    (tmp_path / "noise.ckpt").write_bytes(os.urandom(300))
    for name in ("empty.ckpt", "cut.ckpt", "noise.ckpt"):
        with pytest.raises(CheckpointError, match=name) as info:
            read_lightning_checkpoint(tmp_path / name)
        assert "\n" not in str(info.value)
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"list\.ckpt holds a list"):
        read_lightning_checkpoint(tmp_path / "list.ckpt")


class _NaNAfterTwo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.linear(x.flatten(1))
        return out * float("nan") if self.calls > 2 else out


def test_non_finite_loss_stops_with_the_step_number(tmp_path: Path):
    images = torch.randn(16, 1, 2, 2)
    loader = DataLoader(TensorDataset(images, torch.randint(0, 2, (16,))), batch_size=4)
    config = resolve_config(TrainConfig(model_ema=False, epochs=1))
    module = ImageClassifier(_NaNAfterTwo(), num_classes=2, config=config)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="at step 2 "):
        trainer.fit(module, loader)


def test_wrong_logit_count_is_named():
    module = ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), num_classes=5)
    with pytest.raises(ValueError, match=r"expected \(batch, 5\)"):
        module._evaluate_batch((torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)))
