"""Loss functions against hand computations written out with math.log / math.exp."""

from __future__ import annotations

import math

import pytest
import torch

from gan_detect.models.losses import (
    box_regression_loss,
    classification_loss,
    d_adversarial_loss,
    g_adversarial_loss,
    pixel_mse,
)


def softplus(x: float) -> float:
    return math.log(1.0 + math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- pixel MSE ------------------------------------------------------------------------------


def _pixel_pair() -> tuple[torch.Tensor, torch.Tensor]:
    # Two RoIs of 1x1x2 pixels; differences [1, 2] and [0, 4].
    pred = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 4.0]]]], requires_grad=True)
    return pred, torch.zeros(2, 1, 1, 2)


def test_pixel_mse_per_roi_mean_then_roi_mean() -> None:
    pred, target = _pixel_pair()
    roi0, roi1 = (1 + 4) / 2, (0 + 16) / 2  # 2.5, 8.0
    assert pixel_mse(pred, target).item() == pytest.approx((roi0 + roi1) / 2)
    mask = torch.tensor([True, False])
    assert pixel_mse(pred, target, mask).item() == pytest.approx(roi0)
    pixel_mse(pred, target, mask).backward()
    assert pred.grad is not None and torch.all(pred.grad[1] == 0)  # masked RoI gets no gradient
    # d/dp of mean((p - t)^2) over 2 pixels = (p - t): [1, 2] for RoI 0.
    torch.testing.assert_close(pred.grad[0].flatten(), torch.tensor([1.0, 2.0]))


def test_pixel_mse_empty_mask_is_zero_with_graph() -> None:
    pred, target = _pixel_pair()
    loss = pixel_mse(pred, target, torch.zeros(2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert pred.grad is not None and torch.all(pred.grad == 0)


def test_pixel_mse_rejects_bad_mask_and_shapes() -> None:
    pred, target = _pixel_pair()
    with pytest.raises(ValueError, match="bool"):
        pixel_mse(pred, target, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="target"):
        pixel_mse(pred, target[:1])


# --- adversarial ----------------------------------------------------------------------------


def test_d_adversarial_loss_matches_hand_bce() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # BCE(l, 1) = -log(sigmoid(l)) = log(1 + exp(-l)); BCE(l, 0) = log(1 + exp(l)).
    real_term = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    fake_term = (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-3.0))) / 2
    expected = real_term + fake_term
    assert d_adversarial_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_g_adversarial_forms_match_hand_values() -> None:
    logits = torch.tensor([2.0, -1.0])
    # Saturating (the paper's Eq. 5): mean log(1 - sigmoid(l)).
    saturating = (math.log(1 - sigmoid(2.0)) + math.log(1 - sigmoid(-1.0))) / 2
    # Non-saturating: mean -log(sigmoid(l)).
    non_saturating = (-math.log(sigmoid(2.0)) - math.log(sigmoid(-1.0))) / 2
    assert saturating == pytest.approx(-(softplus(2.0) + softplus(-1.0)) / 2)
    assert g_adversarial_loss(logits, "saturating").item() == pytest.approx(saturating, rel=1e-6)
    assert g_adversarial_loss(logits, "non_saturating").item() == pytest.approx(
        non_saturating, rel=1e-6
    )
    assert saturating < 0 < non_saturating


def test_g_adversarial_saturating_gradient_vanishes_when_d_is_confident() -> None:
    grads = {}
    for form in ("saturating", "non_saturating"):
        logit = torch.tensor([-10.0], requires_grad=True)  # D sure the SR image is fake
        g_adversarial_loss(logit, form).backward()  # type: ignore[arg-type]
        assert logit.grad is not None
        grads[form] = logit.grad.item()
    # d/dl [-softplus(l)] = -sigmoid(l) ~ -4.5e-5; d/dl softplus(-l) = -sigmoid(-l) ~ -1.
    assert grads["saturating"] == pytest.approx(-sigmoid(-10.0), rel=1e-4)
    assert grads["non_saturating"] == pytest.approx(-sigmoid(10.0), rel=1e-4)
    # Both push the logit up (towards "real"); only the non-saturating one does so strongly.
    assert grads["non_saturating"] < grads["saturating"] < 0


def test_g_adversarial_rejects_unknown_form() -> None:
    with pytest.raises(ValueError, match="hinge"):
        g_adversarial_loss(torch.zeros(2), "hinge")  # type: ignore[arg-type]


# --- classification -------------------------------------------------------------------------


def test_classification_single_logit_is_face_vs_nonface_bce() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    labels = torch.tensor([1, 0, 3])  # any label > 0 counts as a face (target 1)
    per_roi = [
        math.log(1 + math.exp(-2.0)),  # target 1, logit 2.0: -log sigmoid(2)
        math.log(1 + math.exp(-1.0)),  # target 0, logit -1.0: -log(1 - sigmoid(-1))
        math.log(1 + math.exp(-0.5)),  # target 1, logit 0.5
    ]
    expected = sum(per_roi) / 3
    assert classification_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_classification_multi_logit_is_softmax_ce_background_first() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, -1.0]])
    labels = torch.tensor([1, 0])
    ce0 = -(2.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.0)))
    ce1 = -(0.5 - math.log(math.exp(0.5) + math.exp(0.0) + math.exp(-1.0)))
    assert classification_loss(logits, labels).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_classification_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="3 >= K = 3"):
        classification_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="int64"):
        classification_loss(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="-1"):
        classification_loss(torch.zeros(2, 1), torch.tensor([0, -1]))


# --- box regression -------------------------------------------------------------------------

BETA = 1.0 / 9.0


def _smooth_l1(d: float) -> float:
    d = abs(d)
    return 0.5 * d * d / BETA if d < BETA else d - 0.5 * BETA


def test_box_loss_class_specific_slot_selected_by_label() -> None:
    n, k = 3, 3  # K slots including background slot 0
    deltas = torch.zeros(n, k, 4)
    labels = torch.tensor([2, 0, 1])
    targets = torch.zeros(n, 4)
    deltas[0, 2] = torch.tensor(
        [0.05, 0.0, 1.0, 0.0]
    )  # RoI 0, class 2: |d| 0.05 < beta, 1.0 > beta
    deltas[2, 1] = torch.tensor([0.0, -0.5, 0.0, 0.0])  # RoI 2, class 1
    deltas[0, 1] = 100.0  # other classes' slots of RoI 0 must not count
    deltas[1] = 100.0  # background RoI: no box loss at all
    expected = (_smooth_l1(0.05) + _smooth_l1(1.0) + _smooth_l1(-0.5)) / n  # divided by all N
    assert _smooth_l1(0.05) == pytest.approx(0.5 * 0.0025 * 9)
    loss = box_regression_loss(deltas.view(n, 4 * k), labels, targets, beta=BETA)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_box_loss_class_agnostic() -> None:
    deltas = torch.tensor([[0.2, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.1], [0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([4, 0])
    expected = (_smooth_l1(0.2) + _smooth_l1(-0.1)) / 2
    assert box_regression_loss(deltas, labels, targets).item() == pytest.approx(expected, rel=1e-6)


def test_box_loss_zero_without_foreground_keeps_graph() -> None:
    deltas = torch.ones(2, 8, requires_grad=True)
    loss = box_regression_loss(deltas, torch.tensor([0, 0]), torch.ones(2, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert deltas.grad is not None and torch.all(deltas.grad == 0)


def test_box_loss_rejects_bad_shapes_and_labels() -> None:
    with pytest.raises(ValueError, match="deltas"):
        box_regression_loss(torch.zeros(2, 6), torch.tensor([1, 0]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="targets"):
        box_regression_loss(torch.zeros(2, 8), torch.tensor([1, 0]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="2 >= K = 2"):
        box_regression_loss(torch.zeros(2, 8), torch.tensor([2, 0]), torch.zeros(2, 4))
