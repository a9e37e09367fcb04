"""Whisper tiny.en in PyTorch from the bundled CTranslate2 weights: the reader, equality with the
CTranslate2 encoder on real EmoDB clips, any layer, masks, and fine-tuning it with the head."""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tone
from typer.testing import CliRunner

from crabser.cli import app
from crabser.config import EncoderConfig
from crabser.data.audio import load_audio
from crabser.data.corpora import emodb as emodb_adapter
from crabser.data.manifest import Manifest, write_manifest
from crabser.errors import ConfigError
from crabser.features.encoders import (
    HFSpeechEncoder,
    WhisperCT2Encoder,
    build_encoder,
    whisper_model_path,
)
from crabser.features.whisper_torch import (
    WhisperEncoderModule,
    read_ct2_variables,
    whisper_encoder_from_ct2,
    whisper_mel_batch,
)

#: measured on these clips: largest difference 6.6e-5 (own length) and 1.8e-4 (30 s padding) on
#: outputs of magnitude up to ~10; float16 weights computed in float32 by both, summed differently
TOLERANCE = 5e-4


def _write_ct2(path, variables: dict[str, np.ndarray], version: int = 6) -> None:
    """A CTranslate2 model.bin as ctranslate2.specs.ModelSpec._serialize writes it."""
    type_ids = {
        np.dtype(np.float32): 0,
        np.dtype(np.int8): 1,
        np.dtype(np.int16): 2,
        np.dtype(np.float16): 4,
    }

    def string(text: str) -> bytes:
        return struct.pack("H", len(text) + 1) + text.encode() + b"\0"

    data = (
        struct.pack("I", version)
        + string("TestSpec")
        + struct.pack("I", 1)
        + struct.pack("I", len(variables))
    )
    for name, value in variables.items():
        data += (
            string(name)
            + struct.pack("B", value.ndim)
            + b"".join(struct.pack("I", d) for d in value.shape)
        )
        data += (
            struct.pack("B", type_ids[value.dtype])
            + struct.pack("I", value.nbytes)
            + value.tobytes()
        )
    path.write_bytes(data + struct.pack("I", 0))


def test_the_reader_returns_names_shapes_dtypes_and_values_and_skips_other_prefixes(tmp_path):
    weight = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    heads = np.array(6, dtype=np.int16)
    _write_ct2(
        tmp_path / "model.bin",
        {"decoder/x": np.ones(4, np.float32), "encoder/w": weight, "encoder/num_heads": heads},
    )
    variables = read_ct2_variables(tmp_path / "model.bin", prefix="encoder/")
    assert sorted(variables) == ["encoder/num_heads", "encoder/w"]
    assert variables["encoder/w"].dtype == np.float16 and variables["encoder/w"].shape == (2, 3)
    np.testing.assert_array_equal(variables["encoder/w"], weight)
    assert int(variables["encoder/num_heads"]) == 6 and variables["encoder/num_heads"].shape == ()


def test_the_reader_refuses_another_format_version_and_a_cut_file(tmp_path):
    _write_ct2(tmp_path / "v5.bin", {"encoder/w": np.ones(2, np.float32)}, version=5)
    with pytest.raises(ConfigError, match="v5.bin: CTranslate2 binary version 5"):
        read_ct2_variables(tmp_path / "v5.bin")
    _write_ct2(tmp_path / "cut.bin", {"encoder/w": np.ones(2, np.float32)})
    (tmp_path / "cut.bin").write_bytes((tmp_path / "cut.bin").read_bytes()[:12])
    with pytest.raises(ConfigError, match="cut.bin: CTranslate2 model file ends early"):
        read_ct2_variables(tmp_path / "cut.bin")


@pytest.fixture(scope="module")
def torch_whisper():
    return whisper_encoder_from_ct2(whisper_model_path("embedded")[0])


@pytest.fixture(scope="module")
def emodb_waves(emodb):
    frame = emodb_adapter.prepare(emodb).frame
    return [
        load_audio(path, 16000) for path in frame.groupby("label").head(1)["audio"]
    ]  # one clip per class


def test_the_converted_encoder_has_whisper_tiny_sizes_and_keeps_the_weights(torch_whisper):
    folder = whisper_model_path("embedded")[0]
    sizes = (
        torch_whisper.d_model,
        len(torch_whisper.layers),
        torch_whisper.layers[0].self_attn.heads,
        torch_whisper.layers[0].fc1.out_features,
    )
    assert sizes == (384, 4, 6, 1536)
    fused = read_ct2_variables(
        folder / "model.bin", prefix="encoder/layer_1/self_attention/linear_0/weight"
    )
    q, k, v = np.split(
        fused["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32), 3
    )
    attention = torch_whisper.layers[1].self_attn
    for part, projection in ((q, attention.q_proj), (k, attention.k_proj), (v, attention.v_proj)):
        np.testing.assert_array_equal(projection.weight.detach().numpy(), part)
    assert attention.k_proj.bias is None


def test_it_loads_into_transformers_whisper_encoder_and_gives_the_same_30_s_output(
    torch_whisper, emodb_waves
):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(
        num_mel_bins=80,
        d_model=384,
        encoder_layers=4,
        encoder_attention_heads=6,
        encoder_ffn_dim=1536,
    )
    theirs = WhisperEncoder(config).eval()
    theirs.load_state_dict(torch_whisper.state_dict())
    mels, _ = whisper_mel_batch(emodb_waves[:1], 80, pad_to_seconds=30)
    with torch.no_grad():
        expected = theirs(mels, output_hidden_states=True).hidden_states
        got = torch_whisper(mels, hidden_states=True)
    assert len(got) == len(expected) == 5
    for ours, reference in zip(got, expected):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    ours_again = WhisperEncoderModule.from_transformers(theirs)
    assert all(
        torch.equal(a, b)
        for a, b in zip(ours_again.state_dict().values(), torch_whisper.state_dict().values())
    )


def test_a_hub_whisper_folder_runs_through_the_same_module(tmp_path):
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(
        num_mel_bins=80,
        d_model=16,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        vocab_size=64,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperModel(config).save_pretrained(tmp_path / "tiny-whisper")
    encoder = HFSpeechEncoder(str(tmp_path / "tiny-whisper"), layer="all")
    assert isinstance(encoder.model, WhisperEncoderModule) and encoder.output_dim == 16
    out = encoder.encode([tone(1.0), tone(0.5)])
    assert out.features.shape == (2, 50, 3, 16) and out.mask.sum(1).tolist() == [50, 25]


@pytest.mark.parametrize("pad", [None, 30])
def test_its_last_layer_equals_the_ctranslate2_encoder_on_real_clips(
    torch_whisper, emodb_waves, pad
):
    reference = WhisperCT2Encoder(pad_to_seconds=pad).encode(emodb_waves).unpadded()
    for wave, expected in zip(emodb_waves, reference):
        mels, mask = whisper_mel_batch([wave], 80, pad)
        with torch.no_grad():
            got = torch_whisper(mels)[0, : int(mask.sum())].numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < TOLERANCE


def test_a_padded_batch_with_its_mask_gives_each_clip_what_it_gets_alone(
    torch_whisper, emodb_waves
):
    mels, mask = whisper_mel_batch(emodb_waves[:3], 80)
    assert mels.shape[-1] == 2 * mask.shape[1] and len(set(mask.sum(1).tolist())) == 3
    with torch.no_grad():
        batched = torch_whisper(mels, mask)
        for i, wave in enumerate(emodb_waves[:3]):
            alone = torch_whisper(whisper_mel_batch([wave], 80)[0])[0]
            n = int(mask[i].sum())
            torch.testing.assert_close(batched[i, :n], alone[:n], atol=1e-4, rtol=0)
        unmasked = torch_whisper(mels)  # padding read by attention: not the same
    shortest = int(mask.sum(1).argmin())
    n = int(mask[shortest].sum())
    assert (unmasked[shortest, :n] - batched[shortest, :n]).abs().max() > 1e-2


def test_embedded_hf_speech_gives_every_layer_and_each_one_alone(emodb_waves):
    stacked = build_encoder(EncoderConfig(kind="hf-speech", model="embedded", layer="all")).encode(
        emodb_waves[:2]
    )
    assert stacked.features.shape[2:] == (5, 384)  # embeddings, layers 1-3, final output
    reference = WhisperCT2Encoder().encode(emodb_waves[:2])
    assert torch.equal(stacked.mask, reference.mask)
    assert (stacked.features[:, :, -1] - reference.features).abs().max() < TOLERANCE
    for layer in (0, 2, -2):
        alone = HFSpeechEncoder("embedded", layer=layer).encode(emodb_waves[:2])
        torch.testing.assert_close(
            alone.features, stacked.features[:, :, layer % 5], atol=1e-5, rtol=0
        )
    assert (
        len(HFSpeechEncoder("embedded", layer=2).model.layers) == 2
    )  # layers above the one read never run
    assert len(HFSpeechEncoder("embedded", layer=-1).model.layers) == 4
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        HFSpeechEncoder("embedded", layer=7)


def test_embedded_hf_speech_windows_long_clips_and_names_its_padding():
    own, padded = HFSpeechEncoder("embedded"), HFSpeechEncoder("embedded", pad_to_seconds=30)
    assert own.encode([tone(31.0)]).mask.sum().item() == 1550
    assert own.cache_id != padded.cache_id and padded.cache_id.endswith(":pad30")
    assert "whisper-tiny.en-torch@" in own.cache_id


@pytest.fixture(scope="module")
def whisper_finetuned(tmp_path_factory, emodb):
    root = tmp_path_factory.mktemp("whisper-finetune")
    frame = emodb_adapter.prepare(emodb).frame
    frame = frame[frame["speaker"].isin(["03", "08", "11"])].groupby("speaker").head(10).copy()
    frame["split"] = frame["speaker"].map({"03": "train", "08": "train", "11": "val"})
    write_manifest(Manifest(frame), root / "manifest.csv")
    config = root / "config.yaml"
    config.write_text(
        f"""
name: ftw
output_dir: {root / "runs"}
cache_dir: {root / "cache"}
data: {{manifest: {root / "manifest.csv"}, protocol: given}}
speech: {{kind: hf-speech, model: embedded, layer: 2, max_seconds: 2.0}}
model: {{modalities: [speech], hidden: 16, leg_dim: 8, leg_hidden: 8, leg_hidden_unimodal: 8}}
train: {{epochs: 2, batch_size: 10, accumulate: 1, lr_head: 1.0e-3, lr_encoder: 1.0e-4,
        progress: false, threads: 2}}
"""
    )
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--finetune"])
    assert result.exit_code == 0, result.output
    return root


def test_finetuning_the_embedded_whisper_trains_the_layers_read_and_nothing_else(
    whisper_finetuned, torch_whisper
):
    checkpoint = torch.load(
        whisper_finetuned / "runs/ftw/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    state = {
        k.removeprefix("encoders.speech."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("encoders.speech.")
    }
    before = torch_whisper.state_dict()
    assert not any(
        k.startswith(("layers.2.", "layers.3.")) for k in state
    )  # cut above the layer read
    for frozen in ("conv1.weight", "conv2.weight", "embed_positions.weight"):
        assert torch.equal(state[frozen], before[frozen])
    assert not torch.equal(state["layers.1.fc1.weight"], before["layers.1.fc1.weight"])
    assert [g["name"] for g in checkpoint["optimizer_states"][0]["param_groups"]] == [
        "head",
        "encoders",
    ]


def test_a_finetuned_whisper_run_evaluates_from_raw_audio(whisper_finetuned):
    result = CliRunner().invoke(
        app, ["evaluate", "--run", str(whisper_finetuned / "runs/ftw"), "--split", "val", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["n"] == 10


def test_finetuning_normalises_the_head_inputs_with_the_pretrained_encoders_training_statistics(
    whisper_finetuned,
):
    checkpoint = torch.load(
        whisper_finetuned / "runs/ftw/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    mean = checkpoint["state_dict"]["model.input_stage.normalizers.speech.mean"]
    std = checkpoint["state_dict"]["model.input_stage.normalizers.speech.std"]
    frame = pd.read_csv(whisper_finetuned / "manifest.csv", dtype=str)
    waves = [
        load_audio(path, 16000)[:32000] for path in frame.loc[frame["split"] == "train", "audio"]
    ]  # max_seconds 2
    frames = np.concatenate(HFSpeechEncoder("embedded", layer=2).encode(waves).unpadded())
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), atol=2e-3)
    np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=2e-3, atol=2e-3)


def test_finetuning_refuses_whisper_padding_it_would_not_apply():
    from crabser.config import RunConfig
    from crabser.errors import CrabserError
    from crabser.training import fit

    config = RunConfig.model_validate(
        {"speech": {"kind": "hf-speech", "pad_to_seconds": 30}, "model": {"modalities": ["speech"]}}
    )
    with pytest.raises(CrabserError, match="remove speech.pad_to_seconds"):
        fit.finetune_encoders(config)
    unpadded = config.model_copy(
        update={"speech": config.speech.model_copy(update={"pad_to_seconds": None})}
    )
    assert fit.finetune_encoders(unpadded)["speech_model"] == "embedded"


def test_quantised_ctranslate2_weights_are_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    _write_ct2(
        tmp_path / "model.bin",
        {
            "encoder/conv1/weight": np.ones((2, 2), np.int8),
            "encoder/conv1/weight_scale": np.ones(2, np.float32),
        },
    )
    with pytest.raises(ConfigError, match="quantised CTranslate2 weights are not read"):
        whisper_encoder_from_ct2(tmp_path)


def test_a_finetuned_whisper_run_exports_its_trained_layers_and_predicts_as_the_run(
    whisper_finetuned, emodb, tmp_path, torch_whisper
):
    """The export stores how the layers that trained moved (not the frozen stem or positions)
    and, added to the embedded encoder, gives the run's own probabilities clip by clip; in fp16
    the change survives (rounding the weights themselves to fp16 would erase much of it)."""
    from safetensors.torch import load_file

    from crabser.inference import TUNED_ENCODERS, Recognizer, export_model
    from crabser.pretrained import HUB_FILES, model_fingerprint
    from crabser.training.checkpoint_io import load_module

    run = whisper_finetuned / "runs/ftw"
    out = export_model(run, tmp_path / "fp32", half=False)
    stored = load_file(str(out / TUNED_ENCODERS))
    assert {k.split(".")[2] for k in stored} == {"0", "1"}  # layers 0 and 1 (hidden state 2)
    assert all(k.startswith("speech.layers.") for k in stored)
    as_run, exported = Recognizer.load(run), Recognizer.load(out)
    name = "layers.1.fc1.weight"
    trained = load_module(run / "checkpoints/best.ckpt").encoders.speech.state_dict()[name]
    pretrained = torch_whisper.state_dict()[name]
    tuned = exported.encoders["speech"].model.state_dict()[name]
    assert torch.allclose(tuned, trained, rtol=0, atol=1e-7) and not torch.equal(tuned, pretrained)
    assert ":tuned-" in exported.encoders["speech"].cache_id  # never the pre-trained one's cache
    assert {f.name for f in out.iterdir()} <= set(HUB_FILES)  # a Hub download fetches them all
    fingerprint = model_fingerprint(out)
    (out / TUNED_ENCODERS).write_bytes((out / TUNED_ENCODERS).read_bytes() + b" ")
    assert model_fingerprint(out) != fingerprint  # an ONNX build of other encoder weights is new
    clips = emodb_adapter.prepare(emodb).frame.query("speaker == '16'")["audio"].iloc[:3]
    # One clip at a time, its first speech.max_seconds (2 s): the export's encoder reads that much,
    # as the run's evaluation does (the run's own predict path reads the whole clip).
    for clip in clips:
        wave = load_audio(clip, 16000)[:32000]
        np.testing.assert_allclose(
            exported.probabilities([wave], [""]), as_run.probabilities([wave], [""]), atol=1e-5
        )
    half = Recognizer.load(export_model(run, tmp_path / "fp16", half=True))
    error = (half.encoders["speech"].model.state_dict()[name] - trained).abs().max()
    assert error < 0.01 * (trained - pretrained).abs().max()
    assert error < 0.1 * (trained.half().float() - trained).abs().max()  # what weights in fp16 lose


def test_tuned_encoder_weights_that_fit_no_encoder_are_refused(tmp_path, torch_whisper):
    from safetensors.torch import save_file

    from crabser.errors import CrabserError
    from crabser.inference import load_tuned_encoders

    path = tmp_path / "encoders.safetensors"
    save_file({"text.embeddings.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CrabserError, match="text encoder .*takes none"):
        load_tuned_encoders({}, path)
    save_file({"speech.layers.0.fc1.weight": torch.zeros(3, 3)}, str(path))

    class Speech:
        model, cache_id = torch_whisper, "x"

    with pytest.raises(CrabserError, match="do not fit .*layers.0.fc1.weight"):
        load_tuned_encoders({"speech": Speech()}, path)
