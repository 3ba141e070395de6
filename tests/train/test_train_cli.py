"""``largekernel train`` / ``eval`` end to end: run files, eval, resume after SIGKILL, DDP, bad inputs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import REPO, TINY_MODEL_ARGS, TINY_TRAIN, write_image_folder

from largekernel.cli import main

TIMING = {"epoch_seconds", "images_per_second"}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny run on a written image folder (3 classes, 20 PNGs each), shared by several tests."""
    root = tmp_path_factory.mktemp("trained")
    folder = write_image_folder(root / "images", classes=3, per_class=20)
    out = root / "run"
    assert main(["train", "--data", str(folder), *TINY_TRAIN, "--epochs", "3", "--lr", "3e-3", "--out", str(out)]) == 0
    return folder, out


@pytest.mark.parametrize("caller_setting", [False, True])
def test_training_leaves_the_callers_torch_flags_as_they_were(tmp_path, monkeypatch, caller_setting):
    # Trainer(deterministic=True) switches deterministic algorithms on for the whole process
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(caller_setting)
    try:
        args = ["train", "--data", "digits", *TINY_TRAIN, "--epochs", "1", "--out", str(tmp_path / "run")]
        assert main(args) == 0
        assert torch.are_deterministic_algorithms_enabled() is caller_setting
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_train_writes_every_run_file(trained):
    _, out = trained
    rows = read_rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {
        "epoch",
        "train_loss",
        "val_loss",
        "val_top1",
        "val_top5",
        "raw_val_top1",
        "lr",
        "epoch_seconds",
        "images_per_second",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["train_images"] == 48 and summary["val_images"] == 12
    assert "top5" not in summary  # 3 classes: top-5 would always be 100 %
    assert summary["top1"] == pytest.approx(float(rows[-1]["val_top1"]), abs=1e-3)
    assert summary["images_per_second"] > 0 and summary["params"] > 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()
    described = json.loads((out / "model.json").read_text())
    assert described["class_names"] == ["class_0", "class_1", "class_2"] and described["weights"] == "ema"
    assert json.loads((out / "run.json").read_text())["recipe"] == "digits"
    # the band pattern is easy: three epochs on 48 images learn it
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_eval_of_saved_weights_reproduces_the_held_out_score(trained, capsys):
    folder, out = trained
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert (
        main(["eval", "--checkpoint", str(out / "model.safetensors"), "--data", str(folder), "--json", "--quiet"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 12 and result["top1"] == pytest.approx(summary["top1"])
    assert result["loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    assert result["images_per_second"] > 0
    # the Lightning checkpoint of the last epoch holds the same weights
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(summary["top1"])
    assert main(["eval", "--checkpoint", str(out / "model.safetensors"), "--data", str(folder), "--split", "all"]) == 0
    assert "60 images" in capsys.readouterr().out


def test_training_on_real_digits_lowers_the_loss(tmp_path):
    out = tmp_path / "digits"
    args = ["train", "--data", "digits", *TINY_TRAIN, "--epochs", "2", "--batch-size", "64", "--out", str(out)]
    assert main(args) == 0
    rows = read_rows(out / "metrics.csv")
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"]) < 2.31  # ln 10 = 2.303: chance
    assert float(rows[1]["val_top1"]) > 30.0  # chance is 10 %


def test_run_killed_mid_training_resumes_to_the_identical_result(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=3, per_class=12)
    common = ["--data", str(folder), *TINY_TRAIN, "--epochs", "5", "--batch-size", "8", "--seed", "7"]
    whole = tmp_path / "whole"
    assert main(["train", *common, "--out", str(whole)]) == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "largekernel", "train", *common, "--out", str(killed)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    epochs_done = len(read_rows(killed / "metrics.csv"))
    assert 1 <= epochs_done < 5, "the kill must land mid-training"

    assert main(["train", "--out", str(killed), "--resume", "--quiet"]) == 0
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
    assert strip(read_rows(whole / "metrics.csv")) == strip(read_rows(killed / "metrics.csv"))
    assert (
        json.loads((killed / "summary.json").read_text())["top1"]
        == json.loads((whole / "summary.json").read_text())["top1"]
    )


def test_ddp_with_two_cpu_processes(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=3, per_class=10)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("LARGEKERNEL_RUN_DIR", None)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "largekernel",
            "train",
            "--data",
            str(folder),
            *TINY_TRAIN,
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--out",
            str(out),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        check=False,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # --quiet (in TINY_TRAIN): the summary line and nothing else, from either rank
    assert completed.stderr.strip() == "", completed.stderr[-3000:]
    assert completed.stdout.strip().count("\n") == 0, completed.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(read_rows(out / "metrics.csv")) == 1
    assert summary["images_per_second"] > 0 and summary["train_images"] == 24
    assert "held-out top-1" in completed.stdout and completed.stdout.count("held-out top-1") == 1  # rank 0 reports


def _error(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_bad_inputs_give_clear_errors(tmp_path, trained, capsys):
    folder, out = trained
    assert "neither an embedded dataset" in _error(capsys, "train", "--data", str(tmp_path / "missing"), "--quiet")
    (tmp_path / "empty").mkdir()
    assert "no class sub-folders" in _error(capsys, "train", "--data", str(tmp_path / "empty"), "--quiet")
    broken = write_image_folder(tmp_path / "broken", classes=2, per_class=3)
    (broken / "class_1" / "bad.png").write_bytes(b"\x89PNG but truncated")
    assert "bad.png" in _error(capsys, "train", "--data", str(broken), *TINY_TRAIN, "--out", str(tmp_path / "b"))
    message = _error(capsys, "eval", "--checkpoint", str(out / "model.safetensors"), "--data", "digits")
    assert "class-count mismatch" in message and "3 classes" in message and "10" in message
    assert "--resume" in _error(capsys, "train", "--data", str(folder), *TINY_TRAIN, "--out", str(out))
    assert "holds no run" in _error(capsys, "train", "--out", str(tmp_path / "fresh"), "--resume")
    assert "--lr" in _error(capsys, "train", "--out", str(out), "--resume", "--lr", "0.5")
    assert "does not exist" in _error(capsys, "eval", "--checkpoint", str(tmp_path / "nope.safetensors"))
    assert "positive" in _error(capsys, "train", "--data", str(folder), "--epochs", "0", "--out", str(tmp_path / "z"))
    single = write_image_folder(tmp_path / "single", classes=3, per_class=1)
    assert "at least 2 per class" in _error(
        capsys, "train", "--data", str(single), *TINY_TRAIN, "--out", str(tmp_path / "s")
    )
    one_class = write_image_folder(tmp_path / "one_class", classes=1, per_class=5)
    assert "at least 2" in _error(capsys, "train", "--data", str(one_class), *TINY_TRAIN, "--out", str(tmp_path / "o"))
    # a run stopped before its first epoch ended: run.json but no checkpoint yet
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "run.json").write_text((out / "run.json").read_text())
    assert "before its first epoch" in _error(capsys, "train", "--out", str(tmp_path / "early"), "--resume")


def test_fine_tune_and_eval_from_published_style_weights(tmp_path, capsys):
    import largekernel
    from largekernel.models.checkpoint import save_checkpoint

    published = tmp_path / "published.safetensors"
    source = largekernel.create_model("van_lska_tiny", num_classes=7, kernel_size=7, **TINY_MODEL_ARGS)
    save_checkpoint(source, published)
    folder = write_image_folder(tmp_path / "images", classes=3, per_class=6)
    out = tmp_path / "tuned"
    # a vanishing learning rate: the tuned weights must still be the published ones (new classifier aside)
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                *TINY_TRAIN,
                "--epochs",
                "1",
                "--lr",
                "1e-12",
                "--checkpoint-path",
                str(published),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "model.json").read_text())["in_chans"] == 3  # grey images fed as RGB
    tuned, start = load_file(str(out / "model.safetensors")), source.state_dict()
    assert tuned["head.weight"].shape == (3, 16)
    for name, _ in source.named_parameters():
        if not name.startswith("head."):
            torch.testing.assert_close(tuned[name], start[name], atol=1e-8, rtol=0)
    overrides = [
        "--model",
        "van_lska_tiny",
        "--model-args",
        json.dumps(TINY_MODEL_ARGS),
        "--kernel-size",
        "7",
        "--checkpoint-path",
        str(published),
        "--img-size",
        "16",
    ]
    message = _error(capsys, "eval", *overrides, "--data", str(folder))
    assert "7 classes" in message and "3" in message


def test_eval_of_a_run_with_relative_data_works_from_another_directory(tmp_path, monkeypatch, capsys):
    write_image_folder(tmp_path / "work" / "images", classes=2, per_class=4)
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "--data", "images", *TINY_TRAIN, "--epochs", "1", "--out", "run"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert (
        main(["eval", "--checkpoint", str(tmp_path / "work" / "run" / "model.safetensors"), "--json", "--quiet"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["images"] == 2
    # resume compares the same way: the relative --data given from the run's directory is the stored one
    monkeypatch.chdir(tmp_path / "work")
    assert "--epochs" in _error(capsys, "train", "--data", "images", "--out", "run", "--resume", "--epochs", "3")


def test_print_config_shows_the_resolved_recipe(capsys, tmp_path):
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path), "--model", "smt_b", "--batch-size", "256", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["recipe"] == "smt" and shown["lr"] == pytest.approx(1e-3 * 256 / 512)
    assert shown["drop_path"] == 0.3 and shown["clip_grad"] == 5.0 and shown["data"] == str(tmp_path.resolve())


def test_model_normalisation_comes_from_its_pretrained_cfg(tmp_path, monkeypatch):
    import largekernel
    from largekernel.models.checkpoint import save_checkpoint
    from largekernel.train.evaluate import load_for_eval

    published = tmp_path / "published.safetensors"
    save_checkpoint(
        largekernel.create_model("van_lska_tiny", num_classes=5, kernel_size=7, **TINY_MODEL_ARGS), published
    )
    real_create = largekernel.create_model

    def create_with_cfg(*args, **kwargs):  # a family whose weights were trained as VAN's were
        model = real_create(*args, **kwargs)
        model.pretrained_cfg = {
            **model.pretrained_cfg,
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
            "crop_pct": 0.9,
            "interpolation": "bicubic",
            "input_size": (3, 32, 32),
        }
        return model

    monkeypatch.setattr(largekernel, "create_model", create_with_cfg)
    _, config = load_for_eval(
        model="van_lska_tiny", checkpoint_path=str(published), model_kwargs={"kernel_size": 7, **TINY_MODEL_ARGS}
    )
    assert (config["mean"], config["std"], config["crop_pct"], config["interpolation"], config["img_size"]) == (
        [0.5] * 3,
        [0.5] * 3,
        0.9,
        "bicubic",
        32,
    )
    folder = write_image_folder(tmp_path / "images", classes=2, per_class=3)
    out = tmp_path / "tuned"
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                *TINY_TRAIN,
                "--epochs",
                "1",
                "--checkpoint-path",
                str(published),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    described = json.loads((out / "model.json").read_text())
    assert (described["mean"], described["crop_pct"], described["interpolation"]) == ([0.5] * 3, 0.9, "bicubic")


def test_unusable_files_and_settings_give_one_line_naming_them(tmp_path, trained, capsys):
    folder, out = trained
    weights = out / "model.safetensors"

    def one_line(*argv: str) -> str:
        message = _error(capsys, *argv)
        assert message.count("\n") == 1, message  # one line
        return message

    # damaged weights beside a good model.json
    for name, content in (("empty", b""), ("cut", weights.read_bytes()[:100]), ("noise", os.urandom(500))):
        broken = tmp_path / name / "model.safetensors"
        broken.parent.mkdir()
        broken.write_bytes(content)
        (broken.parent / "model.json").write_bytes((out / "model.json").read_bytes())
        assert str(broken) in one_line("eval", "--checkpoint", str(broken), "--data", str(folder))
    for name, content in (("empty.ckpt", b""), ("cut.ckpt", (out / "checkpoints" / "last.ckpt").read_bytes()[:300])):
        (tmp_path / name).write_bytes(content)
        assert name in one_line("eval", "--checkpoint", str(tmp_path / name), "--data", str(folder))
    # damaged published weights (--checkpoint-path): .pth and .safetensors
    whole = tmp_path / "whole.pth"
    torch.save(load_file(str(weights)), whole)
    published = ["--model", "van_lska_tiny", "--model-args", json.dumps(TINY_MODEL_ARGS), "--kernel-size", "7"]
    for name, content in (
        ("empty.pth", b""),
        ("cut.pth", whole.read_bytes()[:400]),
        ("cut.safetensors", weights.read_bytes()[:64]),
    ):
        (tmp_path / name).write_bytes(content)
        assert name in one_line("eval", *published, "--checkpoint-path", str(tmp_path / name), "--data", str(folder))
    # weights paired with another run's description (other widths): a shape mismatch, named
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(weights.read_bytes())
    described = json.loads((out / "model.json").read_text())
    described["model_kwargs"]["embed_dims"] = [12, 24]
    (other / "model.json").write_text(json.dumps(described))
    assert "model.json" in one_line("eval", "--checkpoint", str(other / "model.safetensors"), "--data", str(folder))
    # a broken model.json / run.json names itself
    (other / "model.json").write_text("{not json")
    assert "model.json" in one_line("eval", "--checkpoint", str(other / "model.safetensors"))
    broken_run = tmp_path / "broken_run"
    broken_run.mkdir()
    (broken_run / "run.json").write_text('{"epochs": ')
    assert "run.json" in one_line("train", "--out", str(broken_run), "--resume")
    # --out a file, a GPU that is not there, nodes that never come, negative settings
    (tmp_path / "a_file").write_text("x")
    common = ["train", "--data", str(folder), *TINY_TRAIN]
    assert "--out" in one_line(*common, "--out", str(tmp_path / "a_file"))
    if not torch.cuda.is_available():
        assert "--accelerator gpu" in one_line(*common, "--accelerator", "gpu", "--out", str(tmp_path / "g"))
    started = time.monotonic()
    assert "--num-nodes 2" in one_line(*common, "--num-nodes", "2", "--out", str(tmp_path / "n"))
    assert time.monotonic() - started < 60  # not Lightning's 30-minute wait
    assert "--weight-decay" in one_line(*common, "--weight-decay", "-0.1", "--out", str(tmp_path / "w"))
    assert "--warmup-epochs" in one_line(*common, "--warmup-epochs", "-1", "--out", str(tmp_path / "w"))
    # the thread count changes the numbers: resuming with another one is refused
    assert "--threads" in one_line("train", "--out", str(out), "--resume", "--threads", "2")
