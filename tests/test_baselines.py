"""The compared systems: built by name, shapes and taps, padding-invariant, and able to learn."""

import pytest
import torch

from crabser.config import ModelConfig
from crabser.features.encoders import pad_batch
from crabser.models.registry import MODELS, build_model
from crabser.training.objective import TrainingObjective

DIMS = {"speech": 6, "text": 5}
MODALITIES = {
    "wavlm_baseline": ("speech",),
    "focalser": ("speech", "text"),
    "memocmt": ("speech", "text"),
    "medusa": ("speech", "text"),
    "crab": ("speech", "text"),
    "mll": ("speech",),
}


def _model(name, **overrides):
    torch.manual_seed(0)
    config = ModelConfig(
        name=name, hidden=16, heads=2, dropout=0.0, attention_dropout=0.0, **overrides
    ).model_dump()
    return build_model(config, {m: DIMS[m] for m in MODALITIES[name]}, num_classes=3)


def _batch(modalities, lengths, pad_to=None):
    torch.manual_seed(1)
    features, masks = {}, {}
    for m in modalities:
        items = [torch.randn(n, DIMS[m]) for n in lengths[m]]
        batch = pad_batch(items)
        x, mask = batch.features, batch.mask
        if pad_to:  # extra padded frames full of junk must change nothing
            extra = pad_to - x.shape[1]
            junk = 100 * torch.randn(
                len(items), extra, DIMS[m], generator=torch.Generator().manual_seed(9)
            )
            x = torch.cat([x, junk], dim=1)
            mask = torch.cat([mask, torch.zeros(len(items), extra, dtype=torch.bool)], dim=1)
        features[m], masks[m] = x, mask
    return features, masks


LENGTHS = {"speech": [9, 4, 7], "text": [3, 5, 2]}


@pytest.mark.parametrize("name", MODELS)
def test_shapes_taps_and_padding(name):
    model = _model(name).eval()
    features, masks = _batch(model.modalities, LENGTHS)
    out = model(features, masks, return_taps=True)
    assert out.logits.shape == (3, 3)
    assert "fused" in out.taps
    for tap, dim in model.tap_dims().items():
        assert out.taps[tap].shape == (3, dim)
    padded = model(*_batch(model.modalities, LENGTHS, pad_to=12))
    assert torch.allclose(out.logits, padded.logits, atol=1e-5)


@pytest.mark.parametrize("name", ["wavlm_baseline", "focalser", "memocmt", "medusa"])
def test_each_system_fits_a_small_separable_set(name):
    overrides = {"mixup_alpha": 0.4} if name == "medusa" else {}
    model = _model(name, **overrides)
    torch.manual_seed(2)
    classes, n = 3, 24
    labels = torch.arange(n) % classes
    centres = {m: torch.randn(classes, d) * 2 for m, d in DIMS.items()}
    features, masks = {}, {}
    for m in model.modalities:
        batch = pad_batch(
            [
                centres[m][y] + 0.3 * torch.randn(int(torch.randint(2, 9, ())), DIMS[m])
                for y in labels
            ]
        )
        features[m], masks[m] = batch.features, batch.mask
    objective = TrainingObjective(
        model.tap_dims(),
        None,
        classes,
        classifier="focal" if name == "focalser" else "ce",
        legs="none",
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        parts = objective(model(features, masks), labels)
        optimiser.zero_grad()
        parts.total.backward()
        optimiser.step()
        losses.append(parts.total.item())
    model.eval()
    assert (model(features, masks).logits.argmax(-1) == labels).all()
    assert losses[-1] < 0.5 * losses[0]


def test_medusa_mixes_only_in_training_and_others_refuse_mixup():
    model = _model("medusa", mixup_alpha=0.4)
    features, masks = _batch(model.modalities, LENGTHS)
    permutation, lam = model.train()(features, masks).mixup
    assert sorted(permutation.tolist()) == [0, 1, 2] and 0.0 <= lam <= 1.0
    assert model.eval()(features, masks).mixup is None
    with pytest.raises(ValueError, match="Medusa"):
        _model("crab", mixup_alpha=0.4)


def test_systems_check_their_modalities():
    config = ModelConfig(name="memocmt").model_dump()
    with pytest.raises(ValueError, match="bimodal"):
        build_model(config, {"text": 5}, 3)
    with pytest.raises(ValueError, match="speech only"):
        build_model(ModelConfig(name="wavlm_baseline").model_dump(), {"speech": 6, "text": 5}, 3)


def test_multi_loss_model_and_objective_fit_and_cluster():
    from crabser.config import LossConfig
    from crabser.training.objective import build_objective

    model = _model("mll")
    torch.manual_seed(2)
    classes, n = 3, 24
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, DIMS["speech"]) * 2
    batch = pad_batch(
        [
            centres[y] + 0.3 * torch.randn(int(torch.randint(2, 9, ())), DIMS["speech"])
            for y in labels
        ]
    )
    features, masks = {"speech": batch.features}, {"speech": batch.mask}
    config = ModelConfig(name="mll", hidden=16, heads=2).model_dump()
    objective = build_objective(
        LossConfig(name="multi_loss").model_dump(), config, model.tap_dims(), None, classes
    )
    out = model(features, masks, return_taps=True)
    frames, frame_mask = out.frames
    assert frames.shape == (n, batch.features.shape[1], 64) and torch.equal(frame_mask, batch.mask)
    assert out.taps["center"].shape == (n, 64)
    optimiser = torch.optim.Adam([*model.parameters(), *objective.parameters()], lr=3e-3)
    first = None
    for _ in range(120):
        parts = objective(model(features, masks, return_taps=True), labels)
        optimiser.zero_grad()
        parts.total.backward()
        optimiser.step()
        first = first if first is not None else (parts.classification.item(), parts.legs.item())
    model.eval()
    assert (model(features, masks).logits.argmax(-1) == labels).all()
    assert parts.classification.item() < 0.3 * first[0] and parts.legs.item() < first[1]
    with pytest.raises(ValueError, match="model.name: mll"):
        objective(
            _model("crab")(*_batch(("speech", "text"), LENGTHS), return_taps=True), labels[:3]
        )


def test_a_new_model_is_one_subclass_built_from_the_settings():
    """docs/architecture.md's seventh system: a SERModel subclass gets the common settings and
    the ones its constructor names from ModelConfig, and keeps the contract."""
    from torch import nn

    from crabser.models.base import ModelOutput, SERModel
    from crabser.models.blocks import ClassifierHead, ModalityProjection, masked_mean

    class MeanPool(SERModel):
        def __init__(self, input_dims, num_classes, heads: int = 1, **common):
            super().__init__(input_dims, num_classes, **common)
            self.heads = heads
            self.projections = nn.ModuleDict(
                {m: ModalityProjection(d, self.hidden) for m, d in input_dims.items()}
            )
            self.classifier = ClassifierHead(
                self.hidden * len(input_dims), self.hidden, num_classes, self.dropout
            )

        def tap_dims(self):
            return {"fused": self.hidden}

        def forward(self, features, masks, return_taps=False):
            inputs, frame_masks = self.input_stage(features, masks)
            pooled = [
                masked_mean(self.projections[m](inputs[m]), frame_masks[m]) for m in self.modalities
            ]
            logits, fused = self.classifier(torch.cat(pooled, dim=-1))
            return ModelOutput(logits, {"fused": fused} if return_taps else {})

    settings = ModelConfig(hidden=12, heads=3, dropout=0.25, speech_frame_stride=2)
    model = MeanPool.from_config(settings, DIMS, num_classes=4, speech_layers=0)
    assert (model.hidden, model.heads, model.dropout, model.num_classes) == (12, 3, 0.25, 4)
    assert model.modalities == ("speech", "text")
    out = model(*_batch(model.modalities, LENGTHS), return_taps=True)
    assert out.logits.shape == (3, 4) and out.taps["fused"].shape == (3, 12)
    # a saved dump of the settings (a checkpoint's) builds the same model
    again = MeanPool.from_config(settings.model_dump(), DIMS, num_classes=4)
    assert again.hidden == 12 and again.heads == 3


def test_the_config_knows_which_model_reads_which_setting():
    """config.MODEL_SETTINGS (used to refuse settings a model ignores) matches the constructors."""
    import inspect

    from crabser.config import MODEL_SETTINGS

    for name, model in MODELS.items():
        own = set(inspect.signature(model.__init__).parameters) & set(ModelConfig.model_fields)
        declared = {setting for setting, models in MODEL_SETTINGS.items() if name in models}
        assert own == declared, name
