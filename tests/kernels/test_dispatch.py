"""The backend switch and 'auto' (fake timers), the op under compile/export, and the layer defects of issue 16/11."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import largekernel as lk
from largekernel import kernels
from largekernel.kernels import cpu as cpu_kernels
from largekernel.kernels import dispatch, ops

LAYERS = [(lk.LSKA, 11), (lk.LKA, 7), (lk.LSKATrivial, 5), (lk.LKATrivial, 5)]
IDS = [c.__name__ for c, _ in LAYERS]


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Lightning's deterministic=True (an earlier test's training run) leaves deterministic algorithms on,
    # which makes 'auto' a fixed choice: these tests want the timed one
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    dispatch.clear_autotune_cache()
    yield
    dispatch.clear_autotune_cache()
    torch.use_deterministic_algorithms(deterministic)


def _randomised(cls, k, dim=4):
    torch.manual_seed(0)
    module = cls(dim, k)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


def _independent(module, x):
    """The layer's maths written with F.conv2d from its parameters (not through the layer)."""
    h = x
    for name in ("conv0h", "conv0v", "conv_spatial_h", "conv_spatial_v", "conv0", "conv_spatial"):
        conv = getattr(module, name, None)
        if conv is not None:
            h = F.conv2d(h, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    return x * F.conv2d(h, module.conv1.weight, module.conv1.bias)


def _fake_timer(times):
    def measure(name, run, device):
        run()  # the candidate really runs (a failing one must raise here)
        return times[name]

    return measure


# --- the switch -----------------------------------------------------------------------------------


def test_set_backend_context_manager_and_bad_names():
    assert kernels.get_backend() == "auto"
    with kernels.backend("torch"):
        assert kernels.get_backend() == "torch"
        with kernels.backend("cpu_nhwc"):
            assert kernels.get_backend() == "cpu_nhwc"
        assert kernels.get_backend() == "torch"
    assert kernels.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'triton', 'cpu_nhwc'; got 'fast'"):
        kernels.set_backend("fast")


def test_environment_variable_sets_backend_and_rejects_typos():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LARGEKERNEL_BACKEND": "torch"}
    code = "from largekernel import kernels; print(kernels.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "torch", out.stderr
    env["LARGEKERNEL_BACKEND"] = "cuda"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "LARGEKERNEL_BACKEND" in out.stderr


# --- auto: the choice follows the timings, failures fall back, results equal the plain path -----------


@pytest.mark.parametrize("fastest", ["torch", "cpu_nhwc"])
def test_auto_picks_the_fastest_and_caches_it(monkeypatch, fastest):
    timings = {"torch": 2.0, "cpu_nhwc": 1.0} if fastest == "cpu_nhwc" else {"torch": 1.0, "cpu_nhwc": 2.0}
    measured = []
    monkeypatch.setattr(dispatch, "_measure", lambda n, r, d: measured.append(n) or _fake_timer(timings)(n, r, d))
    calls = []
    original = cpu_kernels.cascade_forward
    monkeypatch.setattr(cpu_kernels, "cascade_forward", lambda *a: calls.append(1) or original(*a))
    module = _randomised(lk.LSKA, 11)
    x = torch.randn(2, 4, 9, 8)
    with torch.no_grad():
        want = _independent(module, x)
        got = module(x)
        calls.clear()
        again = module(x)
    assert sorted(measured) == ["cpu_nhwc", "torch"]  # timed once, then cached
    assert (len(calls) == 1) == (fastest == "cpu_nhwc")
    ((key, choice),) = kernels.autotune_choices().items()
    assert choice == fastest and key[-1] == "forward" and key[4] == (2, 4, 9, 8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, want, rtol=1e-5, atol=1e-5)


def test_training_and_forward_are_separate_keys(monkeypatch):
    monkeypatch.setattr(dispatch, "_measure", _fake_timer({"torch": 1.0, "cpu_nhwc": 2.0}))
    module = _randomised(lk.LKA, 7)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        module(x)
    module(x).sum().backward()
    assert sorted(k[-1] for k in kernels.autotune_choices()) == ["forward", "train"]


def test_failing_backend_is_dropped_with_one_warning(monkeypatch):
    monkeypatch.setattr(dispatch, "_measure", _fake_timer({"torch": 2.0, "cpu_nhwc": 1.0}))

    def broken(*args):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(cpu_kernels, "cascade_forward", broken)
    module = _randomised(lk.LSKA, 11)
    x = torch.randn(1, 4, 9, 9, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="'cpu_nhwc' failed.*simulated kernel failure.*plain PyTorch path"):
        y = module(x)
    torch.testing.assert_close(y, _independent(module, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same key
        module(x)
    assert set(kernels.autotune_choices().values()) == {"torch"}


def test_failure_after_the_choice_falls_back_too(monkeypatch):
    monkeypatch.setattr(dispatch, "_measure", lambda n, r, d: {"torch": 2.0, "cpu_nhwc": 1.0}[n])  # runs nothing
    monkeypatch.setattr(cpu_kernels, "cascade_forward", lambda *a: 1 / 0)
    module = _randomised(lk.LKA, 7)
    x = torch.randn(1, 4, 8, 8)
    with pytest.warns(RuntimeWarning, match="ZeroDivisionError"):
        y = module(x)
    torch.testing.assert_close(y, _independent(module, x))
    assert set(kernels.autotune_choices().values()) == {"torch"}


def test_auto_real_timer_gives_plain_results():
    module = _randomised(lk.LKA, 7)
    x = torch.randn(2, 4, 10, 9).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(module(x), _independent(module, x), rtol=1e-5, atol=1e-5)
    assert len(kernels.autotune_choices()) == 1


def test_deterministic_algorithms_choose_without_timing(monkeypatch):
    monkeypatch.setattr(dispatch, "_measure", lambda *a: pytest.fail("timed under deterministic algorithms"))
    torch.use_deterministic_algorithms(True)
    try:
        module = _randomised(lk.LSKA, 11)
        x = torch.randn(1, 4, 8, 8)
        torch.testing.assert_close(module(x), _independent(module, x), rtol=1e-5, atol=1e-5)
    finally:
        torch.use_deterministic_algorithms(False)
    assert not kernels.autotune_choices()


def test_persisted_cache_round_trip(monkeypatch, tmp_path):
    path = tmp_path / "autotune.json"
    monkeypatch.setenv("LARGEKERNEL_AUTOTUNE_CACHE", str(path))
    monkeypatch.setattr(dispatch, "_persisted_loaded", False)
    monkeypatch.setattr(dispatch, "_measure", _fake_timer({"torch": 2.0, "cpu_nhwc": 1.0}))
    module = _randomised(lk.LSKATrivial, 5)
    with torch.no_grad():
        module(torch.randn(1, 4, 6, 6))
    assert path.is_file()
    dispatch.clear_autotune_cache()
    monkeypatch.setattr(dispatch, "_persisted_loaded", False)
    monkeypatch.setattr(dispatch, "_measure", lambda *a: pytest.fail("timed again despite the cache file"))
    with torch.no_grad():
        module(torch.randn(1, 4, 6, 6))
    assert set(kernels.autotune_choices().values()) == {"cpu_nhwc"}


# --- under tracing the choice is deterministic; the op is one node under compile/export -----------


def test_compile_with_auto_sees_plain_convs_without_timing(monkeypatch):
    monkeypatch.setattr(dispatch, "_measure", lambda *a: pytest.fail("timed inside a trace"))
    module = _randomised(lk.LSKA, 11)
    x = torch.randn(1, 4, 8, 8)
    program = torch.export.export(module, (x,))
    targets = {str(node.target) for node in program.graph.nodes}
    assert "aten.conv2d.default" in targets and not any("largekernel" in t for t in targets)


def test_forced_backend_is_one_op_under_export_and_compile():
    module = _randomised(lk.LKA, 7)
    x = torch.randn(2, 4, 9, 8)
    with kernels.backend("cpu_nhwc"):
        program = torch.export.export(module, (x,))
        assert any("largekernel.depthwise_cascade" in str(n.target) for n in program.graph.nodes)
        compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
        xg = x.clone().requires_grad_()
        y = compiled(xg)
        y.sum().backward()
    xr = x.clone().requires_grad_()
    want = _independent(module, xr)
    want.sum().backward()
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frozen", ["params", "input"])
def test_gradients_with_frozen_parameters_or_input(frozen):
    # the ERF case (gradient of the input only, parameters frozen) and a first layer (no input gradient)
    module = _randomised(lk.LSKA, 11)
    x = torch.randn(1, 4, 9, 9, requires_grad=frozen == "params")
    module.requires_grad_(frozen != "params")
    leaves = [x] if frozen == "params" else list(module.parameters())
    with kernels.backend("cpu_nhwc"), warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent fallback to the plain path
        got = torch.autograd.grad(module(x).square().sum(), leaves)
    want = torch.autograd.grad(_independent(module, x).square().sum(), leaves)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    torch.manual_seed(0)
    weights = [torch.randn(3, 1, kh, kw, requires_grad=True) for kh, kw in [(1, 3), (3, 1), (3, 3)]]
    biases = [torch.randn(3, requires_grad=True) for _ in weights]
    x = torch.randn(2, 3, 7, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(ops.depthwise_cascade_op, (x.requires_grad_(), weights, biases, [1, 2, 2], "cpu_nhwc"))


# --- issue 16 / 11 defects, each against the plain path ----------------------------------------------


@pytest.mark.parametrize("cls,k", LAYERS, ids=IDS)
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_cpu_autocast_dtype_and_backward_match_plain(cls, k, grad):
    module = _randomised(cls, k)
    x = torch.randn(2, 4, 8, 9)
    results = {}
    for name in ("torch", "cpu_nhwc"):
        module.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(grad)
        with kernels.backend(name), torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(xi)
        if grad:  # the bf16-mixed training crash was here: the custom backward under autocast
            y.float().square().sum().backward()
        results[name] = (y.detach(), xi.grad, [p.grad for p in module.parameters()])
    (y_plain, gx_plain, gp_plain), (y_fast, gx_fast, gp_fast) = results["torch"], results["cpu_nhwc"]
    assert y_fast.dtype == y_plain.dtype == torch.float32
    scale = y_plain.abs().max().item()
    assert (y_fast - y_plain).abs().max().item() <= 0.03 * scale
    if grad:
        assert gx_fast.dtype == gx_plain.dtype
        for a, b in zip([gx_fast, *gp_fast], [gx_plain, *gp_plain]):
            assert a.dtype == b.dtype and (a - b).abs().max().item() <= 0.05 * b.abs().max().item()


@pytest.mark.parametrize("cls,k", LAYERS, ids=IDS)
def test_torch_func_grad_jacrev_vmap_match_plain(cls, k):
    module = _randomised(cls, k)
    x = torch.randn(2, 4, 7, 6)
    params = dict(module.named_parameters())
    loss = lambda p, inp: torch.func.functional_call(module, p, (inp,)).square().sum()
    got = {}
    for name in ("cpu_nhwc", "torch"):
        with kernels.backend(name):
            got[name] = (
                torch.func.grad(loss)(params, x),
                torch.func.jacrev(lambda inp: module(inp).sum((1, 2, 3)))(x),
                torch.func.vmap(lambda inp: module(inp[None])[0])(x),
            )
    want_grads = torch.autograd.grad(_independent(module, x).square().sum(), list(params.values()))
    for name, want in zip(params, want_grads):
        torch.testing.assert_close(got["cpu_nhwc"][0][name], want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["cpu_nhwc"][1], got["torch"][1])
    torch.testing.assert_close(got["cpu_nhwc"][2], _independent(module, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: lk.LSKA(4, 11),
        lambda: lk.LKA(4, 7),
        lambda: lk.LSKATrivial(4, 5),
        lambda: lk.LKATrivial(4, 5),
        lambda: lk.SpatialGatingAttention(4, "lska", 7),
        lambda: lk.SAM(8, num_heads=4),
    ],
    ids=["LSKA", "LKA", "LSKATrivial", "LKATrivial", "SpatialGatingAttention", "SAM"],
)
def test_torch_jit_script_matches_eager(make):
    torch.manual_seed(0)
    module = make().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.14
        scripted = torch.jit.script(module)
    x = torch.randn(2, module.dim, 9, 8)
    torch.testing.assert_close(scripted(x), module(x), rtol=1e-5, atol=1e-5)


def test_forward_hooks_on_sub_convs_see_every_conv(monkeypatch):
    monkeypatch.setattr(dispatch, "_measure", _fake_timer({"torch": 2.0, "cpu_nhwc": 1.0}))  # auto -> fast
    module = _randomised(lk.LSKA, 11)
    seen = []
    for conv in (module.conv0h, module.conv0v, module.conv_spatial_h, module.conv_spatial_v, module.conv1):
        conv.register_forward_hook(lambda m, i, o: seen.append(m))
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(module(x), _independent(module, x), rtol=1e-5, atol=1e-5)
    assert len(seen) == 5


def test_ultralytics_gflops_equal_with_torch_and_auto(monkeypatch):
    pytest.importorskip("thop")
    torch_utils = pytest.importorskip("ultralytics.utils.torch_utils")
    monkeypatch.setattr(dispatch, "_measure", _fake_timer({"torch": 2.0, "cpu_nhwc": 1.0}))  # auto -> fast
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), lk.LSKA(16, 23), torch.nn.Conv2d(16, 8, 1))
    model.yaml = {}  # get_flops reads it for the image size
    model.stride = torch.tensor([32.0])
    with kernels.backend("torch"):
        plain = torch_utils.get_flops(model, imgsz=64)
    assert plain > 0
    assert torch_utils.get_flops(model, imgsz=64) == plain
