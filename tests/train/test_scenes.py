"""Generated digit scenes: boxes and masks agree with the pasted ink, the same seed gives the same data."""

from __future__ import annotations

import numpy as np
import pytest

from largekernel.train.scenes import digit_scenes, write_yolo_dataset


def test_boxes_are_tight_around_each_digits_mask_pixels() -> None:
    for scene in digit_scenes(12, size=96, seed=3):
        assert scene.image.shape == (96, 96, 3) and scene.image.dtype == np.uint8
        assert len(scene.boxes) == len(scene.labels) >= 1
        covered = np.zeros_like(scene.mask, dtype=bool)
        for (x0, y0, x1, y1), label in zip(scene.boxes.astype(int), scene.labels):
            inside = scene.mask[y0:y1, x0:x1]
            rows, cols = np.nonzero(inside)
            # the ink touches all four sides of its box, and only this digit's class is inside
            assert rows.min() == 0 and cols.min() == 0 and rows.max() == y1 - y0 - 1 and cols.max() == x1 - x0 - 1
            assert set(np.unique(inside[inside > 0])) == {1 + label}
            covered[y0:y1, x0:x1] |= inside > 0
        assert (covered == (scene.mask > 0)).all()  # no mask pixel outside a box


def test_ink_is_visible_against_the_background() -> None:
    for scene in digit_scenes(8, size=128, seed=5):
        rgb = scene.image.astype(float)
        for (x0, y0, x1, y1), label in zip(scene.boxes.astype(int), scene.labels):
            region, ink = rgb[y0:y1, x0:x1], scene.mask[y0:y1, x0:x1] == 1 + label
            distance = np.linalg.norm(region[ink].mean(axis=0) - region[~ink].mean(axis=0))
            assert distance > 60, f"digit {label} hardly differs from its background (RGB distance {distance:.0f})"


def test_same_seed_same_scenes_other_seed_other_scenes() -> None:
    first, again, other = (list(digit_scenes(3, size=64, seed=s)) for s in (7, 7, 8))
    assert all((a.image == b.image).all() and (a.boxes == b.boxes).all() for a, b in zip(first, again))
    assert any(a.image.shape != b.image.shape or (a.image != b.image).any() for a, b in zip(first, other))


def test_yolo_dataset_labels_match_the_scenes(tmp_path) -> None:
    import yaml
    from PIL import Image

    data_yaml = write_yolo_dataset(tmp_path, train=4, val=2, size=64, seed=1)
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == {i: str(i) for i in range(10)} and data["train"] == "images/train"
    scenes = list(digit_scenes(4, size=64, seed=1))
    for number, scene in enumerate(scenes):
        assert (np.asarray(Image.open(tmp_path / "images" / "train" / f"{number:05d}.png")) == scene.image).all()
        rows = np.loadtxt(tmp_path / "labels" / "train" / f"{number:05d}.txt", ndmin=2)
        assert (rows[:, 0] == scene.labels).all()
        x0, y0, x1, y1 = scene.boxes.T / 64
        np.testing.assert_allclose(
            rows[:, 1:], np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1), atol=1e-6
        )
    assert len(list((tmp_path / "images" / "val").glob("*.png"))) == 2


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="digits_per_scene"):
        next(digit_scenes(1, digits_per_scene=(3, 1)))
