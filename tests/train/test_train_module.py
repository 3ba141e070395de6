"""The recipe pieces: schedule, decay groups, atomic writes, the LightningModule's checks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import largekernel
from largekernel.train.module import (
    AtomicCheckpointIO,
    ImageClassifier,
    atomic_write_bytes,
    parameter_groups,
    warmup_cosine,
)

from train_helpers import TINY_MODEL_ARGS


def test_warmup_then_cosine_closed_form():
    warmup, total = 10, 110
    assert warmup_cosine(0, warmup, total) == pytest.approx(0.1)
    assert warmup_cosine(9, warmup, total) == pytest.approx(1.0)
    assert warmup_cosine(10, warmup, total) == pytest.approx(1.0)
    # half-way through the decay: min + (1 - min) * 0.5 * (1 + cos(pi / 2))
    assert warmup_cosine(60, warmup, total, min_ratio=0.01) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine(110, warmup, total, min_ratio=0.01) == pytest.approx(0.01)
    quarter = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4))
    assert warmup_cosine(35, warmup, total) == pytest.approx(quarter)


def test_no_weight_decay_on_norms_biases_and_layer_scales():
    model = largekernel.create_model("van_lska_tiny", num_classes=3, in_chans=1, kernel_size=7, **TINY_MODEL_ARGS)
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    # independent of the ndim rule: what the names say they are
    for name in no_decay_names:
        assert name.endswith(".bias") or "norm" in name or "layer_scale" in name or ".bn." in name, name
    for name in decay_names:
        assert name.endswith(".weight") and "norm" not in name and "layer_scale" not in name, name
    assert any("layer_scale" in n for n in no_decay_names)
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_atomic_write_keeps_the_old_file_when_the_rename_never_happens(tmp_path: Path, monkeypatch):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")

    def crash(*args, **kwargs):
        raise OSError("killed before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    monkeypatch.undo()
    AtomicCheckpointIO().save_checkpoint({"x": torch.arange(3)}, tmp_path / "c.ckpt")
    assert torch.equal(torch.load(tmp_path / "c.ckpt")["x"], torch.arange(3))


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
    images = torch.randint(0, 255, (16, 1, 2, 2), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.randint(0, 2, (16,))), batch_size=4)
    module = ImageClassifier(_NaNAfterTwo(), num_classes=2, mean=(0.5,), std=(0.5,))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="at step 2 "):
        trainer.fit(module, loader)


def test_wrong_logit_count_is_named():
    module = ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), num_classes=5, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match=r"expected \(batch, 5\)"):
        module._evaluate_batch((torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)))
