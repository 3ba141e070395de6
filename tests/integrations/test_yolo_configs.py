"""YOLO configs and blocks: every config builds from the installed Ultralytics' own base config,
computes Ultralytics' detection loss with gradients through our blocks, and round-trips through
Ultralytics' save/load; channels and block counts are checked against Ultralytics' own parse of the
plain base configs, parameter and FLOP counts against closed forms. Real Ultralytics, no stand-ins.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import pytest
import torch
import yaml
import yolo_support  # noqa: F401 - Ultralytics' settings and network before it is imported
from ultralytics import YOLO
from ultralytics.cfg import get_cfg
from ultralytics.nn.modules import Conv
from ultralytics.nn.modules.block import C3, SPPF, C2f, C3k2
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER

from largekernel import layers
from largekernel.errors import ConfigurationError
from largekernel.integrations import yolo
from largekernel.integrations.yolo import C3_LSKA, LKA, LSKA, SAM, SPPF_LSKA, AttentionBottleneck, C2f_LSKA, C3k2_LSKA
from largekernel.integrations.yolo.configs import RECIPES

CONFIGS = yolo.available_configs()
OUR_TYPES = {"LSKA": LSKA, "LKA": LKA, "SAM": SAM, "SPPF_LSKA": SPPF_LSKA, "C2f_LSKA": C2f_LSKA,
             "C3_LSKA": C3_LSKA, "C3k2_LSKA": C3k2_LSKA}  # fmt: skip
IMG = 32  # the smallest size with a P5 map; keeps the suite fast


def scaled(config: str, scale: str) -> str:
    version, rest = config.split("-", 1)
    return f"{version}{scale}-{rest}"


def config_dict(config: str) -> dict:
    return yolo.config(config)


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


def test_width_scales_like_ultralytics_blocks() -> None:
    """The s model has twice the channels of the n model everywhere, from the same YAML numbers."""
    for config in ("yolov8-c2f-lska", "yolo11-lska"):
        for scale in "ns":
            if (config, scale) not in _OUR_SHAPES:  # run alone: build here
                _OUR_SHAPES[config, scale] = layer_shapes(
                    DetectionModel(yolo.config(scaled(config, scale)), verbose=False)
                )
        for n_shape, s_shape in zip(_OUR_SHAPES[config, "n"], _OUR_SHAPES[config, "s"], strict=True):
            assert s_shape[1] == 2 * n_shape[1] and s_shape[2:] == n_shape[2:]


def _neutralise(module: torch.nn.Module) -> None:
    """Make our attention pass its input through: LSKA gate = 1, spatial-gating branch = 0."""
    for m in module.modules():
        if isinstance(m, layers.LSKA):  # also the one inside SPPF_LSKA
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
    assert isinstance(lka, torch.nn.Sequential) and len(lka) == 2 and all(layer.dim == 64 for layer in lka)
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


def test_unregister_restores_ultralytics_parser_and_loader() -> None:
    from ultralytics.engine import model as engine_model
    from ultralytics.nn import tasks

    original = tasks.parse_model._largekernel_original
    d = yolo.config("yolov8n-lska")
    try:
        yolo.unregister()
        assert tasks.parse_model is original and not yolo.is_registered()
        assert not hasattr(engine_model.yaml_model_load, "_largekernel_original")
        with pytest.raises(KeyError):
            DetectionModel(copy.deepcopy(d), verbose=False)
        with pytest.raises(FileNotFoundError):
            YOLO("yolov8n-lska.yaml")
    finally:
        yolo.register()
        yolo.register()  # idempotent: wraps once
    assert tasks.parse_model._largekernel_original is original
    assert engine_model.yaml_model_load._largekernel_original is tasks.yaml_model_load._largekernel_original


# --- configs built from Ultralytics' installed configs (nothing of theirs ships with us) ---


def test_no_ultralytics_config_text_ships_in_the_package() -> None:
    package = Path(yolo.__file__).parents[2]  # src/largekernel
    assert not list(package.rglob("*.yaml")) and not list(package.rglob("*.yml"))
    for path in package.rglob("*.py"):
        assert "AGPL-3.0 License" not in path.read_text(encoding="utf-8"), path  # Ultralytics' config header


def _base_model(config: str) -> DetectionModel:
    return DetectionModel(f"{RECIPES[config].base}n.yaml", verbose=False)  # Ultralytics alone


def _consumers(net: DetectionModel, index: int) -> list[str]:
    """Names of the layers that read layer ``index``'s output, from the ``f`` Ultralytics' parser resolved."""
    found = []
    for m in net.model:
        sources = m.f if isinstance(m.f, list) else [m.f]
        if any((m.i + s if s < 0 else s) == index for s in sources):
            found.append(type(m).__name__)
    return found


@pytest.mark.parametrize("config", [c for c, r in RECIPES.items() if r.edit == "after"])
def test_inserted_layer_takes_the_place_of_sppf_downstream(config: str) -> None:
    """Whatever read SPPF's output in Ultralytics' own model reads our layer's output in ours."""
    base, ours = _base_model(config), DetectionModel(yolo.config(scaled(config, "n")), verbose=False)
    sppf = next(m.i for m in base.model if isinstance(m, SPPF))
    assert isinstance(ours.model[sppf], SPPF) and type(ours.model[sppf + 1]) is OUR_TYPES[RECIPES[config].module]
    assert _consumers(ours, sppf) == [RECIPES[config].module]
    assert _consumers(ours, sppf + 1) == _consumers(base, sppf)
    later = [type(m).__name__ for m in ours.model[sppf + 2 :]]
    assert later == [type(m).__name__ for m in base.model[sppf + 1 :]]


@pytest.mark.parametrize("config", [c for c, r in RECIPES.items() if r.edit == "replace"])
def test_replaced_rows_keep_ultralytics_channels_repeats_and_sources(config: str) -> None:
    recipe = RECIPES[config]
    upstream = DetectionModel(f"{recipe.base}n.yaml", verbose=False).yaml  # Ultralytics' loader, unedited
    ours = yolo.config(scaled(config, "n"))
    changed = [i for i, (a, b) in enumerate(zip(upstream["backbone"], ours["backbone"])) if a != b]
    anchors = [i for i, row in enumerate(upstream["backbone"]) if row[2] == recipe.anchor]
    assert changed == anchors[-recipe.count :]
    assert ours["head"] == upstream["head"] and len(ours["backbone"]) == len(upstream["backbone"])
    for i in changed:
        (f0, n0, _, a0), (f1, n1, module, a1) = upstream["backbone"][i], ours["backbone"][i]
        assert (f0, n0, a0[0], module, a1[1]) == (f1, n1, a1[0], recipe.module, 11)


def test_upstream_rows_our_blocks_cannot_take_are_refused() -> None:
    from largekernel.integrations.yolo.parser import upstream_to_ours

    assert upstream_to_ours("C3k2_LSKA", [512, True, 0.25], 11) == [512, 11, True, 0.25]
    with pytest.raises(ConfigurationError, match=r"C2f_LSKA replaces an Ultralytics row with args \[c2, shortcut\]"):
        upstream_to_ours("C2f_LSKA", [512, True, 2, 0.5], 11)  # grouped convs: not ours to drop


def test_yolo_accepts_our_names_once_the_integration_is_imported() -> None:
    detector = YOLO("yolov8n-lska.yaml")
    assert type(detector.model.model[10]) is LSKA and detector.model.model[10].dim == 256  # 1024 x 0.25
    assert detector.model.yaml["yaml_file"] == "yolov8n-lska.yaml"
    unscaled = YOLO("yolov8-lska.yaml")  # as for yolov8.yaml, Ultralytics takes the first scale (n)
    assert sum(p.numel() for p in unscaled.model.parameters()) == sum(p.numel() for p in detector.model.parameters())
    assert yolo.model("yolo11s-c3k2-lska").model.yaml["scale"] == "s"


def test_a_mistyped_name_lists_ours() -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"Did you mean .*yolov8n-lska\.yaml.*largekernel's configs: .*yolo11\{n,s,m,l,x\}-c3k2-lska\.yaml",
    ):
        YOLO("yolov8n-lksa.yaml")
    with pytest.raises(
        ConfigurationError, match=r"'yolov9n-lska' is not a largekernel YOLO config.*yolov8\{n,s,m,l,x\}-lska"
    ):
        yolo.model("yolov9n-lska")
    with pytest.raises(ConfigurationError, match="not a largekernel YOLO config"):
        yolo.config("yolov8n.yaml")  # Ultralytics' own: YOLO("yolov8n.yaml") is the way
    assert YOLO("yolov8n-p2.yaml").model.yaml["yaml_file"] == "yolov8n-p2.yaml"  # Ultralytics' names untouched


# --- what Ultralytics reports about our models ---


def _lska_macs_per_pixel(dim: int) -> int:
    # LSKA paper's table, k = 11: 1x3 and 3x1 depthwise, then 1x5 and 5x1 (dilation 2), then a 1x1 conv
    return dim * (3 + 3 + 5 + 5) + dim * dim


def _lka_macs_per_pixel(dim: int) -> int:
    # LKA of k = 11 at the LSKA paper's dilation 2: 3x3 depthwise, 5x5 depthwise dilated, 1x1
    return dim * (9 + 25) + dim * dim


def _lska_params(dim: int) -> int:
    return dim * (3 + 3 + 5 + 5) + 4 * dim + dim * dim + dim  # depthwise weights + biases, 1x1 weight + bias


def test_layer_table_shows_our_layers_with_their_parameters() -> None:
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]  # a capturing handler without a subclass
    level = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        lska = DetectionModel(yolo.config("yolov8n-lska"), verbose=True)
        c2f = DetectionModel(yolo.config("yolov8n-c2f-lska"), verbose=True)
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    rows = {}
    for line in lines:
        match = re.match(r"^\s*(\d+)\s+(\S+|\[[^\]]*\])\s+(\d+)\s+(\d+)\s+(\S+)\s+(.*)$", line)
        if match:
            rows.setdefault(int(match.group(1)), []).append(
                (int(match.group(4)), match.group(5), match.group(6).strip())
            )
    assert rows[10][0] == (_lska_params(256), "largekernel.integrations.yolo.blocks.LSKA", "[256, 11]")
    for index in (6, 8):  # the P4 and P5 blocks of yolov8n-c2f-lska
        params, module, _args = rows[index][1]
        assert module == "largekernel.integrations.yolo.blocks.C2f_LSKA"
        assert params == sum(p.numel() for p in c2f.model[index].parameters())
    assert not any("BatchNorm2d" in module for table in rows.values() for _, module, _ in table)
    assert lska.model[10].np == _lska_params(256)


@pytest.mark.parametrize(
    ("config", "macs_per_pixel"), [("yolov8n-lska", _lska_macs_per_pixel), ("yolov8n-lka", _lka_macs_per_pixel)]
)
def test_printed_gflops_count_the_attention_layer(config: str, macs_per_pixel) -> None:
    """Ultralytics' model.info() GFLOPs (thop) = plain yolov8n's + the layer's convolutions on the 20x20 P5 map."""
    plain = DetectionModel("yolov8n.yaml", verbose=False).info(verbose=True, imgsz=640)[3]
    ours = DetectionModel(yolo.config(config), verbose=False).info(verbose=True, imgsz=640)[3]
    assert ours > plain
    assert ours - plain == pytest.approx(2 * macs_per_pixel(256) * 20 * 20 / 1e9, rel=1e-3)


def test_insert_row_renumbers_absolute_and_relative_sources() -> None:
    from largekernel.integrations.yolo.configs import insert_row

    d = {
        "backbone": [[-1, 1, "Conv", [8]], [-1, 1, "Conv", [16]], [-1, 1, "SPPF", [16]]],
        "head": [
            [-1, 1, "Up", []],
            [[-1, 2], 1, "Concat", [1]],
            [[-3, 1], 1, "Concat", [1]],
            [[3, 4, 5], 1, "Detect", []],
        ],
    }
    insert_row(d, 2, [-1, 1, "LSKA", [11]])
    # written out by hand: what read row 2 (SPPF) now reads row 3 (LSKA); later rows move by one
    assert d["backbone"] == [[-1, 1, "Conv", [8]], [-1, 1, "Conv", [16]], [-1, 1, "SPPF", [16]], [-1, 1, "LSKA", [11]]]
    assert d["head"] == [
        [-1, 1, "Up", []],
        [[-1, 3], 1, "Concat", [1]],
        [[-3, 1], 1, "Concat", [1]],  # row 6 now: -3 is row 3, the new layer (it read SPPF before)
        [[4, 5, 6], 1, "Detect", []],
    ]
