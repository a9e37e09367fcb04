import pytest
import torch

from crabser.losses import (
    focal_loss,
    multi_positive_contrastive_loss,
    supervised_contrastive_loss,
    weighted_cross_entropy,
)
from crabser.models.base import ModelOutput
from crabser.training.objective import TrainingObjective

TAPS = {"speech_unimodal": 6, "speech_pooled": 8, "fused": 4}


def _output(batch=6, classes=3):
    torch.manual_seed(0)
    return ModelOutput(
        torch.randn(batch, classes), {name: torch.randn(batch, dim) for name, dim in TAPS.items()}
    )


LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def test_mlcs_total_is_classification_plus_alpha_times_mean_leg_mpcl():
    objective = TrainingObjective(TAPS, None, 3, alpha=0.5, tau=0.2, leg_dim=5)
    output = _output()
    parts = objective(output, LABELS)
    terms = [
        multi_positive_contrastive_loss(leg(output.taps[n]), LABELS, 0.2)
        for n, leg in objective.legs.items()
    ]
    assert set(objective.legs) == set(TAPS)
    assert parts.classification.item() == pytest.approx(
        weighted_cross_entropy(output.logits, LABELS).item()
    )
    assert parts.total.item() == pytest.approx(
        parts.classification.item() + 0.5 * sum(t.item() for t in terms) / 3, rel=1e-6
    )


def test_final_only_and_no_legs():
    final = TrainingObjective(TAPS, None, 3, legs="final")
    assert list(final.legs) == ["fused"]
    plain = TrainingObjective(TAPS, torch.tensor([1.0, 2.0, 3.0]), 3, legs="none")
    output = _output()
    parts = plain(output, LABELS)
    assert parts.legs is None and not len(plain.legs)
    assert parts.total.item() == pytest.approx(
        weighted_cross_entropy(output.logits, LABELS, torch.tensor([1.0, 2.0, 3.0])).item()
    )
    with pytest.raises(ValueError, match="fused"):
        TrainingObjective({"speech_pooled": 8}, None, 3, legs="final")


def test_multi_layer_supervision_with_ce_heads():
    weights = torch.tensor([1.0, 2.0, 3.0])
    objective = TrainingObjective(TAPS, weights, 3, leg_loss="ce", alpha=1.0)
    assert all(leg.net[-1].out_features == 3 for leg in objective.legs.values())
    output = _output()
    parts = objective(output, LABELS)
    terms = [
        weighted_cross_entropy(leg(output.taps[n]), LABELS, weights)
        for n, leg in objective.legs.items()
    ]
    assert parts.legs.item() == pytest.approx(sum(t.item() for t in terms) / 3, rel=1e-6)


def test_supcon_legs_and_focal_classifier():
    objective = TrainingObjective(
        TAPS,
        None,
        3,
        classifier="focal",
        focal_gamma=1.5,
        leg_loss="supcon",
        supcon_variant="in",
        tau=0.3,
    )
    output = _output()
    parts = objective(output, LABELS)
    assert parts.classification.item() == pytest.approx(
        focal_loss(output.logits, LABELS, 1.5).item()
    )
    terms = [
        supervised_contrastive_loss(leg(output.taps[n]), LABELS, 0.3, "in")
        for n, leg in objective.legs.items()
    ]
    assert parts.legs.item() == pytest.approx(sum(t.item() for t in terms) / 3, rel=1e-6)


def test_mixup_output_mixes_the_labels():
    weights = torch.tensor([1.0, 2.0, 3.0])
    objective = TrainingObjective(TAPS, weights, 3, legs="none")
    output = _output()
    permutation = torch.tensor([1, 0, 3, 2, 5, 4])
    mixed = ModelOutput(output.logits, {}, (permutation, 0.25))
    one_hot = torch.nn.functional.one_hot(LABELS, 3).float()
    soft = 0.25 * one_hot + 0.75 * one_hot[permutation]
    log_p = output.logits.log_softmax(-1)
    expected = -(soft * weights * log_p).sum() / (soft * weights).sum()
    assert objective(mixed, LABELS).total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="unmixed"):
        TrainingObjective(TAPS, None, 3)(mixed, LABELS)


def test_eam_mix_gives_soft_targets_and_legs_use_the_dominant_label():
    objective = TrainingObjective(TAPS, None, 3, legs="final", alpha=1.0)
    output = _output()
    others, lambdas = torch.tensor([1, 2, 0, 1, 2, 0]), torch.full((6,), 0.2)
    parts = objective(output, LABELS, (others, lambdas))
    soft = 0.8 * torch.nn.functional.one_hot(LABELS, 3) + 0.2 * torch.nn.functional.one_hot(
        others, 3
    )
    expected = -(soft * output.logits.log_softmax(-1)).sum(-1).mean()
    assert parts.classification.item() == pytest.approx(expected.item(), rel=1e-6)
    leg = multi_positive_contrastive_loss(
        objective.legs["fused"](output.taps["fused"]), LABELS, objective.tau
    )
    assert parts.legs.item() == pytest.approx(leg.item(), rel=1e-6)


def test_soft_margin_term_is_added_for_neutral_vs_expressive():
    from crabser.losses.soft_margin import neutral_soft_margin_loss

    objective = TrainingObjective(
        TAPS, None, 3, legs="none", soft_margin_weight=0.5, neutral_index=2
    )
    assert objective.wants_taps
    output = _output()
    parts = objective(output, LABELS)
    margin = neutral_soft_margin_loss(
        objective.margin_head(output.taps["fused"]).squeeze(-1), LABELS, 2
    )
    expected = weighted_cross_entropy(output.logits, LABELS).item() + 0.5 * margin.item()
    assert parts.total.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="neutral class"):
        TrainingObjective(TAPS, None, 3, soft_margin_weight=1.0)


def test_the_mpcl_mean_follows_the_config_and_old_runs_keep_theirs():
    from crabser.config import LossConfig, ModelConfig
    from crabser.training.objective import build_objective

    loss, model = LossConfig().model_dump(), ModelConfig().model_dump()
    fresh = build_objective(loss, model, {"fused": 8}, None, 2)
    assert fresh.mpcl_anchors == "all"  # the reference code's mean, the default
    old = {k: v for k, v in loss.items() if k != "mpcl_anchors"}  # a run saved before the setting
    assert build_objective(old, model, {"fused": 8}, None, 2).mpcl_anchors == "with_positive"
    torch.manual_seed(0)
    embedding, labels = (
        torch.randn(4, 8),
        torch.tensor([0, 0, 1, 2]),
    )  # two anchors without a positive
    assert fresh.leg_term(embedding, labels).item() == pytest.approx(
        build_objective(old, model, {"fused": 8}, None, 2).leg_term(embedding, labels).item() / 2,
        rel=1e-6,
    )
