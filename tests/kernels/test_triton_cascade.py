"""Fused Triton cascade: the fallback without Triton, the interpreter suite (CPU) and GPU checks.

The CPU comparisons live in ``triton_cascade_cases.py`` and run in a subprocess with
``TRITON_INTERPRET=1`` (the variable must be set before triton is imported, and must not leak
into the other tests of this process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import largekernel
from largekernel import LKA, LSKA, kernels
from largekernel.kernels import triton_available

CASES = Path(__file__).with_name("triton_cascade_cases.py")
SRC = Path(largekernel.__file__).resolve().parents[1]


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter switched on in this process")
def test_cpu_tensors_take_the_plain_path():
    assert not triton_available(torch.zeros(1))


def test_library_works_without_triton():
    # triton unimportable: no error, plain path, same numbers as a hand-written conv cascade
    code = """
import sys
sys.modules["triton"] = None
import torch, torch.nn.functional as F
from largekernel import LSKA, LKA
from largekernel.kernels import triton_available, backend
assert not triton_available(torch.zeros(1))
m = LSKA(3, 11)
x = torch.randn(1, 3, 9, 9)
h = x
for conv in (m.conv0h, m.conv0v, m.conv_spatial_h, m.conv_spatial_v):
    h = F.conv2d(h, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation, groups=3)
torch.testing.assert_close(m(x), x * m.conv1(h))
with backend("triton"):  # forced but not eligible: the plain path
    torch.testing.assert_close(m(x), x * m.conv1(h))
LKA(3, 7)(x)
print("ok")
"""
    result = _run_python(code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_import_does_not_import_triton_cascade():
    # torch's own custom-op machinery loads torch._dynamo, which probes the triton package itself;
    # what must not happen is our Triton module (and its kernels) loading for CPU work
    code = """
import sys, torch, largekernel
largekernel.LSKA(2, 7)(torch.randn(1, 2, 5, 5))
with largekernel.kernels.backend("cpu_nhwc"):
    largekernel.LSKA(2, 7)(torch.randn(1, 2, 5, 5))
assert "largekernel.kernels.triton_cascade" not in sys.modules, "largekernel imported its Triton kernels eagerly"
print("ok")
"""
    result = _run_python(code, LARGEKERNEL_BACKEND="auto")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_interpreter_suite():
    """Runs triton_cascade_cases.py (outputs and gradients vs the plain path) under TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=CASES.parents[2],
        check=False,
    )
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], tail


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="compiles real GPU code")
@pytest.mark.parametrize(
    "stages", [[(1, 5, 1), (5, 1, 1), (1, 7, 3), (7, 1, 3)], [(3, 3, 1), (5, 5, 2)]], ids=["lska23", "lka11"]
)
def test_kernels_compile_for_sm90(stages):
    """Lowers both kernels to H100 machine code (no GPU needed): catches what the interpreter cannot."""
    pytest.importorskip("triton")
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as error:  # internal API moved in another triton version
        pytest.skip(f"triton's ahead-of-time compile API is not available: {error}")
    from largekernel.kernels import triton_cascade as tc

    plan = tc._plan(56, 56, stages)
    constexprs = {**tc._stage_constexprs(stages), **{k: plan[k] for k in ("SH", "SW", "PADH", "PADW")}}
    for kernel in (tc._cascade_fwd_kernel, tc._cascade_bwd_kernel):
        names = kernel.arg_names
        signature = {}
        for name in names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name in ("x_ptr", "out_ptr", "gy_ptr", "gx_ptr"):
                signature[name] = "*bf16"
            elif name.endswith("_ptr"):
                signature[name] = "*fp32"
            else:
                signature[name] = "i32"
        source = ASTSource(kernel, signature, {(names.index(k),): v for k, v in constexprs.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 16})
        assert len(compiled.asm["cubin"]) > 0


# --- on a GPU: the same comparisons at real sizes ------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _fused_vs_plain(module, x):
    x_ref = x.detach().clone().requires_grad_(True)
    x_fused = x.detach().clone().requires_grad_(True)
    weight_out = torch.randn_like(x)
    with kernels.backend("torch"):
        module.zero_grad()
        y_ref = module(x_ref)
        (y_ref * weight_out).sum().backward()
        ref = [x_ref.grad] + [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    with kernels.backend("triton"):
        y = module(x_fused)
    (y * weight_out).sum().backward()
    got = [x_fused.grad] + [p.grad.clone() for p in module.parameters()]
    return y, y_ref, got, ref


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cls, kernel_size", [(LSKA, 7), (LSKA, 23), (LSKA, 53), (LKA, 21), (LKA, 35)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(4, 64, 56, 56), (2, 32, 160, 144)])  # whole-plane and tiled
def test_gpu_fp32_matches_plain(cls, kernel_size, channels_last, shape):
    pytest.importorskip("triton")
    torch.manual_seed(0)
    module = cls(shape[1], kernel_size).cuda()
    x = torch.randn(shape, device="cuda")
    if channels_last:
        module, x = module.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # the reference in true fp32
    try:
        y, y_ref, got, ref = _fused_vs_plain(module, x)
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_half_and_autocast(dtype):
    pytest.importorskip("triton")
    torch.manual_seed(0)
    module = LSKA(64, 23).cuda()
    x = torch.randn(4, 64, 28, 28, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        y, y_ref, got, ref = _fused_vs_plain(module, x)
    assert y.dtype == y_ref.dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=5e-2, atol=5e-2 * y_ref.abs().max().item())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.float(), b.float(), rtol=5e-2, atol=5e-2 * b.abs().max().item())
