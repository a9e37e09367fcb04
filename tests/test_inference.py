"""Recognizer: load anything crabser writes, predict on paths, bytes and arrays, partial inputs,
export."""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from crabser.data.audio import decode_audio
from crabser.data.corpora import emodb as emodb_adapter
from crabser.data.corpora import get_adapter
from crabser.errors import AudioError, CrabserError, TranscriptError
from crabser.inference import Recognizer, export_model
from crabser.predictor import Predictor
from crabser.pretrained import (
    DEFAULT_MODEL,
    EXPORT_FILES,
    MODEL_CARD,
    ONNX_FILES,
    TUNED_ENCODERS,
    packaged_model_dir,
)

#: a model trained on real EmoDB clips for most tests: `make test-fast` leaves these out
pytestmark = pytest.mark.slow

TEXT = "Der Lappen liegt auf dem Eisschrank."


@pytest.fixture(scope="module")
def recognizer(run):
    root, _ = run
    return Recognizer.load(root / "runs/e2e", overrides=["asr.fill_missing=false"])


@pytest.fixture(scope="module")
def clips(emodb):
    frame = emodb_adapter.prepare(emodb).frame
    return list(frame[frame["speaker"] == "16"]["audio"][:4])


def _probs(prediction) -> np.ndarray:
    return np.array(list(prediction.probabilities.values()))


def test_path_bytes_and_array_give_the_same_prediction(recognizer, clips):
    path = clips[0]
    wave, rate = sf.read(path, dtype="float32")
    by_path = recognizer.predict(path, TEXT)
    with open(path, "rb") as handle:
        by_bytes = recognizer.predict(handle.read(), TEXT)
    by_array = recognizer.predict(wave, TEXT, sample_rate=rate)
    by_tuple = recognizer.predict((wave, rate), TEXT)
    for other in (by_bytes, by_array, by_tuple):
        assert other.label == by_path.label
        assert np.allclose(_probs(other), _probs(by_path), atol=1e-5)
    assert by_path.source == path and by_bytes.source == "<input 0>"
    assert by_path.transcript == TEXT and by_path.text_source == "given"
    assert sum(by_path.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert set(by_path.probabilities) == set(recognizer.labels)


def test_8k_and_48k_stereo_versions_of_a_clip_agree(recognizer, clips):
    wave = decode_audio(clips[1])
    import soxr

    reference = recognizer.predict((wave, 16000), TEXT)
    low = soxr.resample(wave, 16000, 8000)
    stereo48 = np.stack([soxr.resample(wave, 16000, 48000)] * 2, axis=1)
    back = decode_audio((stereo48, 48000))  # what the model is given: mono 16 kHz again
    assert back.shape == wave.shape and np.corrcoef(back, wave)[0, 1] > 0.999
    # the resampling round trip is not bit-exact, and this small test model is not flat around the
    # clip: the probabilities must stay close, and the answer the same unless the reference's two
    # best classes are within that closeness of each other (a near tie may flip either way)
    again = recognizer.predict((stereo48, 48000), TEXT)
    shift = np.abs(_probs(again) - _probs(reference)).max()
    assert shift < 0.15
    second, first = np.sort(_probs(reference))[-2:]
    if first - second > 2 * shift:
        assert again.label == reference.label
    narrowband = recognizer.predict((low, 8000), TEXT)  # telephone band: still a valid answer
    assert narrowband.label in recognizer.labels


def test_a_batch_gives_what_one_by_one_gives(recognizer, clips):
    batch = recognizer.predict_batch(clips, [TEXT] * len(clips))
    for path, prediction in zip(clips, batch):
        alone = recognizer.predict(path, TEXT)
        assert prediction.source == path and prediction.label == alone.label
        assert np.allclose(_probs(prediction), _probs(alone), atol=1e-4)
    assert recognizer.predict_batch([]) == []
    with pytest.raises(ValueError, match="2 audio inputs, 1 transcripts"):
        recognizer.predict_batch(clips[:2], [TEXT])


def test_partial_inputs_get_the_documented_answers(recognizer, clips):
    with pytest.raises(AudioError, match="needs audio; got only a transcript"):
        recognizer.predict(None, TEXT)  # text-only request to a bimodal model
    with pytest.raises(TranscriptError, match="missing transcript"):
        recognizer.predict(clips[0])  # audio-only, ASR turned off for this recognizer
    with pytest.raises(TranscriptError, match="missing transcript"):
        recognizer.predict(clips[0], "   \n")  # an empty transcript counts as missing
    with pytest.raises(TranscriptError, match="missing transcript"):
        recognizer.predict(clips[0], "\x00\x00 \x1b")  # so does one of control characters only
    unicode = recognizer.predict(clips[0], "Grüße aus Köln — 😀 «ja»")
    assert unicode.transcript == "Grüße aus Köln — 😀 «ja»"
    with pytest.raises(AudioError, match="silent"):
        recognizer.predict(np.zeros(16000, dtype=np.float32), TEXT, sample_rate=16000, name="quiet")


def test_load_takes_run_checkpoint_and_export_folders(run, recognizer, clips, tmp_path):
    root, _ = run
    reference = recognizer.predict(clips[2], TEXT)
    by_checkpoint = Recognizer.load(root / "runs/e2e/checkpoints/best.ckpt").predict(clips[2], TEXT)
    assert np.allclose(_probs(by_checkpoint), _probs(reference), atol=1e-6)
    folder = export_model(root / "runs/e2e", tmp_path / "exported", half=True)
    checkpoint_bytes = (root / "runs/e2e/checkpoints/best.ckpt").stat().st_size
    assert (
        folder / "model.safetensors"
    ).stat().st_size < checkpoint_bytes / 2  # fp16, no optimiser state
    exported = Recognizer.load(folder)
    assert exported.labels == recognizer.labels
    assert (
        np.abs(_probs(exported.predict(clips[2], TEXT)) - _probs(reference)).max() < 0.02
    )  # fp16 weights
    with pytest.raises(CrabserError, match="no such model"):
        Recognizer.load(tmp_path / "nowhere")


def test_an_export_over_another_model_of_the_other_form_replaces_it(run, recognizer, tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra (installed by dev)")
    from crabser.loading import load_predictor
    from crabser.onnx_export import export_onnx
    from crabser.onnx_runtime import OnnxRecognizer

    root, _ = run
    folder = export_onnx("crabser/emodb_speech", tmp_path / "model")  # a speech-only model
    assert (folder / MODEL_CARD).is_file()  # the packaged model's card, copied
    export_model(root / "runs/e2e", folder)  # the bimodal run: its answers, not the ONNX model's
    assert not any((folder / name).exists() for name in (*ONNX_FILES, MODEL_CARD))
    for loaded in (Recognizer.load(folder), load_predictor(folder)):
        assert isinstance(loaded, Recognizer) and loaded.modalities == recognizer.modalities
    export_onnx("crabser/emodb_speech", folder)  # and back: the run's files go
    assert not any((folder / name).exists() for name in (*EXPORT_FILES, TUNED_ENCODERS))
    assert isinstance(Recognizer.load(folder), OnnxRecognizer)
    uncarded = shutil.copytree(  # the same model, without a card
        packaged_model_dir("crabser/emodb_speech"),
        tmp_path / "mine",
        ignore=shutil.ignore_patterns(MODEL_CARD),
    )
    export_onnx(uncarded, folder)
    assert not (folder / MODEL_CARD).exists()


def test_the_packaged_emodb_model_is_small_and_recognises_emodb(clips, emodb):
    folder = packaged_model_dir("crabser/emodb_speech")
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 10_000_000
    model = Recognizer.load("crabser/emodb_speech")
    assert model.modalities == ["speech"] and set(model.labels) == set(emodb_adapter.LABELS)
    prediction = model.predict(clips[0], "ignored by a speech-only model")
    assert prediction.transcript is None and prediction.text_source is None
    frame = emodb_adapter.prepare(emodb).frame
    sample = frame.groupby("label").head(
        3
    )  # 21 clips; the model saw them in training, so most are right
    predicted = model.predict_batch(list(sample["audio"]))
    correct = sum(p.label == label for p, label in zip(predicted, sample["label"]))
    assert correct >= 15, correct


def test_the_packaged_default_model_knows_four_corpora_and_says_so():
    import json

    from conftest import shared_corpus

    folder = packaged_model_dir(DEFAULT_MODEL)
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 10_000_000
    model = Recognizer.load()
    assert model.modalities == ["speech"]
    assert model.labels == ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]
    card = json.loads((folder / MODEL_CARD).read_text())
    assert card["languages"] == ["Amharic", "German", "Italian", "Urdu"]
    assert set(card["cross_validation"]["per_corpus"]) == {"ased", "emodb", "emovo", "urdu"}
    assert all("research" in c["terms"] for c in card["corpora"])
    frame = get_adapter("emovo")(shared_corpus("emovo")).frame
    sample = (
        frame[frame["label"].isin(model.labels)].groupby("label").head(3)
    )  # 18 clips it trained on
    predicted = model.predict_batch(list(sample["audio"]))
    correct = sum(p.label == label for p, label in zip(predicted, sample["label"]))
    assert correct >= 12, correct


def test_packaged_models_load_by_name_and_list_their_cards(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from crabser.cli import app
    from crabser.pretrained import packaged_models

    monkeypatch.setenv("CRABSER_MODELS", str(tmp_path / "no_local_models"))
    by_name = Recognizer.load("crabser/emodb_speech")
    assert Recognizer.load().labels == Recognizer.load(f"crabser/{DEFAULT_MODEL}").labels
    with pytest.raises(CrabserError, match="crabser/missing: no such model.*crabser/emodb_speech"):
        Recognizer.load("crabser/missing")
    listed = CliRunner().invoke(app, ["models", "--json"])
    assert listed.exit_code == 0, listed.output
    cards = json.loads(listed.output)
    assert set(cards) == set(packaged_models()) and "emodb_speech" in cards
    assert cards["emodb_speech"]["labels"] == by_name.labels
    shown = CliRunner().invoke(app, ["models", "crabser/emodb_speech"])
    assert shown.exit_code == 0 and "classes: anger, boredom" in shown.output
    missing = CliRunner().invoke(app, ["models", "nope"])
    assert missing.exit_code == 2 and "crabser/nope: no such model" in missing.output


def test_a_local_models_folder_and_a_hub_cache_give_models_by_name(tmp_path, monkeypatch, emodb):
    """crabser/<name> finds exported models in $CRABSER_MODELS; hf://org/repo[@revision] reads a
    pre-filled Hugging Face cache offline (never the network), pinned revisions included."""
    import json

    from typer.testing import CliRunner

    from crabser.cli import app

    emodb_model = packaged_model_dir("emodb_speech")
    default_model = packaged_model_dir(DEFAULT_MODEL)
    local = tmp_path / "models"
    shutil.copytree(emodb_model, local / "mine", ignore=shutil.ignore_patterns(MODEL_CARD))
    monkeypatch.setenv("CRABSER_MODELS", str(local))
    assert Recognizer.load("crabser/mine").labels == Recognizer.load(emodb_model).labels
    listed = json.loads(CliRunner().invoke(app, ["models", "--json"]).output)
    assert listed["mine"]["card"].startswith("none") and DEFAULT_MODEL in listed

    cache = tmp_path / "hub"
    repo = cache / "models--someone--ser"
    first, second = "a" * 40, "b" * 40
    for commit, model in ((first, emodb_model), (second, default_model)):
        shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(second)
    # a pickle left in the cache by another download is never read from a Hub folder
    (repo / "snapshots" / second / "stack.json").write_text('{"models": {}}')
    (repo / "snapshots" / second / "stack.joblib").write_bytes(b"not a pickle to open")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    latest = Recognizer.load("hf://someone/ser")
    assert type(latest) is Recognizer
    pinned = Recognizer.load(f"hf://someone/ser@{first}")
    assert latest.labels == Recognizer.load(default_model).labels
    assert pinned.labels == Recognizer.load(emodb_model).labels != latest.labels
    with pytest.raises(CrabserError, match="hf://someone/other: not found in the local Hugging"):
        Recognizer.load("hf://someone/other")
    with pytest.raises(CrabserError, match=r"hf://<org>/<repo>\[@<revision>\]"):
        Recognizer.load("hf://just-a-name")
    card = CliRunner().invoke(app, ["models", f"hf://someone/ser@{first}"])
    assert card.exit_code == 0 and "classes: anger, boredom" in card.output, card.output
    clip = min([*emodb.glob("*/03a01Fa.*")])
    printed = CliRunner().invoke(app, ["predict", str(clip), "-m", "hf://someone/ser", "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output.splitlines()[-1])["label"] in latest.labels


class _FakePredictor(Predictor):
    """A text model whose probabilities are given; its ASR factory is slow and counts its calls."""

    def __init__(self, probabilities: list[float]) -> None:
        self.labels, self.modalities = ["a", "b"], ["text"]
        self.built = 0
        self.probs = np.array([probabilities], dtype=np.float32)
        self._asr_factory = self._build_asr
        self._asr = None

    def _build_asr(self):
        self.built += 1
        time.sleep(0.2)  # a cold start: every thread arrives while the first one is building
        return SimpleNamespace(transcribe=lambda wave: "hello there")

    def probabilities(self, waves, texts):
        return np.repeat(self.probs, len(texts), axis=0)


def test_cold_threads_build_the_asr_once():
    predictor = _FakePredictor([0.3, 0.7])
    wave = 0.3 * np.sin(np.arange(16000, dtype=np.float32) / 8)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: predictor.predict(wave, sample_rate=16000), range(4)))
    assert predictor.built == 1
    assert all(r.transcript == "hello there" and r.label == "b" for r in results)


def test_non_finite_probabilities_are_an_error_naming_the_input_never_a_prediction():
    predictor = _FakePredictor([float("nan"), float("nan")])
    with pytest.raises(CrabserError, match="clip.wav.*non-finite"):
        predictor.predict(None, "some words", name="clip.wav")
