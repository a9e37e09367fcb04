import math

import pytest
import torch

from crabser.features.encoders import pad_batch
from crabser.models.blocks import (
    AttentionPooling,
    BiGRU,
    FeatureNormalizer,
    InputMasking,
    downsample_frames,
    masked_mean,
    masked_mean_std,
)
from crabser.models.crab import TAP_NAMES, Crab, tap_names
from crabser.training.objective import TrainingObjective
from crabser.training.optim import cosine_factor, parameter_groups

DIMS = {"speech": 6, "text": 5, "paralinguistic": 4}


def _crab(modalities=("speech", "text"), **kwargs):
    torch.manual_seed(0)
    return Crab({m: DIMS[m] for m in modalities}, num_classes=3, hidden=8, **kwargs).eval()


def _inputs(modalities, batch=4):
    lengths = {"speech": 11, "text": 7, "paralinguistic": 9}
    features = {m: torch.randn(batch, lengths[m], DIMS[m]) for m in modalities}
    masks = {m: torch.ones(batch, lengths[m], dtype=torch.bool) for m in modalities}
    return features, masks


def test_bigru_matches_a_packed_bidirectional_gru():
    torch.manual_seed(0)
    ours = BiGRU(5)
    reference = torch.nn.GRU(5, 5, batch_first=True, bidirectional=True)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(ours.forward_gru, f"{name}_l0").data.copy_(getattr(reference, f"{name}_l0"))
        getattr(ours.backward_gru, f"{name}_l0").data.copy_(
            getattr(reference, f"{name}_l0_reverse")
        )
    lengths = torch.tensor([7, 3, 1, 5])
    x = torch.randn(4, 7, 5)
    mask = torch.arange(7)[None, :] < lengths[:, None]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, lengths, batch_first=True, enforce_sorted=False
    )
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(
        reference(packed)[0], batch_first=True, total_length=7
    )
    out = ours(x, mask)
    assert torch.allclose(out, expected, atol=1e-6)
    assert (out[~mask] == 0).all()


def test_shapes_and_taps():
    model = _crab()
    features, masks = _inputs(("speech", "text"))
    out = model(features, masks, return_taps=True)
    assert out.logits.shape == (4, 3)
    assert set(out.taps) == set(TAP_NAMES)
    for name, dim in model.tap_dims().items():
        assert out.taps[name].shape == (4, dim)
    assert model(features, masks).taps == {}


def test_unimodal_and_trimodal_variants():
    text_only = _crab(("text",))
    assert not len(text_only.cross)  # the cross-modal block is removed
    out = text_only(*_inputs(("text",)), return_taps=True)
    assert out.logits.shape == (4, 3) and set(out.taps) == set(tap_names(("text",))) == {
        "text_unimodal",
        "text_pooled",
        "fused",
    }
    trimodal = _crab(("speech", "text", "paralinguistic"))
    assert len(trimodal.cross) == 6  # each modality attends to each other one
    out = trimodal(*_inputs(("speech", "text", "paralinguistic")), return_taps=True)
    assert out.logits.shape == (4, 3) and len(out.taps) == 7
    assert trimodal.classifier.norm.normalized_shape == (3 * 2 * 8,)


def test_feature_normalizer_uses_its_statistics():
    normalizer = FeatureNormalizer((2,))
    x = torch.tensor([[1.0, 10.0]])
    assert torch.equal(normalizer(x), x)  # identity until statistics are set
    normalizer.set_statistics(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(normalizer(x), torch.tensor([[0.0, 6.0 / 1e-5]]))
    assert "mean" in normalizer.state_dict()  # saved with the model


def test_padding_never_changes_an_utterances_logits():
    torch.manual_seed(1)
    speech = [torch.randn(n, 6) for n in (3, 9, 5)]
    text = [torch.randn(n, 5) for n in (4, 2, 6)]
    for stride, statistics in ((1, False), (2, False), (1, True), (2, True)):
        model = _crab(frame_strides={"speech": stride}, input_statistics=statistics)
        alone = [
            model(
                {"speech": s[None], "text": t[None]},
                {
                    "speech": torch.ones(1, len(s), dtype=torch.bool),
                    "text": torch.ones(1, len(t), dtype=torch.bool),
                },
            ).logits
            for s, t in zip(speech, text)
        ]
        s_batch, t_batch = (
            pad_batch(speech + [torch.randn(15, 6)]),
            pad_batch(text + [torch.randn(9, 5)]),
        )
        # garbage in the padding must not leak through any mask
        s_batch.features[~s_batch.mask] = 1e3
        t_batch.features[~t_batch.mask] = -1e3
        batched = model(
            {"speech": s_batch.features, "text": t_batch.features},
            {"speech": s_batch.mask, "text": t_batch.mask},
            return_taps=True,
        )
        for i, logits in enumerate(alone):
            torch.testing.assert_close(batched.logits[i], logits[0], atol=1e-5, rtol=1e-4)


def test_input_masking_blanks_spans_and_channels_in_training_only():
    torch.manual_seed(0)
    x = torch.ones(64, 200, 32)
    mask = torch.ones(64, 200, dtype=torch.bool)
    mask[:, 100:] = False  # 100 real frames each
    masking = InputMasking(time_share=0.2, feature_share=0.25, span=5).train()
    out = masking(x, mask)
    blank_frames = (out == 0).all(dim=-1)[:, :100]  # frames zeroed in every channel
    assert 0.12 < blank_frames.float().mean() < 0.25  # about 1 - (1 - 0.2 / 5) ** 5 = 0.18
    for row in (
        blank_frames
    ):  # blanked frames come in runs of at least 5 (a run at the clip's end may be cut)
        runs = (
            torch.diff(torch.cat([torch.tensor([0]), row.int(), torch.tensor([0])]))
            .nonzero()
            .flatten()
        )
        assert all(
            end - start >= 5
            for start, end in zip(runs[::2].tolist(), runs[1::2].tolist())
            if end < 100
        )
    blank_channels = (out[:, :100] == 0).all(dim=1)  # (B, D): channels zeroed over the whole clip
    assert 0.15 < blank_channels.float().mean() < 0.35
    assert torch.equal(out[(out != 0)], x[(out != 0)])  # the rest is untouched
    short = InputMasking(time_share=0.9, span=5).train()(
        torch.ones(2, 4, 3), torch.ones(2, 4, dtype=torch.bool)
    )
    assert torch.equal(short, torch.ones(2, 4, 3))  # a clip no longer than a span keeps its frames
    assert torch.equal(masking.eval()(x, mask), x)  # evaluation is never masked


def test_models_mask_speech_inputs_only_when_configured():
    from crabser.config import ModelConfig
    from crabser.models.registry import build_model

    dims = {"speech": 6, "text": 5}
    plain = build_model(ModelConfig().model_dump(), dims, 3)
    assert (
        plain.input_stage.masking.time_share == 0 and plain.input_stage.masking.feature_share == 0
    )
    masked = build_model(
        ModelConfig(mask_time=0.3, mask_features=0.1, mask_span=4).model_dump(), dims, 3
    )
    assert (
        masked.input_stage.masking.time_share,
        masked.input_stage.masking.feature_share,
        masked.input_stage.masking.span,
    ) == (0.3, 0.1, 4)
    old = {k: v for k, v in ModelConfig().model_dump().items() if not k.startswith("mask_")}
    assert (
        build_model(old, dims, 3).input_stage.masking.time_share == 0
    )  # runs saved before the setting
    masked.input_stage.masking.feature_share = 1.0  # every speech channel blank: the text must pass
    masked.train()
    features = {"speech": torch.randn(2, 7, 6), "text": torch.randn(2, 4, 5)}
    masks = {m: torch.ones(2, f.shape[1], dtype=torch.bool) for m, f in features.items()}
    seen = {}
    for name in dims:
        masked.projections[name].register_forward_hook(
            lambda mod, inp, out, name=name: seen.update({name: inp[0]})
        )
    masked(features, masks)
    assert torch.equal(seen["speech"], torch.zeros_like(seen["speech"]))
    assert not torch.equal(seen["text"], torch.zeros_like(seen["text"]))


def test_masked_helpers():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mean(x, mask).item() == 2.0
    assert masked_mean_std(x, mask)[0].tolist() == [2.0, 1.0]  # population std of 1 and 3
    pooled, pooled_mask = downsample_frames(x, mask, 2)
    assert pooled[0, :, 0].tolist() == [2.0, 0.0] and pooled_mask.tolist() == [[True, False]]
    pooling = AttentionPooling(1)
    assert pooling(x, mask).item() < 3.0 + 1e-6  # the 100 at the padded frame has no weight


def test_input_statistics_feed_the_classifier_the_probes_features():
    plain, with_statistics = _crab(), _crab(input_statistics=True)
    # two pooled bi-GRU outputs (2h each), then mean and std of each modality's inputs
    assert plain.classifier.norm.normalized_shape == (2 * 2 * 8,)
    assert with_statistics.classifier.norm.normalized_shape == (2 * 2 * 8 + 2 * (6 + 5),)
    features, masks = _inputs(("speech", "text"), batch=1)
    out = with_statistics(features, masks, return_taps=True)
    assert out.logits.shape == (1, 3) and out.taps["fused"].shape == (1, 8)
    # classes that differ only in how much their frames spread: mean 0, std 0.2 vs 3
    torch.manual_seed(0)
    labels = torch.arange(16) % 2
    speech = [(0.2 + 2.8 * y) * torch.randn(int(torch.randint(6, 12, ())), 6) for y in labels]
    batch = pad_batch(speech)
    model = Crab({"speech": 6}, 2, hidden=8, dropout=0.0, input_statistics=True)
    optimiser = torch.optim.AdamW(model.parameters(), 1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(
            model({"speech": batch.features}, {"speech": batch.mask}).logits, labels
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    logits = model({"speech": batch.features}, {"speech": batch.mask}).logits
    assert (logits.argmax(-1) == labels).all()


def test_legs_add_no_parameters_to_the_model():
    model = _crab()
    objective = TrainingObjective(
        model.tap_dims(), None, 3, leg_dim=4, leg_hidden_unimodal=3, leg_hidden=5
    )
    assert not any("leg" in name for name, _ in model.named_parameters())
    assert len(objective.legs) == 5
    assert objective.legs["speech_unimodal"].net[0].out_features == 3
    assert objective.legs["fused"].net[0].out_features == 5


def test_crab_with_mlcs_fits_a_small_separable_set():
    torch.manual_seed(0)
    n, classes = 24, 3
    labels = torch.arange(n) % classes
    centres_s, centres_t = torch.randn(classes, 6) * 2, torch.randn(classes, 5) * 2
    speech = [centres_s[y] + 0.3 * torch.randn(int(torch.randint(4, 12, ())), 6) for y in labels]
    text = [centres_t[y] + 0.3 * torch.randn(int(torch.randint(2, 6, ())), 5) for y in labels]
    s_batch, t_batch = pad_batch(speech), pad_batch(text)
    model = Crab({"speech": 6, "text": 5}, classes, hidden=16, dropout=0.0, attention_dropout=0.0)
    features, masks = (
        {"speech": s_batch.features, "text": t_batch.features},
        {"speech": s_batch.mask, "text": t_batch.mask},
    )
    objective = TrainingObjective(
        model.tap_dims(),
        torch.ones(classes),
        classes,
        leg_dim=8,
        leg_hidden_unimodal=8,
        leg_hidden=8,
    )
    optimiser = torch.optim.AdamW(
        parameter_groups(list(model.parameters()) + list(objective.parameters()), [], 3e-3, 1e-6)
    )
    losses = []
    for _ in range(150):
        out = model(features, masks, return_taps=True)
        parts = objective(out, labels)
        optimiser.zero_grad()
        parts.total.backward()
        optimiser.step()
        losses.append(parts.total.item())
    model.eval()
    predictions = model(features, masks).logits.argmax(-1)
    assert (predictions == labels).all()
    assert losses[-1] < 0.7 * losses[0]
    assert parts.classification.item() < 0.1
    # MPCL cannot go below the entropy of its target: uniform over the 7 other same-class items
    assert parts.legs is not None and parts.legs.item() < math.log(7) + 0.3


def test_cosine_schedule_and_hierarchical_groups():
    assert cosine_factor(0, 20, 0.1) == 1.0
    assert abs(cosine_factor(10, 20, 0.1) - 0.55) < 1e-9
    assert abs(cosine_factor(20, 20, 0.1) - 0.1) < 1e-9
    head, encoder = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = parameter_groups(head.parameters(), encoder.parameters(), 1e-5, 1e-6)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-5), ("encoders", 1e-6)]
    encoder.requires_grad_(False)
    assert len(parameter_groups(head.parameters(), encoder.parameters(), 1e-5, 1e-6)) == 1


def test_warmup_ramps_each_group_then_follows_the_per_epoch_cosine():
    from crabser.training.optim import build_optimizer

    head, encoder = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = parameter_groups(head.parameters(), encoder.parameters(), 1e-3, 1e-4)
    optimizer, scheduler, interval = build_optimizer(
        groups, 0.01, 4, 0.1, warmup_steps=4, steps_per_epoch=10
    )
    assert interval == "step"
    seen = []
    for _ in range(25):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    # steps 0-3: a quarter, half, three quarters, all of the peak; the ratio of the groups holds
    assert [round(lrs[0] / 1e-3, 6) for lrs in seen[:5]] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert all(abs(head_lr / enc_lr - 10) < 1e-9 for head_lr, enc_lr in seen)
    # epoch 1 (steps 10-19) and 2 (steps 20-) at the cosine factor of their epoch
    assert seen[10][0] == pytest.approx(1e-3 * cosine_factor(1, 4, 0.1))
    assert seen[24][0] == pytest.approx(1e-3 * cosine_factor(2, 4, 0.1))
    _, _, per_epoch = build_optimizer(groups, 0.01, 4, 0.1)
    assert per_epoch == "epoch"


def test_training_losses_are_logged_once_per_epoch_as_utterance_weighted_means():
    from crabser.config import LossConfig, ModelConfig, TrainConfig
    from crabser.training.lit_module import CrabLitModule

    torch.manual_seed(0)
    module = CrabLitModule(
        input_dims={"speech": 5},
        labels=["a", "b"],
        model=ModelConfig(hidden=8, modalities=["speech"]).model_dump(),
        loss=LossConfig().model_dump(),
        train=TrainConfig().model_dump(),
    )
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))

    def step(size: int) -> float:
        batch = {
            "features": {"speech": torch.randn(size, 7, 5)},
            "masks": {"speech": torch.ones(size, 7, dtype=torch.bool)},
            "labels": torch.arange(size) % 2,
        }
        return float(module.training_step(batch, 0).detach())

    losses = [step(2), step(6)]
    assert not logged  # nothing per step
    module.on_train_epoch_end()
    assert logged["train_loss"] == pytest.approx((2 * losses[0] + 6 * losses[1]) / 8, rel=1e-6)
    assert set(logged) == {"train_loss", "train_classification", "train_legs"}
    last = step(3)  # the next epoch's mean starts from zero
    module.on_train_epoch_end()
    assert logged["train_loss"] == pytest.approx(last, rel=1e-6)


@pytest.mark.parametrize("lr_layer_weights", [None, 3e-2])
def test_layer_weights_get_their_own_group_only_when_asked(lr_layer_weights):
    from crabser.config import LossConfig, ModelConfig, TrainConfig
    from crabser.training.lit_module import CrabLitModule

    module = CrabLitModule(
        input_dims={"speech": 5},
        labels=["a", "b"],
        model=ModelConfig(hidden=8, modalities=["speech"]).model_dump(),
        loss=LossConfig().model_dump(),
        train=TrainConfig(lr_head=1e-3, lr_layer_weights=lr_layer_weights).model_dump(),
        speech_layers=3,
    )
    optimizer = module.configure_optimizers()["optimizer"]
    weights = module.model.input_stage.speech_layer_sum.logits
    groups = {g["name"]: g for g in optimizer.param_groups}
    owner = next(name for name, g in groups.items() if any(p is weights for p in g["params"]))
    if lr_layer_weights is None:  # with the head, as before (old runs resume with their groups)
        assert owner == "head" and set(groups) == {"head"}
    else:
        assert (
            owner == "layer_weights"
            and groups[owner]["lr"] == lr_layer_weights
            and groups[owner]["weight_decay"] == 0.0
        )
        assert groups["head"]["lr"] == 1e-3 and all(
            p is not weights for p in groups["head"]["params"]
        )
