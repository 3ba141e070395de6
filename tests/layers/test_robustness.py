"""Shapes, layouts, dtypes, compilation, export and bad input for every attention layer."""

import warnings

import pytest
import torch

import largekernel as lk

DIM = 8
FACTORIES = {
    "LKA": lambda: lk.LKA(DIM),
    "LSKA": lambda: lk.LSKA(DIM, 23),
    "LSKA53": lambda: lk.LSKA(DIM, 53),
    "LKATrivial": lambda: lk.LKATrivial(DIM, 11),
    "LSKATrivial": lambda: lk.LSKATrivial(DIM, 11),
    "SAM": lambda: lk.SAM(DIM),
    "SpatialGating": lambda: lk.SpatialGatingAttention(DIM, "lska", 23),
}


@pytest.fixture(params=sorted(FACTORIES))
def module(request):
    return FACTORIES[request.param]().eval()


@pytest.mark.parametrize("shape", [(1, DIM, 1, 1), (1, DIM, 3, 5), (2, DIM, 7, 8), (3, DIM, 16, 15)])
def test_shapes_preserved_even_smaller_than_kernel(module, shape):
    x = torch.randn(shape)
    out = module(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_channels_last_gives_same_values(module):
    x = torch.randn(2, DIM, 13, 10)
    expected = module(x)
    out = module(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_bfloat16_close_to_float32(module):
    x = torch.randn(2, DIM, 12, 12)
    expected = module(x)
    out = module.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_backward_reaches_every_parameter(module):
    module.train()
    module(torch.randn(2, DIM, 9, 9)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.parametrize("name", ["LKA", "LSKA", "SAM"])
def test_errors_name_the_problem(name):
    module = FACTORIES[name]()
    with pytest.raises(ValueError, match=rf"expected {DIM} input channels .* got 5"):
        module(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"4-D NCHW tensor .* got a 3-D tensor"):
        module(torch.randn(DIM, 8, 8))


@pytest.mark.parametrize("cls", [lk.LKA, lk.LSKA, lk.LKATrivial, lk.LSKATrivial, lk.SAM, lk.SpatialGatingAttention])
def test_non_positive_dim_rejected(cls):
    with pytest.raises(ValueError, match=r"dim .* must be positive, got 0"):
        cls(0)
    with pytest.raises(ValueError, match="must be positive, got -4"):
        cls(-4)


@pytest.mark.parametrize("cls", [lk.LKA, lk.LSKA, lk.LKATrivial, lk.LSKATrivial])
@pytest.mark.parametrize("kernel_size", [1, 2, 8, 24])
def test_even_or_small_kernels_rejected(cls, kernel_size):
    with pytest.raises(ValueError, match=f"kernel_size must be an odd integer >= 3.*got {kernel_size}"):
        cls(DIM, kernel_size)


def test_unknown_attention_name():
    with pytest.raises(ValueError, match=r"unknown attention 'lsk'; choose one of"):
        lk.create_attention("lsk", DIM, 23)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    module = lk.LSKA(DIM, 23).eval()
    compiled = torch.compile(module)
    x = torch.randn(2, DIM, 12, 12)
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["LKA", "LSKA", "SAM", "SpatialGating"])
def test_onnx_export_runs_in_onnxruntime_with_dynamic_size(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = FACTORIES[name]().eval()
    path = tmp_path / f"{name}.onnx"
    example = torch.randn(2, DIM, 16, 16)  # batch 1 would be specialised to a constant
    dims = {
        0: torch.export.Dim("batch", max=64),
        2: torch.export.Dim("height", min=2, max=512),
        3: torch.export.Dim("width", min=2, max=512),
    }
    torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=(dims,), verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, DIM, 21, 10)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), module(x), rtol=1e-4, atol=1e-4)


def test_non_tensor_input_rejected(module):
    # the torch.fx exemption in the input check lets Proxies through, nothing else
    with pytest.raises(TypeError, match=r": expected a torch.Tensor, got list"):
        module([[1.0, 2.0]])


def _with_msa(name):
    return lk.layers.mhsa.MSA(DIM, num_heads=2) if name == "MSA" else FACTORIES[name]()


@pytest.mark.parametrize("name", [*sorted(FACTORIES), "MSA"])
def test_fx_symbolic_trace_matches_eager(name):
    module = _with_msa(name).eval()
    traced = torch.fx.symbolic_trace(module)
    x = torch.randn(2, DIM, 9, 8)
    torch.testing.assert_close(traced(x), module(x), rtol=1e-5, atol=1e-5)
    # the graph calls the plain conv modules: the fast kernels (which need real tensors) stay out of it
    called = [traced.get_submodule(n.target) for n in traced.graph.nodes if n.op == "call_module"]
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1 for m in called)


def test_msa_scripts_and_matches_eager():
    module = _with_msa("MSA").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.14
        scripted = torch.jit.script(module)
    x = torch.randn(2, DIM, 5, 7)
    torch.testing.assert_close(scripted(x), module(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        scripted.forward_tokens(x.flatten(2).transpose(1, 2), 5, 7),
        module.forward_tokens(x.flatten(2).transpose(1, 2), 5, 7),
    )
