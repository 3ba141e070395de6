"""YOLO integration: every shipped config builds, trains (loss + backward) and round-trips through
Ultralytics' save/load; channels and block counts are checked against Ultralytics' own parse of the
plain base configs and against the YAML, not against our own code.

Ultralytics reads torchvision's *version string* when it is imported (nothing more); train/val/predict
and NMS import torchvision itself, and none of them run here. Where torchvision is not installed (a
CPU-only torch cannot use the PyPI torchvision wheel), these tests put a metadata-only
``torchvision.dist-info`` on ``sys.path`` for the import and remove it right after; the package code
never does this. If Ultralytics is absent or still fails to import, every test here is skipped.
"""

from __future__ import annotations

import atexit
import copy
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach the network
os.environ.setdefault("YOLO_VERBOSE", "False")
if "YOLO_CONFIG_DIR" not in os.environ:  # keep Ultralytics' settings file out of the home directory
    _config_dir = tempfile.mkdtemp(prefix="yolo-config-")
    atexit.register(shutil.rmtree, _config_dir, True)
    os.environ["YOLO_CONFIG_DIR"] = _config_dir

if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("ultralytics is not installed (pip install 'largekernel[yolo]')", allow_module_level=True)
_STUB_DIR: str | None = None


def _import_ultralytics() -> None:
    global _STUB_DIR
    try:
        importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        _STUB_DIR = tempfile.mkdtemp(prefix="tv-metadata-")
        atexit.register(shutil.rmtree, _STUB_DIR, True)
        major, minor = (int(x) for x in torch.__version__.split(".")[:2])
        version = f"0.{minor + 15}.0" if major == 2 else "0.0.0"  # the release paired with this torch
        info = Path(_STUB_DIR, f"torchvision-{version}.dist-info")
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version}\n")
        sys.path.insert(0, _STUB_DIR)
    # Ultralytics replaces PIL.Image.open with a wrapper that pip-installs pi-heif on the first
    # unreadable file; keep that out of the rest of the test session (and never auto-install)
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from PIL import Image

    pil_open = Image.open
    try:
        import ultralytics.nn.tasks  # noqa: F401
    finally:
        Image.open = pil_open
        if _STUB_DIR in sys.path:
            sys.path.remove(_STUB_DIR)


try:
    _import_ultralytics()
except Exception as error:  # noqa: BLE001 - any import failure of the optional dependency means skip
    pytest.skip(f"ultralytics does not import here: {error}", allow_module_level=True)

import yaml  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.nn.modules import Conv  # noqa: E402
from ultralytics.nn.modules.block import C2f, C3, C3k2, SPPF  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

from largekernel import cli  # noqa: E402
from largekernel.integrations import yolo  # noqa: E402
from largekernel.integrations.yolo import AttentionBottleneck, C2f_LSKA, C3_LSKA, C3k2_LSKA, SPPF_LSKA  # noqa: E402
from largekernel.layers import LKA, LSKA, SAM  # noqa: E402

CONFIGS = yolo.available_configs()
OUR_TYPES = {"LSKA": LSKA, "LKA": LKA, "SAM": SAM, "SPPF_LSKA": SPPF_LSKA, "C2f_LSKA": C2f_LSKA,
             "C3_LSKA": C3_LSKA, "C3k2_LSKA": C3k2_LSKA}  # fmt: skip
IMG = 32  # the smallest size with a P5 map; keeps the suite fast


def scaled(config: str, scale: str) -> str:
    version, rest = config.split("-", 1)
    return f"{version}{scale}-{rest}"


def config_dict(config: str) -> dict:
    return yaml.safe_load((yolo.config_path(scaled(config, "n")).parent / f"{config}.yaml").read_text())


def expected_counts(config: str, scale: str) -> tuple[dict[str, int], int]:
    """Our blocks per YAML name, and attention bottlenecks, from the YAML and Ultralytics' depth rule."""
    d = config_dict(config)
    depth = d["scales"][scale][0]
    blocks: dict[str, int] = {}
    bottlenecks = 0
    for _source, repeats, name, args in d["backbone"] + d["head"]:
        if name not in OUR_TYPES:
            continue
        repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
        if name in ("LSKA", "LKA", "SAM"):
            blocks[name] = blocks.get(name, 0) + repeats  # a plain layer repeats itself
        else:
            blocks[name] = blocks.get(name, 0) + 1  # a CSP block takes the repeats inside
            c3k = name == "C3k2_LSKA" and (scale in "mlx" or (len(args) > 2 and args[2]))
            bottlenecks += 0 if name == "SPPF_LSKA" else repeats * (2 if c3k else 1)
    return blocks, bottlenecks


def synthetic_batch(batch_size: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(batch_size, 3, IMG, IMG, generator=generator),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[0.0], [3.0], [1.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2], [0.6, 0.4, 0.5, 0.6]]),  # xywh in [0, 1]
    }


def layer_shapes(model: DetectionModel) -> list[tuple[int, ...]]:
    """Output shape of every layer except Detect, from one forward at IMG x IMG."""
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for m in model.model[:-1]]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, IMG, IMG))
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny at 32 px: one thread is many times faster than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_BASE_SHAPES: dict[str, list[tuple[int, ...]]] = {}
_CHECKPOINTS: dict[str, tuple[Path, torch.Tensor, torch.Tensor]] = {}  # n-scale saves, reused by the fresh-process test
_CHECKPOINTS: dict[str, tuple[Path, torch.Tensor, torch.Tensor]] = {}  # n-scale saves, reused by the fresh-process test
_OUR_SHAPES: dict[tuple[str, str], list[tuple[int, ...]]] = {}


def base_shapes(version: str, scale: str) -> list[tuple[int, ...]]:
    """Layer output shapes of the plain Ultralytics model (its own YAML and parser), cached per session."""
    name = f"{version}{scale}.yaml"
    if name not in _BASE_SHAPES:
        _BASE_SHAPES[name] = layer_shapes(DetectionModel(name, verbose=False))
    return _BASE_SHAPES[name]


@pytest.mark.parametrize("scale", ["n", "s"])
@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_trains_and_round_trips(config: str, scale: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    detector = yolo.model(scaled(config, scale))
    assert isinstance(detector, YOLO)
    net = detector.model
    assert isinstance(net, DetectionModel)

    # our blocks, as many as the YAML says at this scale
    blocks, bottlenecks = expected_counts(config, scale)
    layers = [sub for m in net.model for sub in (m if isinstance(m, torch.nn.Sequential) else [m])]
    found = {name: sum(type(m) is cls for m in layers) for name, cls in OUR_TYPES.items()}
    assert {k: v for k, v in found.items() if v} == blocks
    assert sum(isinstance(m, AttentionBottleneck) for m in net.modules()) == bottlenecks

    # every layer has the channels (and resolution) of the plain Ultralytics model at this scale;
    # a plain attention layer keeps its input's shape and the base model continues after it
    ours = _OUR_SHAPES[config, scale] = layer_shapes(net)
    rows = config_dict(config)["backbone"] + config_dict(config)["head"]
    plain = [i for i, row in enumerate(rows) if row[2] in ("LSKA", "LKA", "SAM")]
    assert all(ours[i] == ours[i - 1] for i in plain)
    assert [shape for i, shape in enumerate(ours) if i not in plain] == base_shapes(config.split("-")[0], scale)

    # Ultralytics' detection loss on a synthetic batch, and gradients through our blocks
    net.args = get_cfg()
    net.train()
    loss, items = net.loss(synthetic_batch())
    items = torch.stack(list(items.values())) if isinstance(items, dict) else items  # dict in Ultralytics >= 8.4
    assert torch.isfinite(loss).all() and torch.isfinite(items).all() and items.numel() == 3  # box, cls, dfl
    assert (items > 0).all()
    loss.sum().backward()
    for block in (m for m in layers if type(m) in OUR_TYPES.values()):
        grads = [p.grad for p in block.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), f"no gradient reaches {type(block).__name__}"

    # save with Ultralytics, load with Ultralytics: same classes, same weights, same outputs
    path = tmp_path / f"{scaled(config, scale)}.pt"
    detector.save(path)
    loaded = YOLO(str(path)).model
    reference = copy.deepcopy(net).half().float().eval()  # the checkpoint stores fp16
    assert [type(m) for m in loaded.modules()] == [type(m) for m in reference.modules()]
    x = torch.rand(1, 3, IMG, IMG)
    with torch.no_grad():
        expected = reference(x)[0]
        torch.testing.assert_close(loaded.float().eval()(x)[0], expected)
    if scale == "n":
        _CHECKPOINTS[config] = (path, x, expected)


def test_width_scales_like_ultralytics_blocks() -> None:
    """The s model has twice the channels of the n model everywhere, from the same YAML numbers."""
    for config in ("yolov8-c2f-lska", "yolo11-lska"):
        for scale in "ns":
            if (config, scale) not in _OUR_SHAPES:  # run alone: build here
                _OUR_SHAPES[config, scale] = layer_shapes(DetectionModel(str(yolo.config_path(scaled(config, scale))), verbose=False))
        for n_shape, s_shape in zip(_OUR_SHAPES[config, "n"], _OUR_SHAPES[config, "s"], strict=True):
            assert s_shape[1] == 2 * n_shape[1] and s_shape[2:] == n_shape[2:]


def _neutralise(module: torch.nn.Module) -> None:
    """Make our attention pass its input through: LSKA gate = 1, spatial-gating branch = 0."""
    for m in module.modules():
        if isinstance(m, LSKA):
            torch.nn.init.zeros_(m.conv1.weight)
            torch.nn.init.ones_(m.conv1.bias)
        if isinstance(m, AttentionBottleneck):
            torch.nn.init.zeros_(m.attn.proj_2.weight)
            torch.nn.init.zeros_(m.attn.proj_2.bias)


def _zero_bottlenecks(module: torch.nn.Module) -> None:
    """Ultralytics bottlenecks with a shortcut become identities when their last conv outputs SiLU(0) = 0."""
    from ultralytics.nn.modules.block import Bottleneck

    for m in module.modules():
        if isinstance(m, Bottleneck):
            assert m.add
            torch.nn.init.zeros_(m.cv2.bn.weight)
            torch.nn.init.zeros_(m.cv2.bn.bias)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: SPPF_LSKA(32, 48, 5, kernel_size=11), lambda: SPPF(32, 48, 5)),
        (lambda: C2f_LSKA(32, 48, 2, kernel_size=7), lambda: C2f(32, 48, 2, True)),
        (lambda: C3_LSKA(32, 48, 2, kernel_size=7), lambda: C3(32, 48, 2, True)),
        (lambda: C3k2_LSKA(32, 48, 2, False, kernel_size=7), lambda: C3k2(32, 48, 2, False)),
        (lambda: C3k2_LSKA(32, 48, 2, True, kernel_size=7), lambda: C3k2(32, 48, 2, True)),
    ],
    ids=["SPPF", "C2f", "C3", "C3k2", "C3k2-c3k"],
)
def test_block_with_neutral_attention_is_the_ultralytics_block(ours, theirs) -> None:
    """Wiring check against Ultralytics' own block: with the attention made an identity, outputs agree."""
    torch.manual_seed(0)
    block, reference = ours().eval(), theirs().eval()
    _neutralise(block)
    _zero_bottlenecks(reference)
    shared = {k: v for k, v in reference.state_dict().items() if k in block.state_dict()}
    missing = [k for k in reference.state_dict() if k not in shared and ".m." not in f".{k}"]
    assert not missing  # every conv outside the bottlenecks exists in ours under the same name
    block.load_state_dict(shared, strict=False)
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference(x), rtol=1e-4, atol=1e-4)


def test_sppf_lska_runs_lska_on_the_pooled_concatenation() -> None:
    block = SPPF_LSKA(64, 64, 5, kernel_size=11)
    hidden = 64 // 2
    assert block.lska.dim == 4 * hidden and block.lska.receptive_field == 11
    assert block.cv2.conv.in_channels == 4 * hidden


def test_c3k2_flag_follows_ultralytics_at_m_scale(tmp_path: Path) -> None:
    """Ultralytics turns on C3k2's c3k at m/l/x whatever the YAML says; our C3k2_LSKA follows it."""
    d = config_dict("yolo11-c3k2-lska")
    for row in d["backbone"]:
        if row[2] == "C3k2_LSKA":
            row[3] = [row[3][0], 11, False]  # the YAML says no c3k
    d["scales"] = {"n": [0.50, 0.25, 1024], "m": [0.50, 0.25, 512]}  # m's flag with n's widths, to stay cheap
    for scale, inner_type in (("n", AttentionBottleneck), ("m", C3_LSKA)):
        path = tmp_path / f"yolo11{scale}-c3k2-lska-test.yaml"
        path.write_text(yaml.safe_dump(d))
        blocks = [m for m in DetectionModel(str(path), verbose=False).model if isinstance(m, C3k2_LSKA)]
        assert len(blocks) == 2
        assert all(type(inner) is inner_type for block in blocks for inner in block.m)


def _write_yaml(tmp_path: Path, rows: list, activation: str | None = None) -> Path:
    d = {"nc": 2, "scales": {"n": [0.33, 0.25, 1024]}, "backbone": rows[:-1], "head": rows[-1:]}
    if activation:
        d["activation"] = activation
    path = tmp_path / "yolov8n-custom.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_custom_yaml_activation_and_plain_layer_arguments(tmp_path: Path) -> None:
    rows = [
        [-1, 1, "Conv", [64, 3, 2]],
        [-1, 1, "Conv", [128, 3, 2]],
        [-1, 1, "C2f_LSKA", [128, 7]],
        [-1, 1, "Conv", [256, 3, 2]],
        [-1, 6, "LKA", [7, "None"]],  # depth 0.33: 6 -> 2 layers
        [-1, 1, "SAM", [2, 1]],
        [-1, 1, "SPPF_LSKA", [256, 5, 3]],
        [[2, 6], 1, "Detect", ["nc"]],
    ]
    net = DetectionModel(str(_write_yaml(tmp_path, rows, "nn.ReLU()")), verbose=False)
    c2f, lka, sam, sppf = net.model[2], net.model[4], net.model[5], net.model[6]
    assert isinstance(c2f.cv1.act, torch.nn.ReLU)  # the YAML's activation reaches our blocks' convs
    assert type(Conv.default_act) is torch.nn.SiLU  # and is restored afterwards
    assert c2f.m[0].attn.spatial_gating_unit.receptive_field == 7
    assert isinstance(lka, torch.nn.Sequential) and len(lka) == 2 and all(l.dim == 64 for l in lka)
    assert sam.dim == 64 and sam.num_heads == 2 and sam.expand_ratio == 1
    assert sppf.m.kernel_size == 3 and sppf.lska.receptive_field == 5


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([[-1, 1], 1, "LSKA", [11]], "from=-1"),
        ([-1, 1, "LSKA", [11, 3, 9]], "expected [-1, 1, LSKA"),
        ([-1, 1, "C2f_LSKA", []], "expected [-1, n, C2f_LSKA"),
    ],
)
def test_bad_rows_raise_with_the_expected_form(tmp_path: Path, row: list, message: str) -> None:
    rows = [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], row, [[-1], 1, "Detect", ["nc"]]]
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        DetectionModel(str(_write_yaml(tmp_path, rows)), verbose=False)


def test_unknown_config_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match="yolov8n-lska"):
        yolo.model("yolov8-lska")  # no scale letter
    with pytest.raises(ValueError, match="unknown YOLO config"):
        yolo.config_path("yolov9n-lska")


def test_unregister_restores_ultralytics_parser() -> None:
    from ultralytics.nn import tasks

    original = tasks.parse_model._largekernel_original
    try:
        yolo.unregister()
        assert tasks.parse_model is original and not yolo.is_registered()
        with pytest.raises(KeyError):
            DetectionModel(str(yolo.config_path("yolov8n-lska")), verbose=False)
    finally:
        yolo.register()
        yolo.register()  # idempotent: wraps once
    assert tasks.parse_model._largekernel_original is original


def test_cli_hands_arguments_to_ultralytics(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`largekernel yolo train model=<shipped>.yaml ...` builds our model in Ultralytics' own CLI."""
    from ultralytics.engine.model import Model

    seen = {}

    def fake_train(self, **kwargs):  # Ultralytics' trainer needs torchvision; we check what reaches it
        seen["model"], seen["kwargs"] = self.model, kwargs

    monkeypatch.setattr(Model, "train", fake_train)
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"yolo": cli.SUBCOMMANDS["yolo"]})
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\n")
    code = cli.main(["yolo", "train", "model=yolov8n-sppf-lska.yaml", f"data={data}", "epochs=1", "imgsz=64"])
    assert code == 0
    assert sum(isinstance(m, SPPF_LSKA) for m in seen["model"].modules()) == 1
    assert seen["kwargs"]["data"] == str(data) and seen["kwargs"]["epochs"] == 1
    assert seen["model"].model[9].cv2.conv.out_channels == 256  # n scale: 1024 * 0.25


CHILD = textwrap.dedent(
    """
    import sys, torch
    safe = sys.argv[1] == "safe"
    if safe:
        import largekernel.integrations.yolo  # allow-lists our classes for weights_only loading
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel
    for path in sys.argv[2:]:
        model = YOLO(path).model.float().eval()
        x, expected = torch.load(path + ".io")
        with torch.no_grad():
            torch.testing.assert_close(model(x)[0], expected)
        print("ok", path)
    if not safe:  # a stored YAML parses again here: unpickling imported largekernel, which registered
        DetectionModel(model.yaml, verbose=False)
        print("parsed", model.yaml["yaml_file"])
    """
)
FRESH_PROCESS_CONFIGS = ("yolov8-c2f-lska", "yolo11-sppf-lska", "yolov8-sam", "yolov5-c3-lska", "yolo11-c3k2-lska")


@pytest.mark.parametrize("mode", ["default", "safe"])
def test_checkpoints_load_in_a_fresh_process(mode: str, tmp_path: Path) -> None:
    paths = []
    for config in FRESH_PROCESS_CONFIGS:
        if config not in _CHECKPOINTS:  # run alone: save here
            detector = yolo.model(scaled(config, "n"))
            path, x = tmp_path / f"{config}.pt", torch.rand(1, 3, IMG, IMG)
            detector.save(path)
            with torch.no_grad():
                _CHECKPOINTS[config] = (path, x, copy.deepcopy(detector.model).half().float().eval()(x)[0])
        path, x, expected = _CHECKPOINTS[config]
        torch.save((x, expected), f"{path}.io")
        paths.append(str(path))
    src = Path(yolo.__file__).parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src), _STUB_DIR, os.environ.get("PYTHONPATH")) if p)}
    env["ULTRALYTICS_SAFE_LOAD"] = "1" if mode == "safe" else "0"
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, "-c", CHILD, mode, *paths], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok ") == len(paths)
    assert mode == "safe" or "parsed" in result.stdout
