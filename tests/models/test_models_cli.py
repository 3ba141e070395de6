"""``largekernel models``: names, published parameter counts, weights locations, bad patterns."""

import json

from largekernel.cli import main


def test_models_json_lists_published_counts(capsys, official):
    assert main(["models", "van_b[01]", "--json", "--kernel-size", "21"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in rows] == ["van_b0", "van_b1"]
    assert [row["params"] for row in rows] == [official["van_b0"]["params"], official["van_b1"]["params"]]
    assert rows[0]["weights"].endswith("van_tiny_754.pth.tar") and rows[0]["attention"] == "lka"


def test_models_table_with_macs(capsys):
    assert main(["models", "smt_t", "--macs", "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    assert "smt_t" in out and "smt_tiny.pth" in out and "11.51" in out


def test_models_unknown_pattern_is_a_clear_error(capsys):
    assert main(["models", "vit_*"]) == 2
    assert "no model matches 'vit_*'" in capsys.readouterr().err
