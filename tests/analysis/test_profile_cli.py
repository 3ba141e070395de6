"""`largekernel profile` end to end: JSON rows agree with closed forms; bad input is a clean error."""

import json

from largekernel.cli import main


def test_profile_json_matches_closed_forms(capsys):
    code = main(
        [
            "profile",
            "--json",
            "--kernel-sizes",
            "7",
            "53",
            "--dim",
            "16",
            "--resolution",
            "12",
            "--min-run-time",
            "0.01",
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kernel_size"], r["design"]) for r in rows] == [
        (k, d) for k in (7, 53) for d in ("lka_trivial", "lka", "lska_trivial", "lska")
    ]
    dim, pixels = 16, 12 * 12
    by_key = {(r["kernel_size"], r["design"]): r for r in rows}
    # LSKA k=53: a=5, m=17 -> 2*(5+17) depthwise weights per channel, plus the 1x1
    lska = by_key[(53, "lska")]
    assert lska["dilation"] == 3
    assert lska["params"] == 2 * (5 + 17) * dim + 4 * dim + dim * dim + dim
    assert lska["macs"] == (2 * (5 + 17) * dim + dim * dim) * pixels
    assert by_key[(53, "lka_trivial")]["macs"] == (53 * 53 * dim + dim * dim) * pixels
    assert all(r["latency_ms"] > 0 for r in rows)


def test_profile_table_prints(capsys):
    assert (
        main(
            [
                "profile",
                "--kernel-sizes",
                "7",
                "--designs",
                "lska",
                "--dim",
                "8",
                "--resolution",
                "8",
                "--min-run-time",
                "0.01",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "lska" in out and "MMACs" in out


def test_profile_rejects_even_kernel(capsys):
    assert main(["profile", "--kernel-sizes", "8"]) == 2
    err = capsys.readouterr().err
    assert "kernel_size must be an odd integer >= 3" in err and "got 8" in err
