"""Cross-corpus evaluation: the packaged EmoDB model (crabser/emodb_speech, 7 classes) on real
EMOVO clips."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import shared_corpus
from typer.testing import CliRunner

from crabser.cli import app
from crabser.config import load_config
from crabser.cross_corpus import evaluate_on_corpus
from crabser.data.corpora import get_adapter


@pytest.fixture(scope="module")
def emovo_config(tmp_path_factory):
    """Two real EMOVO clips per class (surprise included, which EmoDB lacks) and one corrupt
    clip."""
    root = tmp_path_factory.mktemp("emovo_eval")
    frame = get_adapter("emovo")(shared_corpus("emovo")).frame
    subset = frame[frame["speaker"] == "f1"].groupby("label").head(2)
    corrupt = root / "broken.wav"
    corrupt.write_bytes(b"RIFF not really audio")
    bad_row = subset.iloc[[0]].assign(id="emovo_broken", audio=str(corrupt))
    pd.concat([subset, bad_row]).to_csv(root / "manifest.csv", index=False)
    path = root / "emovo.yaml"
    path.write_text(f"name: emovo_f1\ndata: {{manifest: {root / 'manifest.csv'}}}\n")
    return root, path


EMODB_MODEL = "crabser/emodb_speech"


def test_a_model_is_scored_on_the_classes_it_shares_with_the_corpus(emovo_config):
    root, path = emovo_config
    result = evaluate_on_corpus(EMODB_MODEL, load_config(path), root / "report")
    assert result["left_out_model_lacks"] == {"surprise": 2}
    assert result["model_classes_corpus_lacks"] == ["boredom"]
    assert result["scored_classes"] == [
        "anger",
        "disgust",
        "fear",
        "happiness",
        "neutral",
        "sadness",
    ]
    assert (
        list(result["unreadable"]) == ["emovo_broken"]
        and "broken.wav" in result["unreadable"]["emovo_broken"]
    )
    assert result["n"] == 12  # 6 shared classes x 2 clips; the corrupt clip is named and left out
    predictions = pd.read_csv(root / "report" / "cross_corpus_predictions.csv")
    recall = (
        (predictions["label"] == predictions["prediction"]).groupby(predictions["label"]).mean()
    )
    assert result["uar"] == pytest.approx(recall.mean())  # averaged over the six classes EMOVO has
    saved = json.loads((root / "report" / "cross_corpus_metrics.json").read_text())
    assert saved["uar"] == result["uar"] and saved["left_out_model_lacks"] == {"surprise": 2}


def test_the_cli_scores_a_model_on_a_corpus_config(emovo_config, tmp_path):
    _, path = emovo_config
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--corpus",
            str(path),
            "--model",
            EMODB_MODEL,
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["n"] == 12 and summary["model_classes_corpus_lacks"] == ["boredom"]
    assert summary["adapted_per"] == "speaker"  # the EmoDB model adapts to each speaker
    assert (tmp_path / "r" / "cross_corpus_predictions.csv").is_file()
    single = CliRunner().invoke(
        app,
        ["evaluate", "--corpus", str(path), "--model", EMODB_MODEL, "--out", str(tmp_path / "s")]
        + ["--json", "--no-adapt"],
    )
    assert single.exit_code == 0, single.output
    assert json.loads(single.output.strip().splitlines()[-1])["adapted_per"] is None


def test_a_corpus_sharing_no_class_with_the_model_is_a_clear_error(tmp_path, emovo_config):
    root, _ = emovo_config
    frame = pd.read_csv(root / "manifest.csv").assign(label="calm")
    frame.to_csv(tmp_path / "calm.csv", index=False)
    (tmp_path / "calm.yaml").write_text(
        f"name: calm\ndata: {{manifest: {tmp_path / 'calm.csv'}}}\n"
    )
    result = CliRunner().invoke(
        app, ["evaluate", "--corpus", str(tmp_path / "calm.yaml"), "--model", EMODB_MODEL]
    )
    assert result.exit_code == 2
    assert "shares no class with the model" in result.output and "data.label_map" in result.output
