"""ADE20K-style folders: pairs, sizes, label ranges, the zero-label convention; the embedded scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from largekernel.errors import DataError
from largekernel.train.segmentation_data import (
    IGNORE_INDEX,
    SCENE_CLASSES,
    SegmentationFolder,
    denormalise,
    load_segmentation_data,
    pad_collate,
    write_scene_folders,
)


@pytest.fixture()
def folder(tmp_path):
    return write_scene_folders(tmp_path / "ade", train=4, val=2, size=48, seed=3)


def test_written_folder_round_trips_the_scenes(folder) -> None:
    from largekernel.train.scenes import digit_scenes
    from largekernel.train.segmentation_data import SCENE_LAYOUT

    data = load_segmentation_data(str(folder), img_size=48)
    assert data.classes == SCENE_CLASSES and len(data.train) == 4 and len(data.val) == 2
    image, mask = data.val.load_pair(0)
    scene = next(iter(digit_scenes(1, 48, seed=3 + 1_000_003, **SCENE_LAYOUT)))
    assert (image == scene.image).all() and (mask == scene.mask).all()  # lossless PNGs, validation seed
    val_image, val_mask = data.val[0]  # held-out: resized to the short side only, no augmentation
    assert val_image.shape == (3, 48, 48) and torch.equal(val_mask, torch.from_numpy(scene.mask).long())
    assert (denormalise(val_image).astype(int) - scene.image).__abs__().max() <= 1


def test_training_crops_are_square_and_padded_with_the_ignore_label(folder) -> None:
    dataset = SegmentationFolder(folder, "training", 11, img_size=64, train=True)
    torch.manual_seed(0)
    import random

    random.seed(0)
    shapes, saw_ignore = set(), False
    for _ in range(20):  # scale < 1 (a padded crop) has probability 1/3 per draw
        image, mask = dataset[0]
        shapes.add((tuple(image.shape), tuple(mask.shape)))
        values = set(mask.unique().tolist())
        assert values <= set(range(11)) | {IGNORE_INDEX}
        saw_ignore |= IGNORE_INDEX in values
    assert shapes == {((3, 64, 64), (64, 64))}
    assert saw_ignore  # a 48 px image scaled by 0.5-2 and cropped to 64 is often padded


def test_image_without_annotation_is_named(folder) -> None:
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(folder / "images" / "training" / "orphan.png")
    with pytest.raises(
        DataError, match=r"mismatched image/mask pairs: 1 image\(s\) .* without an annotation PNG \(e.g. orphan.png\)"
    ):
        load_segmentation_data(str(folder))


def test_annotation_without_image_is_named(folder) -> None:
    Image.fromarray(np.zeros((48, 48), np.uint8), mode="L").save(folder / "annotations" / "validation" / "lonely.png")
    with pytest.raises(DataError, match=r"annotation\(s\) .* without an image \(e.g. lonely.png\)"):
        load_segmentation_data(str(folder))


def test_image_and_mask_of_different_sizes(folder) -> None:
    Image.fromarray(np.zeros((40, 48), np.uint8), mode="L").save(
        folder / "annotations" / "training" / "scene_00001.png"
    )
    dataset = SegmentationFolder(folder, "training", 11, 48, train=False)
    dataset[0]  # the others are fine
    with pytest.raises(DataError, match=r"scene_00001.png is 48x48 but .*scene_00001.png is 48x40"):
        dataset[1]


def test_label_values_out_of_range(folder) -> None:
    mask = np.zeros((48, 48), np.uint8)
    mask[0, :3] = [11, 12, 255]  # 255 is the ignore label, fine
    Image.fromarray(mask, mode="L").save(folder / "annotations" / "validation" / "scene_00000.png")
    dataset = SegmentationFolder(folder, "validation", 11, 48, train=False)
    with pytest.raises(
        DataError, match=r"scene_00000.png: label values \[11, 12\] out of range: expected 0..10 or 255"
    ):
        dataset[0]


def test_reduce_zero_label_is_ade20k_convention(folder) -> None:
    mask = np.array([[0, 1, 2], [150, 255, 3]], np.uint8)
    (folder / "classes.txt").write_text("\n".join(f"c{i}" for i in range(150)))
    for split in ("training", "validation"):
        for path in (folder / "annotations" / split).glob("*.png"):
            Image.fromarray(mask, mode="L").save(path)
            Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(folder / "images" / split / path.name)
    dataset = SegmentationFolder(folder, "validation", 150, 2, train=False, reduce_zero_label=True)
    assert dataset.load_pair(0)[1].tolist() == [[255, 0, 1], [149, 255, 2]]
    with pytest.raises(DataError, match=r"\[150\] out of range"):
        SegmentationFolder(folder, "validation", 150, 2, train=False).load_pair(0)


def test_folder_needs_a_class_count(tmp_path, folder) -> None:
    (folder / "classes.txt").unlink()
    with pytest.raises(DataError, match="--num-classes"):
        load_segmentation_data(str(folder))
    assert load_segmentation_data(str(folder), num_classes=11).num_classes == 11
    with pytest.raises(DataError, match="neither the embedded 'scenes' nor a folder"):
        load_segmentation_data(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"images/training/ and annotations/training/"):
        load_segmentation_data(str(tmp_path), num_classes=3)


def test_pad_collate_pads_masks_with_ignore() -> None:
    images, masks = pad_collate(
        [
            (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.long)),
            (torch.ones(3, 4, 2), torch.ones(4, 2, dtype=torch.long)),
        ]
    )
    assert images.shape == (2, 3, 4, 3) and masks.shape == (2, 4, 3)
    assert (
        (masks[0, 2:] == IGNORE_INDEX).all()
        and (masks[1, :, 2] == IGNORE_INDEX).all()
        and images[0, :, 2:].abs().sum() == 0
    )


def test_embedded_scenes_have_eleven_classes_and_disjoint_splits() -> None:
    data = load_segmentation_data("scenes", img_size=48, train_count=6, val_count=3)
    assert data.num_classes == 11 and data.classes[0] == "background"
    assert data.train[0][0].shape == (3, 48, 48) and data.train[0][1].max() <= 10
    assert not any(torch.equal(data.train[i][0], data.val[j][0]) for i in range(6) for j in range(3))
