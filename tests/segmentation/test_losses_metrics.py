"""Loss, schedule and metrics against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from largekernel.train.segmentation import _parameter_groups, poly_lr_lambda, segmentation_loss, segmentation_metrics
from largekernel.train.segmentation_data import IGNORE_INDEX


def test_metrics_match_a_direct_count() -> None:
    from torchmetrics.classification import MulticlassConfusionMatrix

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(3, 20, 20))
    truth[0, :5] = IGNORE_INDEX
    prediction = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, size=truth.shape))
    prediction[truth == IGNORE_INDEX] = 1
    truth[truth == 3] = 2  # class 3 never labelled, sometimes predicted: IoU 0, counted
    confusion = MulticlassConfusionMatrix(5, ignore_index=IGNORE_INDEX)  # class 4: nowhere, left out
    confusion.update(torch.from_numpy(prediction % 4), torch.from_numpy(truth))
    metrics = segmentation_metrics(confusion.compute())

    valid = truth != IGNORE_INDEX
    t, p = truth[valid], (prediction % 4)[valid]
    ious = [((t == c) & (p == c)).sum() / ((t == c) | (p == c)).sum() for c in range(4)]
    assert metrics["per_class_iou"]["4"] is None
    assert metrics["per_class_iou"]["3"] == 0.0
    assert metrics["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert metrics["aAcc"] == pytest.approx(100 * (t == p).mean())
    assert metrics["mAcc"] == pytest.approx(100 * np.mean([(p[t == c] == c).mean() for c in range(3)]))
    assert metrics["pixels"] == valid.sum()


def test_loss_ignores_255_and_weights_the_aux_head() -> None:
    logits, aux = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)
    masks = torch.randint(0, 3, (2, 8, 8))
    masks[0, 0] = IGNORE_INDEX
    up = lambda x: F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
    keep = masks != IGNORE_INDEX

    def manual(x):
        log_probs = up(x).log_softmax(1).permute(0, 2, 3, 1)[keep]
        return -log_probs.gather(1, masks[keep][:, None]).mean()

    torch.testing.assert_close(segmentation_loss(logits, masks), manual(logits))
    torch.testing.assert_close(segmentation_loss(logits, masks, aux, 0.4), manual(logits) + 0.4 * manual(aux))


def test_poly_schedule_with_linear_warmup() -> None:
    factor = poly_lr_lambda(max_iters=100, warmup_iters=10, power=0.9)
    assert factor(0) == pytest.approx(1e-6, abs=1e-6)
    assert factor(5) == pytest.approx((1 - 5 / 100) ** 0.9 * (1 - 0.5 * (1 - 1e-6)))
    assert factor(10) == pytest.approx(0.9**0.9) and factor(50) == pytest.approx(0.5**0.9)
    assert factor(100) == 0.0 and factor(120) == 0.0
    assert all(factor(i) >= factor(i + 1) for i in range(10, 100))


def test_norms_and_biases_are_not_decayed() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.LayerNorm(4))
    decay, no_decay = _parameter_groups(model, 0.01)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3])]
    assert len(no_decay["params"]) == 5 and no_decay["weight_decay"] == 0.0
    assert not math.isnan(decay["weight_decay"])


def test_ohem_keeps_the_hard_pixels_as_mmseg() -> None:
    from largekernel.train.segmentation import ohem_weights

    # 1 image, 2 classes, 4 pixels with true-class probabilities 0.9, 0.6, 0.3 and one ignored
    p_true = torch.tensor([0.9, 0.6, 0.3, 0.5])
    masks = torch.tensor([[[0, 1, 0, IGNORE_INDEX]]])
    logit_true = torch.log(p_true / (1 - p_true))
    other = torch.zeros(4)
    logits = torch.stack(
        [torch.where(masks[0, 0] == 0, logit_true, other), torch.where(masks[0, 0] == 1, logit_true, other)]
    )[None, :, None, :]
    logits = logits[:, :, 0, :][:, :, None, :]  # (1, 2, 1, 4)
    assert ohem_weights(logits, masks, thresh=0.7, min_kept=1).tolist() == [[[0.0, 1.0, 1.0, 0.0]]]
    # too few below the threshold: the min_kept-th smallest probability raises it
    assert ohem_weights(logits, masks, thresh=0.1, min_kept=1).tolist() == [[[0.0, 0.0, 1.0, 0.0]]]
    assert ohem_weights(logits, masks, thresh=0.1, min_kept=2).tolist() == [[[0.0, 1.0, 1.0, 0.0]]]
    loss = segmentation_loss(logits, masks, ohem_thresh=0.7, ohem_min_kept=1)
    assert loss.item() == pytest.approx(-(math.log(0.6) + math.log(0.3)) / 3, rel=1e-5)
