"""Whole-model profile and resolution scaling against ARCHITECTURES.md's table and closed forms."""

import json
import struct

import pytest
import torch

from largekernel.analysis.profile import (
    measure_peak_memory,
    profile_model,
    profile_scaling,
)
from largekernel.cli import main
from largekernel.layers import lska_decomposition

# ARCHITECTURES.md section 2, "VAN-Tiny, params M / GMACs@224": k -> design -> (params M, GMACs)
VAN_TINY_TABLE = {
    7: {"lka_trivial": (4.064, 0.848), "lka": (4.016, 0.829), "lska_trivial": (4.010, 0.826), "lska": (4.010, 0.825)},
    23: {"lka_trivial": (4.832, 1.152), "lka": (4.106, 0.864), "lska_trivial": (4.061, 0.846), "lska": (4.029, 0.833)},
    53: {"lka_trivial": (8.480, 2.597), "lka": (4.490, 1.016), "lska_trivial": (4.157, 0.884), "lska": (4.061, 0.845)},
}
# ARCHITECTURES.md section 2: exact VAN-LSKA-Tiny parameter counts
VAN_LSKA_TINY_PARAMS = {7: 4_009_800, 23: 4_029_000, 53: 4_061_000}
VAN_TINY_DIMS, VAN_TINY_DEPTHS = (32, 64, 160, 256), (3, 3, 5, 2)


@pytest.mark.parametrize("kernel_size", sorted(VAN_TINY_TABLE))
def test_van_tiny_params_and_macs_match_the_reference_table(kernel_size):
    for design, (params_m, gmacs) in VAN_TINY_TABLE[kernel_size].items():
        row = profile_model("van_lska_tiny", design, kernel_size, timing=False, memory=False)
        assert (round(row.params / 1e6, 3), round(row.macs / 1e9, 3)) == (params_m, gmacs), design
        assert row.macs_with_attention == row.macs  # no self-attention in VAN
        assert row.forward_ms is None and row.peak_memory_mib is None
    lska = profile_model("van_lska_tiny", "lska", kernel_size, timing=False, memory=False)
    assert lska.params == VAN_LSKA_TINY_PARAMS[kernel_size]


def test_model_mac_differences_are_the_depthwise_closed_form():
    # lka_trivial - lska at the same k differs only in the depthwise weights per channel:
    # k*k against 2*(a + m), applied at every pixel of every block's map (stride 4, 8, 16, 32)
    kernel_size, resolution = 11, 64
    a = lska_decomposition(kernel_size).dense_size
    m = lska_decomposition(kernel_size).dilated_size
    trivial = profile_model("van_lska_tiny", "lka_trivial", kernel_size, resolution, timing=False, memory=False)
    lska = profile_model("van_lska_tiny", "lska", kernel_size, resolution, timing=False, memory=False)
    expected = sum(
        depth * dim * (resolution // 4 // 2**stage) ** 2 * (kernel_size**2 - 2 * (a + m))
        for stage, (dim, depth) in enumerate(zip(VAN_TINY_DIMS, VAN_TINY_DEPTHS))
    )
    assert trivial.macs - lska.macs == expected
    # parameters: the same difference per channel, plus the trivial design's 3 fewer biases per channel
    params_expected = sum(
        depth * dim * (kernel_size**2 - 2 * (a + m) - 3) for dim, depth in zip(VAN_TINY_DIMS, VAN_TINY_DEPTHS)
    )
    assert trivial.params - lska.params == params_expected


def test_scaling_counts_attention_quadratically_and_convolution_linearly():
    dim = 32
    rows = profile_scaling((64, 128), models=(), dim=dim, timing=False, memory=False, progress=False)
    by_key = {(row.label, row.resolution): row for row in rows}
    for resolution in (64, 128):
        tokens = (resolution // 16) ** 2
        msa = by_key[("stage 3: MSA (SMT, 8 heads)", resolution)]
        # QK^T and AV: N*N*C MACs each
        assert msa.macs_with_attention - msa.macs == 2 * tokens * tokens * dim
        # q, kv (2C), proj linear layers with bias + depthwise 3x3 local conv on v
        assert msa.macs == tokens * (dim * dim * 4 + 9 * dim)
    for label in ("stage 3: LSKA k=23 (VAN-LSKA)", "stage 3: LKA k=21 (VAN)", "stage 3: SAM (SMT)"):
        small, large = by_key[(label, 64)], by_key[(label, 128)]
        assert large.macs == 4 * small.macs and small.macs == small.macs_with_attention, label


def test_smt_macs_leave_attention_out_like_the_published_numbers():
    row = profile_model("smt_t", resolution=224, timing=False, memory=False)
    assert row.params == 11_506_536
    assert round(row.macs / 1e9, 1) == 2.4  # published GFLOPs leave the attention matmuls out
    assert row.macs_with_attention > row.macs


def test_peak_memory_of_a_known_allocation():
    size = 1 << 20  # 4 MiB of float32, alive together with a second 4 MiB tensor at the peak

    def step():
        first = torch.ones(size)
        second = first * 2
        return float(second[0])

    peak, method = measure_peak_memory(step, torch.device("cpu"))
    if peak is None:
        pytest.skip(f"memory measurement unavailable in this torch ({method})")
    assert 8.0 <= peak < 8.1


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_profile_model_cli_json_csv_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    csv_path, png_path = tmp_path / "rows.csv", tmp_path / "plot.png"
    code = main(
        [
            "profile",
            "--model",
            "van_lska_tiny",
            "--kernel-sizes",
            "7",
            "--designs",
            "lska",
            "lka",
            "--resolution",
            "64",
            "--min-run-time",
            "0.01",
            "--no-memory",
            "--json",
            "--csv",
            str(csv_path),
            "--plot",
            str(png_path),
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kernel_size"], r["attention"]) for r in rows] == [(7, "lska"), (7, "lka")]
    for row in rows:
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0 and row["throughput"] > 0
        assert row["peak_memory_mib"] is None  # --no-memory (measure_peak_memory is tested above)
    assert csv_path.read_text().count("\n") == 1 + len(rows)
    width, height = png_size(png_path)
    assert width >= 600 and height >= 300


def test_profile_scaling_cli_macs_only(capsys):
    assert (
        main(["profile", "--scaling", "--resolutions", "64", "--scaling-models", "van_b0", "--macs-only", "--json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["label"] == "van_b0" and len(rows) == 5
    assert all(r["forward_ms"] is None for r in rows)


def test_profile_cli_rejects_unknown_model_and_mixed_modes(capsys):
    assert main(["profile", "--model", "van_tiny_typo"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["profile", "--model", "van_b0", "--scaling"]) == 2
    assert "separate modes" in capsys.readouterr().err


def test_profile_model_without_attention_options_gives_one_row(capsys):
    assert main(["profile", "--model", "smt_t", "--resolution", "64", "--macs-only"]) == 0
    out = capsys.readouterr().out
    assert "smt_t" in out and "GMACs incl. attn" in out
    assert main(["profile", "--model", "smt_t", "--kernel-sizes", "7", "--macs-only"]) == 2
    assert "no attention design or kernel size" in capsys.readouterr().err


def test_every_measurement_runs_at_the_requested_threads_and_restores_them():
    before = torch.get_num_threads()
    seen = []
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    # the MAC count runs on a meta copy first, outside the measurements: only real runs are recorded
    model.register_forward_hook(lambda _m, inputs, _o: inputs[0].is_meta or seen.append(torch.get_num_threads()))
    from largekernel.analysis.profile import _profile_built

    row = _profile_built(
        "tiny",
        "tiny",
        model,
        attention=None,
        kernel_size=None,
        input_shape=(1, 3, 8, 8),
        resolution=8,
        batch=1,
        device=torch.device("cpu"),
        dtype=torch.float32,
        min_run_time=0.01,
        timing=True,
        memory=True,
        threads=3,
    )
    assert row.threads == 3 and row.peak_memory_mib is not None
    assert seen and set(seen) == {3}  # warm-up, memory step, both timings
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        profile_model("van_b0", resolution=32, threads=0)
