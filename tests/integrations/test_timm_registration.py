"""timm registration: with a stand-in timm registry here, with the real timm where it imports."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import largekernel as lk
from largekernel.integrations import timm as timm_bridge


@pytest.fixture
def fresh_bridge(monkeypatch):
    monkeypatch.setattr(timm_bridge, "_REGISTERED", [])
    monkeypatch.setattr(timm_bridge._timm_entrypoints, "__all__", [])
    return timm_bridge


def test_skipped_cleanly_when_timm_cannot_import(fresh_bridge, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    monkeypatch.setitem(sys.modules, "timm.models", None)
    assert fresh_bridge.register_timm_models() == []
    fresh_bridge.register_if_timm_imported()  # no error, nothing registered
    assert fresh_bridge._REGISTERED == []


def test_registers_every_model_in_a_timm_style_registry(fresh_bridge, monkeypatch):
    entrypoints = {"resnet50": object()}
    fake_models = types.ModuleType("timm.models")
    fake_models.is_model = lambda name: name in entrypoints
    def register_model(fn):  # what timm does with the defining module, in short
        sys.modules[fn.__module__].__all__.append(fn.__name__)
        return entrypoints.setdefault(fn.__name__, fn)

    fake_models.register_model = register_model
    fake_timm = types.ModuleType("timm")
    fake_timm.models = fake_models
    monkeypatch.setitem(sys.modules, "timm", fake_timm)
    monkeypatch.setitem(sys.modules, "timm.models", fake_models)

    lk.create_model("van_b0", depths=(1, 1, 1, 1))  # timm already imported: registration happens here
    assert set(lk.list_models()) <= set(entrypoints)
    model = entrypoints["van_lska_tiny"](pretrained=False, num_classes=3, depths=(1, 1, 1, 1), pretrained_cfg=None)
    assert model.attention == "lska" and model.kernel_size == 23
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert fresh_bridge.register_timm_models() == lk.list_models()  # idempotent
    module = sys.modules[entrypoints["smt_t"].__module__]
    assert all(getattr(module, name) is entrypoints[name] for name in module.__all__)


def test_real_timm_creates_our_models(fresh_bridge):
    timm = pytest.importorskip("timm")
    fresh_bridge.register_timm_models()
    model = timm.create_model("smt_t", pretrained=False, num_classes=5, depths=(1, 1, 2, 1))
    assert type(model).__name__ == "SMT" and model.num_classes == 5
