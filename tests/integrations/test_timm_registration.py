"""timm registration against the real timm: import orders, registry entries, timm's own API."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("timm")


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_largekernel_alone_imports_neither_torch_nor_timm():
    assert _run("import sys, largekernel; print('torch' in sys.modules, 'timm' in sys.modules)") == "False False"


@pytest.mark.parametrize(
    "code",
    [
        "import timm, largekernel; print(timm.is_model('van_b0'), timm.is_model('smt_t'))",  # timm first
        "import largekernel, timm; print(timm.is_model('van_b0'), timm.is_model('smt_t'))",  # largekernel first
    ],
)
def test_registered_in_either_import_order_without_any_largekernel_call(code):
    assert _run(code) == "True True"


def test_registry_holds_our_pretrained_cfgs_and_entrypoints():
    import timm

    import largekernel as lk  # noqa: F401 - registers (timm is imported)

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
