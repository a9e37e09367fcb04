import math

import pytest
import torch

from crabser.losses import (
    focal_loss,
    inverse_frequency_weights,
    multi_positive_contrastive_loss,
    supervised_contrastive_loss,
    weighted_cross_entropy,
)


def test_mpcl_matches_hand_computed_four_item_example():
    # z1 = z2 = e1, z3 = z4 = e2; labels 0,0,0,1; tau = 0.5 -> dots scaled by 2.
    # L = log(e^2 + 2). anchors 1 and 2: L - 1; anchor 3: L; anchor 4 has no positive: 0 in the
    # reference's mean over all four anchors, left out of the mean over anchors with a positive.
    embeddings = torch.tensor(
        [[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]]
    )  # unnormalised on purpose
    labels = torch.tensor([0, 0, 0, 1])
    big_l = math.log(math.e**2 + 2)
    total = (big_l - 1) * 2 + big_l
    assert multi_positive_contrastive_loss(embeddings, labels, tau=0.5).item() == pytest.approx(
        total / 4, rel=1e-6
    )
    with_positive = multi_positive_contrastive_loss(
        embeddings, labels, tau=0.5, anchors="with_positive"
    )
    assert with_positive.item() == pytest.approx(total / 3, rel=1e-6)


def test_mpcl_tau_one_and_all_anchors_with_positives():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # every anchor: one positive at dot 1, two negatives at dot 0 -> log(e + 2) - 1
    assert multi_positive_contrastive_loss(embeddings, labels, tau=1.0).item() == pytest.approx(
        math.log(math.e + 2) - 1
    )


def test_mpcl_without_any_positive_is_zero_and_differentiable():
    embeddings = torch.randn(3, 4, requires_grad=True)
    loss = multi_positive_contrastive_loss(embeddings, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0
    assert embeddings.grad is not None


def test_mpcl_pulls_same_label_items_together():
    torch.manual_seed(0)
    embeddings = torch.randn(8, 16, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    optimiser = torch.optim.SGD([embeddings], lr=0.5)
    first = None
    for _ in range(50):
        loss = multi_positive_contrastive_loss(embeddings, labels, tau=0.1)
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.1 * first


def test_weighted_cross_entropy_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([0, 0, 1])
    weights = torch.tensor([1.0, 3.0])
    expected = (math.log(1 + math.exp(-2)) + math.log(2) + 3 * math.log(2)) / 5
    assert weighted_cross_entropy(logits, targets, weights).item() == pytest.approx(
        expected, rel=1e-6
    )
    # a constant factor on the weights cancels (paper N/N_j vs reference N/(C N_j))
    assert weighted_cross_entropy(logits, targets, weights * 7).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_inverse_frequency_weights_are_n_over_n_j():
    weights = inverse_frequency_weights(torch.tensor([0, 0, 0, 1]), num_classes=3)
    assert weights.tolist() == pytest.approx([4 / 3, 4.0, 0.0])


FOUR_ITEMS = (
    torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]]),
    torch.tensor([0, 0, 0, 1]),
)


def test_supcon_out_counts_anchors_without_positive_as_zero():
    # as the MPCL example: anchors 1, 2: L - 1, anchor 3: L, anchor 4 (no positive): 0, mean over 4
    big_l = math.log(math.e**2 + 2)
    expected = ((big_l - 1) * 2 + big_l) / 4
    assert supervised_contrastive_loss(*FOUR_ITEMS, tau=0.5).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_supcon_in_puts_the_log_outside_the_sum():
    # anchor 1: positives at scaled dots 2 and 0, one negative at 0 -> -log((e^2 + 1) / (2 (e^2 +
    # 2))) anchor 3: positives at 0 and 0, the negative at 2 -> log(e^2 + 2); anchor 4: 0
    e2 = math.e**2
    first = -math.log((e2 + 1) / (2 * (e2 + 2)))
    expected = (2 * first + math.log(e2 + 2)) / 4
    assert supervised_contrastive_loss(*FOUR_ITEMS, tau=0.5, variant="in").item() == pytest.approx(
        expected, rel=1e-6
    )


def test_supcon_out_equals_mpcl_when_every_anchor_has_a_positive():
    torch.manual_seed(0)
    embeddings, labels = torch.randn(12, 8), torch.tensor([0, 1, 2] * 4)
    assert supervised_contrastive_loss(embeddings, labels, tau=0.1).item() == pytest.approx(
        multi_positive_contrastive_loss(embeddings, labels, tau=0.1).item(), rel=1e-6
    )


def test_focal_loss_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    targets = torch.tensor([1, 0])
    easy, hard = (1 / 4) ** 2 * math.log(4 / 3), (3 / 4) ** 2 * math.log(4)
    assert focal_loss(logits, targets, gamma=2.0).item() == pytest.approx(
        (easy + hard) / 2, rel=1e-6
    )
    weights = torch.tensor([3.0, 1.0])
    assert focal_loss(logits, targets, 2.0, weights).item() == pytest.approx(
        (easy + 3 * hard) / 4, rel=1e-6
    )


def test_focal_loss_with_gamma_zero_is_weighted_ce_and_takes_soft_targets():
    torch.manual_seed(0)
    logits, targets, weights = (
        torch.randn(6, 4),
        torch.tensor([0, 1, 2, 3, 1, 1]),
        torch.tensor([1.0, 2.0, 0.5, 3.0]),
    )
    assert focal_loss(logits, targets, 0.0, weights).item() == pytest.approx(
        weighted_cross_entropy(logits, targets, weights).item(), rel=1e-6
    )
    one_hot = torch.nn.functional.one_hot(targets, 4).float()
    assert focal_loss(logits, one_hot, 2.0).item() == pytest.approx(
        focal_loss(logits, targets, 2.0).item(), rel=1e-6
    )


def test_neutral_soft_margin_loss_hand_computed():
    from crabser.losses.soft_margin import neutral_soft_margin_loss

    scores = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([3, 0, 1])  # neutral = 3: targets +1, -1, -1
    expected = (
        math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))
    ) / 3
    assert neutral_soft_margin_loss(scores, labels, neutral=3).item() == pytest.approx(
        expected, rel=1e-6
    )
