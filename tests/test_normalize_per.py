"""Speaker (corpus) normalisation of the speech frames, ``model.normalize_per``: the map onto the
training statistics by hand, the groups' statistics, a set only speaker normalisation separates
(in training and evaluation, and in prediction through ``Recognizer.adapt_to``), and the settings
it refuses."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import soundfile
import tiny_runs
from typer.testing import CliRunner

from crabser import pipeline
from crabser.cli import app
from crabser.config import ConfigError, RunConfig, load_config
from crabser.cross_corpus import evaluate_on_corpus, single_clip_metrics
from crabser.data.manifest import Manifest
from crabser.errors import AudioError, CrabserError
from crabser.evaluation.metrics import compute_metrics
from crabser.features.encoders import EncodedBatch, pad_batch
from crabser.features.statistics import to_reference
from crabser.features.store import FeatureStore
from crabser.inference import Recognizer
from crabser.io import file_sha256
from crabser.models.blocks import InputStage
from crabser.runs import RunFolder
from crabser.training import fit
from crabser.training.checkpoint_io import load_module, run_checkpoint
from crabser.training.datamodule import Utterance
from crabser.training.loaders import group_statistics, normalize_per_group

LABELS = tiny_runs.LABELS
DIM = 8
CACHE_ID = "fake-speech-8"
SCALE = 32.0
SPLITS = {"s0": "train", "s1": "train", "s2": "train", "s3": "train", "s4": "val", "s5": "test"}


@dataclass
class FrameEncoder:
    """A stand-in speech encoder: a 16 kHz 'wave' of ``T * DIM`` samples is its own ``(T, DIM)``
    frames, scaled by ``SCALE`` (so a test can choose the frames a recogniser sees)."""

    cache_id: str = CACHE_ID
    modality: str = "speech"
    output_dim: int = DIM
    sample_rate: int = 16000
    frame_rate: float = 50.0

    def encode(self, batch: list[np.ndarray]) -> EncodedBatch:
        return pad_batch([SCALE * np.asarray(w, dtype=np.float32).reshape(-1, DIM) for w in batch])


def as_wave(frames: np.ndarray) -> np.ndarray:
    """The 'wave' :class:`FrameEncoder` turns into ``frames`` (within full scale)."""
    return frames.ravel() / SCALE


def test_frames_are_mapped_from_their_group_onto_the_reference_by_hand():
    frames = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float16)
    group = (np.array([2.0, 3.0]), np.array([1.0, 2.0]))
    reference = (np.array([10.0, 0.0]), np.array([2.0, 1.0]))
    mapped = to_reference(frames, group, reference)
    # (x - group mean) / group std * reference std + reference mean
    assert mapped.tolist() == [[8.0, -0.5], [12.0, 0.5]]
    assert mapped.dtype == np.float16
    constant = to_reference(np.ones((3, 1)), (np.ones(1), np.zeros(1)), (np.zeros(1), np.ones(1)))
    assert np.isfinite(constant).all() and not constant.any()  # std floored, as the model's


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    """Six speakers whose voices (an offset per speaker, 8x the class signal) hide the emotion
    unless each is normalised with its own statistics: s0-s3 train, s4 val, s5 test. Returns the
    root, the manifest and each utterance's frames."""
    root = tmp_path_factory.mktemp("speakers")
    rng = np.random.default_rng(0)
    store = FeatureStore(root / "cache")
    centres = rng.normal(size=(len(LABELS), DIM))
    rows, frames = [], {}
    for speaker, split in SPLITS.items():
        offset = rng.normal(size=DIM) * 8
        for i in range(24):
            label = i % len(LABELS)
            length = int(rng.integers(50, 80))
            utterance = f"{speaker}_{i:02d}"
            frames[utterance] = (
                offset + centres[label] + 0.5 * rng.normal(size=(length, DIM))
            ).astype(np.float32)
            audio = root / f"{utterance}.wav"  # FrameEncoder reads it back as these frames
            soundfile.write(audio, as_wave(frames[utterance]), 16000, subtype="FLOAT")
            store.put(CACHE_ID, file_sha256(audio), frames[utterance])
            rows.append(
                {
                    "id": utterance,
                    "audio": str(audio),
                    "label": LABELS[label],
                    "speaker": speaker,
                    "split": split,
                }
            )
    return root, Manifest(pd.DataFrame(rows)), frames


def _config(root, name: str, **model) -> RunConfig:
    """The tiny Crab of tiny_runs on speech, trained 15 epochs."""
    speech = {"modalities": ["speech"], "dropout": 0.1, "attention_dropout": 0.1, **model}
    return tiny_runs.tiny_config(root, name, model=speech, epochs=15, batch_size=16)


def test_group_statistics_are_over_every_frame_of_each_speaker_in_every_split(speakers):
    root, manifest, frames = speakers
    config = _config(root, "stats", normalize_per="speaker")
    statistics = group_statistics(config, manifest, {"speech": FrameEncoder()})
    assert sorted(statistics) == sorted(SPLITS)  # the held-out speakers' audio too
    test_frames = np.concatenate([f for u, f in frames.items() if u.startswith("s5_")])
    mean, std = statistics["s5"]
    np.testing.assert_allclose(mean, test_frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, test_frames.std(0), rtol=1e-5, atol=1e-5)


def test_speakers_of_one_class_are_normalised_with_a_warning(speakers, caplog):
    root, manifest, frames = speakers
    frame = manifest.frame
    one_class = Manifest(frame[frame["label"] == LABELS[0]])  # every speaker: anger only
    config = _config(root, "one_class", normalize_per="speaker")
    items = [Utterance(u, {"speech": frames[u].copy()}, 0) for u in one_class.frame["id"]]
    stage = InputStage({"speech": DIM})  # training statistics (0, 1): frames end up z-normalised
    with caplog.at_level(logging.WARNING):
        normalize_per_group(config, one_class, {"speech": FrameEncoder()}, [items], stage)
    assert "6 of 6 speakers have clips of one class only" in caplog.text
    test = np.concatenate([u.features["speech"] for u in items if u.id.startswith("s5_")])
    np.testing.assert_allclose(test.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(test.std(0), 1, atol=1e-4)


@pytest.fixture(scope="module")
def trained(speakers):
    """The same tiny Crab trained with and without speaker normalisation; test UAR of each."""
    root, manifest, _ = speakers
    encoders = {"speech": FrameEncoder()}
    scores = {}
    for name, per in (("plain", None), ("per_speaker", "speaker")):
        config = _config(root, name, normalize_per=per)
        RunFolder.of(config).save_inputs(config, manifest)  # a run folder, as `crabser train`'s
        fit.train(config, manifest, encoders)
        metrics, _ = pipeline.evaluate(config, manifest, encoders)
        scores[name] = metrics["uar"]
    return root, manifest, scores


def test_speaker_normalisation_finds_the_emotion_under_an_unseen_voice(trained):
    _, _, scores = trained
    assert scores["per_speaker"] >= 0.9
    assert scores["plain"] <= scores["per_speaker"] - 0.3  # the unseen voice misleads it


def test_a_recognizer_adapted_to_a_speaker_predicts_as_the_evaluation_did(trained, speakers):
    root, manifest, _ = trained
    frames = speakers[2]
    config = _config(root, "per_speaker", normalize_per="speaker")
    module = load_module(run_checkpoint(config.run_dir))
    recognizer = Recognizer(module, {"speech": FrameEncoder()}, normalize_per="speaker")
    test = manifest.frame[manifest.frame["speaker"] == "s5"]
    waves = [as_wave(frames[u]) for u in test["id"]]
    evaluated = pd.read_csv(config.run_dir / "report" / "test_predictions.csv")
    expected = evaluated.set_index("id").loc[test["id"], "prediction"].tolist()

    def predicted() -> list[str]:
        results = recognizer.predict_batch(waves, sample_rate=16000, names=test["id"].tolist())
        return [p.label for p in results]

    unadapted = predicted()  # the training speakers' statistics
    assert recognizer.adapt_to(waves, sample_rate=16000) == len(waves)
    assert predicted() == expected
    recognizer.adapt_to(None)
    assert predicted() == unadapted != expected


def test_adapting_skips_unreadable_recordings_and_refuses_a_model_without_it(trained, speakers):
    root, _, _ = trained
    frames = speakers[2]
    waves = [as_wave(frames["s5_00"]), np.zeros(DIM * 60, dtype=np.float32)]  # the second: silent
    module = load_module(run_checkpoint(_config(root, "per_speaker").run_dir))
    recognizer = Recognizer(module, {"speech": FrameEncoder()}, normalize_per="speaker")
    assert recognizer.adapt_to(waves, sample_rate=16000) == 1
    with pytest.raises(AudioError, match="silent"):
        recognizer.adapt_to(waves[1:], sample_rate=16000)
    plain = load_module(run_checkpoint(_config(root, "plain").run_dir))
    with pytest.raises(CrabserError, match="not trained with model.normalize_per"):
        Recognizer(plain, {"speech": FrameEncoder()}).adapt_to(waves, sample_rate=16000)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.normalize_per=speaker", "model.modalities=[text]"],
        ["model.normalize_per=speaker", "model.normalize_inputs=false"],
        [
            "model.normalize_per=speaker",
            "train.finetune=true",
            "speech.kind=hf-speech",
            "speech.model=embedded",
        ],
    ],
)
def test_settings_where_normalisation_would_be_ignored_are_refused(tmp_path, overrides):
    path = tmp_path / "config.yaml"
    path.write_text("name: refused\n")
    with pytest.raises(ConfigError, match="model.normalize_per"):
        load_config(path, overrides)


def test_normalising_per_corpus_needs_a_corpus_column(speakers):
    root, manifest, _ = speakers
    config = _config(root, "no_corpus", normalize_per="corpus")
    with pytest.raises(CrabserError, match="'corpus' column"):
        fit.train(config, manifest, {"speech": FrameEncoder()})


def frame_encoders(config, device=None) -> dict:
    """build_encoders' stand-in: the FrameEncoder for speech."""
    return {"speech": FrameEncoder()}


def test_a_corpus_is_scored_speaker_by_speaker_as_the_run_evaluated_it(
    trained, tmp_path, monkeypatch
):
    root, manifest, _ = trained
    monkeypatch.setattr("crabser.features.encoders.build_encoders", frame_encoders)
    corpus = manifest.frame[manifest.frame["split"] == "test"].drop(columns="split")
    corpus = pd.concat([corpus, manifest.frame[manifest.frame["speaker"] == "s4"]])  # 2 speakers
    corpus.drop(columns="split").to_csv(tmp_path / "corpus.csv", index=False)
    path = tmp_path / "corpus.yaml"
    path.write_text(f"name: two_speakers\ndata: {{manifest: {tmp_path / 'corpus.csv'}}}\n")
    run_dir = _config(root, "per_speaker").run_dir
    result = evaluate_on_corpus(run_dir, load_config(path), tmp_path / "report")
    predictions = pd.read_csv(tmp_path / "report" / "cross_corpus_predictions.csv")
    evaluated = pd.read_csv(run_dir / "report" / "test_predictions.csv")
    test = predictions[predictions["id"].str.startswith("s5_")].set_index("id")["prediction"]
    assert test.to_dict() == evaluated.set_index("id")["prediction"].to_dict()
    # s4, scored after s5, adapted to its own statistics (not to s5-adapted frames of its own)
    assert result["n"] == 48 and result["uar"] >= 0.9
    assert result["adapted_per"] == "speaker"
    single = evaluate_on_corpus(run_dir, load_config(path), tmp_path / "single", adapt=False)
    # each clip on its own, with the training speakers' statistics: the unseen voices mislead it
    assert single["adapted_per"] is None and single["n"] == 48
    assert single["uar"] <= result["uar"] - 0.3


def test_single_clip_metrics_score_each_fold_without_adapting(trained, tmp_path, monkeypatch):
    root, manifest, scores = trained
    monkeypatch.setattr("crabser.features.encoders.build_encoders", frame_encoders)
    run = _config(root, "per_speaker")
    shutil.copytree(run.run_dir, tmp_path / "cv" / "fold0")  # a cross-validation of one fold
    config = run.model_copy(update={"output_dir": tmp_path, "name": "cv"})
    single = single_clip_metrics(config, LABELS)
    test = manifest.frame[manifest.frame["split"] == "test"]
    recognizer = Recognizer.from_run(run.run_dir)  # not adapted: the training speakers' statistics
    answers = recognizer.predict_batch(test["audio"].tolist())
    truth = [LABELS.index(label) for label in test["label"]]
    expected = compute_metrics(truth, [LABELS.index(a.label) for a in answers], LABELS)
    assert single["n"] == len(test) and single["uar"] == expected["uar"]
    assert single["uar"] <= scores["per_speaker"] - 0.3  # adapting is what found the emotion


def test_the_cli_refuses_to_adapt_a_model_trained_without_it(trained, monkeypatch):
    root, manifest, _ = trained
    monkeypatch.setattr("crabser.features.encoders.build_encoders", frame_encoders)
    plain = str(_config(root, "plain").run_dir)
    clip = manifest.frame["audio"].iloc[0]
    result = CliRunner().invoke(app, ["predict", clip, "--model", plain, "--adapt"])
    assert result.exit_code == 2  # an expected error: one line, no traceback
    assert "not trained with model.normalize_per" in result.output


def test_the_packaged_emodb_model_adapts_to_a_real_speaker(emodb):
    from crabser.data.corpora import emodb as emodb_adapter

    model = Recognizer.load("crabser/emodb_speech")
    assert model.normalize_per == "speaker"  # trained speaker-normalised (configs/default_model)
    frame = emodb_adapter.prepare(emodb).frame
    speaker = frame[frame["speaker"] == "03"]
    paths = list(speaker["audio"])
    assert model.adapt_to(paths) == len(paths)  # Whisper's frames of all 49 of its clips
    adapted = model.predict_batch(paths)
    model.adapt_to(None)
    plain = model.predict_batch(paths)
    changed = max(
        abs(a.probabilities[c] - p.probabilities[c])
        for a, p in zip(adapted, plain)
        for c in model.labels
    )
    assert changed > 0.01  # the speaker's statistics changed what the model read
    correct = sum(p.label == truth for p, truth in zip(adapted, speaker["label"]))
    assert correct >= 0.9 * len(paths), correct  # clips it trained on, read as in training
