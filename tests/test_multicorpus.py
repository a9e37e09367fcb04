"""Several corpora in one run: joining, the label map, corpus-balanced batches and weights,
per-corpus scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_corpus, tone
from tiny_runs import encoders, tiny_config, tiny_manifest

from crabser.config import ConfigError, RunConfig, dump_config, load_config, load_run_config
from crabser.data.manifest import Manifest, ManifestError
from crabser.data.multicorpus import apply_label_map, join_corpora
from crabser.data.protocols import group_folds
from crabser.data.sampling import equal_share_sampler
from crabser.errors import CrabserError
from crabser.evaluation.metrics import compute_metrics, metrics_by_group
from crabser.losses import inverse_frequency_weights


def _source(corpus: str, root) -> object:
    return RunConfig.model_validate(
        {"data": {"corpora": [{"corpus": corpus, "root": str(root)}]}}
    ).data.corpora[0]


@pytest.fixture
def two_corpora(tmp_path, write_wav):
    """A fake EmoDB (speaker 09) and a fake EMOVO tree whose ids differ and whose speakers both
    exist."""
    for stem in ("09a01Wa", "09a01La", "10a02Ta"):
        write_wav(f"emodb/{stem}.wav", tone(0.3))
    for stem in ("f1/rab-f1-b1", "f1/sor-f1-b2", "m1/tri-m1-b1"):
        write_wav(f"emovo/{stem}.wav", tone(0.3))
    return tmp_path


def test_joined_corpora_carry_their_corpus_and_keep_speakers_apart(two_corpora):
    manifest = join_corpora(
        [_source("emodb", two_corpora / "emodb"), _source("emovo", two_corpora / "emovo")]
    )
    frame = manifest.frame.set_index("id")
    assert len(frame) == 6
    assert frame.loc["emodb_09a01Wa", ["corpus", "speaker", "label"]].tolist() == [
        "emodb",
        "emodb:09",
        "anger",
    ]
    assert frame.loc["emovo_sor-f1-b2", ["corpus", "speaker", "label"]].tolist() == [
        "emovo",
        "emovo:f1",
        "surprise",
    ]
    assert sorted(frame["speaker"].unique()) == ["emodb:09", "emodb:10", "emovo:f1", "emovo:m1"]


def test_a_corpus_listed_twice_is_an_error_naming_the_clash(two_corpora):
    source = _source("emodb", two_corpora / "emodb")
    with pytest.raises(ManifestError, match=r"names \['emodb'\] more than once"):
        join_corpora([source, source])
    renamed = RunConfig.model_validate(
        {
            "data": {
                "corpora": [
                    {"corpus": "emodb", "root": str(two_corpora / "emodb"), "name": "again"}
                ]
            }
        }
    )
    with pytest.raises(ManifestError, match=r"3 utterance ids occur more than once in .*emodb"):
        join_corpora([source, renamed.data.corpora[0]])


def test_the_label_map_renames_merges_and_drops():
    frame = pd.DataFrame(
        {
            "id": list("abcdef"),
            "audio": list("abcdef"),
            "label": ["anger", "boredom", "calm", "neutral", "surprise", "anger"],
        }
    )
    mapped = apply_label_map(
        Manifest(frame), {"calm": "neutral", "boredom": None, "surprise": None}
    ).frame
    assert mapped["id"].tolist() == ["a", "c", "d", "f"]
    assert mapped["label"].tolist() == ["anger", "neutral", "neutral", "anger"]
    with pytest.raises(ManifestError, match=r"labels no corpus has: \['bordeom'\]"):
        apply_label_map(Manifest(frame), {"bordeom": None})
    shared_map = apply_label_map(
        Manifest(frame), {"boredom": None, "disgust": None}
    ).frame  # disgust: another corpus's
    assert "boredom" not in set(shared_map["label"]) and len(shared_map) == 5


def test_corpora_and_a_single_corpus_root_cannot_both_be_given(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  root: x\n  corpora:\n    - {corpus: emodb, root: y}\n")
    with pytest.raises(ConfigError, match="remove data.root"):
        load_config(path)


def test_corpus_balanced_class_weights_count_each_utterance_by_its_corpus_share():
    # corpus A: three of class 0; corpus B: one of class 0, one of class 1. Batches hold A and B
    # alike, so class 0 has share (1 + 1/2) / 2 = 3/4 and class 1 share 1/4: weights 4/3 and 4.
    labels = torch.tensor([0, 0, 0, 0, 1])
    weights = inverse_frequency_weights(
        labels, 3, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2])
    )
    assert weights.tolist() == pytest.approx([4 / 3, 4.0, 0.0])
    assert inverse_frequency_weights(labels, 2).tolist() == pytest.approx(
        [5 / 4, 5.0]
    )  # unweighted: N / N_j


def test_corpus_balanced_batches_hold_each_corpus_alike():
    corpora = [0] * 90 + [1] * 10  # one corpus nine times the size of the other
    sampler = equal_share_sampler(corpora, batch_size=10, seed=0)
    sampler.set_epoch(0)
    for batch in sampler:
        assert sum(corpora[i] for i in batch) == 5


def test_metrics_by_group_score_each_corpus_on_its_own_classes():
    labels = ["anger", "neutral", "surprise"]
    truth, predictions = [0, 1, 1, 0, 2], [0, 1, 0, 2, 2]
    groups = ["a", "a", "a", "b", "b"]
    by_corpus = metrics_by_group(truth, predictions, groups, labels)
    assert by_corpus["a"]["uar"] == pytest.approx((1 + 1 / 2) / 2)  # a has no surprise: two classes
    assert by_corpus["b"]["uar"] == pytest.approx((0 + 1) / 2) and by_corpus["b"]["n"] == 2
    assert by_corpus["a"]["war"] == pytest.approx(2 / 3)
    assert compute_metrics(truth, predictions, labels)["uar"] == pytest.approx(
        (1 / 2 + 1 / 2 + 1) / 3
    )


def _two_corpus_manifest(root) -> Manifest:
    frame = tiny_manifest(root, utterances=80).frame
    frame["corpus"] = np.where(np.arange(len(frame)) < 60, "big", "small")
    frame["speaker"] = frame["corpus"] + ":" + frame["speaker"]
    return Manifest(frame)


def test_leave_one_corpus_out_reports_each_held_out_corpus(tmp_path):
    from crabser.crossval import crossval

    config = tiny_config(tmp_path, "loco", sampler="corpus_balanced", epochs=2)
    manifest = group_folds(_two_corpus_manifest(tmp_path), by="corpus")
    summary = crossval(config, manifest, encoders())
    assert set(summary["per_corpus"]) == {"big", "small"}
    assert summary["per_corpus"]["big"]["n"] == 60 and summary["per_corpus"]["small"]["n"] == 20
    # each fold tests exactly one corpus, so its per-corpus score is that fold's score
    for fold, corpus in ((0, "big"), (1, "small")):
        assert summary["folds"][fold]["uar"] == pytest.approx(summary["per_corpus"][corpus]["uar"])
    assert "| small |" in (config.run_dir / "crossval.md").read_text()


def test_a_multi_corpus_run_weights_classes_by_corpus_share_and_scores_each_corpus(tmp_path):
    from crabser import pipeline
    from crabser.training import fit
    from crabser.training.checkpoint_io import load_module

    config = tiny_config(tmp_path, "mc", sampler="corpus_balanced", epochs=2)
    manifest = _two_corpus_manifest(tmp_path)
    fit.train(config, manifest, encoders())
    module = load_module(config.run_dir / "checkpoints" / "best.ckpt")
    train = manifest.subset("train").frame
    sizes = train["corpus"].value_counts()
    share = {
        label: sum(
            ((train["corpus"] == c) & (train["label"] == label)).sum() / sizes[c]
            for c in sizes.index
        )
        / len(sizes)
        for label in module.labels
    }
    assert module.hparams["class_weights"] == pytest.approx(
        [1 / share[label] for label in module.labels], rel=1e-5
    )
    metrics, _ = pipeline.evaluate(config, manifest, encoders(), "test")
    test = manifest.subset("test").frame
    assert {c: m["n"] for c, m in metrics["per_corpus"].items()} == test[
        "corpus"
    ].value_counts().to_dict()


def test_a_single_corpus_manifest_refuses_corpus_balanced_batches(tmp_path):
    from crabser.training import fit

    with pytest.raises(CrabserError, match="needs a 'corpus' column"):
        fit.train(
            tiny_config(tmp_path, "one", sampler="corpus_balanced"),
            tiny_manifest(tmp_path),
            encoders(),
        )


def test_prepare_joins_the_real_corpora_through_one_label_map(tmp_path):
    emodb, emovo = shared_corpus("emodb"), shared_corpus("emovo")
    from crabser import pipeline

    config = RunConfig.model_validate(
        {
            "output_dir": str(tmp_path),
            "name": "joined",
            "data": {
                "corpora": [
                    {"corpus": "emodb", "root": str(emodb)},
                    {"corpus": "emovo", "root": str(emovo)},
                ],
                "label_map": {"boredom": None, "surprise": None},
                "protocol": "folds",
                "fold_by": "corpus",
            },
        }
    )
    frame = pipeline.prepare(config).frame
    assert frame["corpus"].value_counts().to_dict() == {"emodb": 535 - 81, "emovo": 588 - 84}
    assert sorted(frame["label"].unique()) == [
        "anger",
        "disgust",
        "fear",
        "happiness",
        "neutral",
        "sadness",
    ]
    assert frame.groupby("corpus")["fold"].nunique().to_dict() == {"emodb": 1, "emovo": 1}
    assert frame["speaker"].str.split(":").str[0].eq(frame["corpus"]).all()
    # the run's saved config loads again (every field is written, corpus / root at their defaults),
    # and its saved manifest, already through the label map, is read as it is
    saved = load_run_config(config.run_dir)
    assert [s.corpus for s in saved.data.corpora] == ["emodb", "emovo"]
    again = pipeline.source_manifest(
        saved.model_copy(
            update={
                "data": saved.data.model_copy(
                    update={"manifest": str(config.run_dir / "manifest.csv")}
                )
            }
        )
    )
    assert len(again) == len(frame)
    assert dump_config(saved) == dump_config(
        load_config(
            config.run_dir / "config.yaml",
            [f"output_dir={tmp_path}", "name=joined"],
            check_outputs=False,
        )
    )
