"""timm registration against the real timm: import orders, registry entries, timm's own API."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("timm")


def _run_all(programs: list[str]) -> list[str]:
    # fresh interpreters, started together (each imports torch and timm)
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for code in programs
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_registered_in_either_import_order_and_import_alone_stays_light():
    timm_first = "import timm, largekernel; print(timm.is_model('van_b0'), timm.is_model('smt_t'))"
    largekernel_first = (
        "import sys, largekernel; light = ('torch' in sys.modules, 'timm' in sys.modules); "
        "import timm; print(light, timm.is_model('van_b0'), timm.is_model('smt_t'))"
    )
    assert _run_all([timm_first, largekernel_first]) == ["True True", "(False, False) True True"]


def test_registry_holds_our_pretrained_cfgs_and_entrypoints():
    import timm

    import largekernel as lk

    assert set(lk.list_models()) <= set(timm.list_models("*"))
    cfg = timm.models.get_pretrained_cfg("van_b0")
    assert cfg.tag == "in1k" and cfg.mean == (0.5, 0.5, 0.5) and cfg.crop_pct == 0.9 and cfg.interpolation == "bicubic"
    assert cfg.first_conv == "stages.0.downsample.proj" and cfg.classifier == "head"
    smt = timm.models.get_pretrained_cfg("smt_l")
    assert smt.tag == "in22k_ft_in1k" and smt.mean == (0.485, 0.456, 0.406) and smt.crop_pct == 0.875
    assert "van_b0.in1k" in timm.list_pretrained("van_b0*")


def test_real_timm_creates_our_models():
    import timm

    model = timm.create_model("smt_t", pretrained=False, num_classes=5, depths=(1, 1, 2, 1))
    assert type(model).__name__ == "SMT" and model.num_classes == 5
    assert model.pretrained_cfg["architecture"] == "smt_t" and model.default_cfg is model.pretrained_cfg
