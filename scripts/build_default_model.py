"""Build a packaged model: cross-validate its settings, train it on every utterance, export it with
its card.

Usage: python scripts/build_default_model.py [--config configs/default_model.yaml] [--target NAME]
[--skip-crossval]

1. Cross-validation with the config's folds (EmoDB: leave one speaker out; configs/multicorpus.yaml:
   leave one corpus out), the figure the card and README report; finished folds are read back.
2. One model on every utterance: validation speakers (EmoDB 12 and 13; in another corpus a tenth of
   its speakers, drawn by data.seed) choose the checkpoint or, with ``train.refit``, the epochs of a
   refit on all of them.
3. ``crabser export --half`` into ``src/crabser/pretrained/<target>`` with ``card.json``: classes,
   languages, training corpora with their terms, the cross-validated metrics, intended use and
   limits (``crabser models <target>`` prints it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "src" / "crabser" / "pretrained"
NAMED_VAL_SPEAKERS = {"emodb": ["12", "13"]}  # one male, one female
INTENDED_USE = (
    "Research and prototyping of speech emotion recognition on short clips (about 1-10 s) of one "
    "speaker; "
    "a score per class, not a diagnosis. Not for decisions about people."
)


def speech_encoder_description(speech, finetuned: bool = False) -> str:
    """The card's words for the speech encoder settings (``finetuned``: trained with the head)."""
    form = (
        "each clip's own length"
        if speech.pad_to_seconds is None
        else f"padded to {speech.pad_to_seconds:g} s"
    )
    if speech.kind == "whisper-ct2" and speech.model == "embedded":
        return f"Whisper tiny.en encoder (embedded, CTranslate2), output layer, {form}"
    if speech.kind == "hf-speech" and speech.model == "embedded":
        tuned = (
            ", its layers up to that state fine-tuned with the head (the convolutional stem frozen)"
            if finetuned
            else ""
        )
        return (
            "Whisper tiny.en encoder (embedded, PyTorch from the bundled weights), "
            f"hidden state {speech.layer} of 4{tuned}, {form}"
        )
    return f"{speech.kind} {speech.model}, layer {speech.layer}, {form}"


def validation_speakers(frame, corpus_name: str, seed: int) -> list[str]:
    """The final model's validation speakers: named ones for EmoDB, else a tenth of each corpus's
    (``corpus_name``: the corpus of a single-corpus frame)."""
    corpora = frame.get("corpus")
    chosen = []
    for corpus in sorted(corpora.unique()) if corpora is not None else [corpus_name]:
        speakers = (
            sorted(frame.loc[corpora == corpus, "speaker"].unique())
            if corpora is not None
            else sorted(frame["speaker"].unique())
        )
        prefix = f"{corpus}:" if corpora is not None else ""
        named = [prefix + s for s in NAMED_VAL_SPEAKERS.get(corpus, []) if prefix + s in speakers]
        chosen += named or [
            str(s)
            for s in np.random.default_rng(seed).choice(
                speakers, math.ceil(len(speakers) / 10), replace=False
            )
        ]
    return chosen


def every_utterance_config(config_path, config, manifest, overrides=()):
    """The config (``<name>_all``) of the model trained on every utterance of a cross-validated
    ``config`` (its ``manifest``, read from ``config_path`` with ``overrides``), and its validation
    speakers: they choose the checkpoint or the refit's epochs. Writes the run's
    ``all_speakers_manifest.csv``."""
    from crabser.config import load_config
    from crabser.data.manifest import Manifest, write_manifest

    frame = manifest.frame.drop(columns=["fold"]).copy()
    val_speakers = validation_speakers(frame, config.data.corpus, config.data.seed)
    frame["split"] = np.where(frame["speaker"].isin(val_speakers), "val", "train")
    path = config.run_dir / "all_speakers_manifest.csv"
    write_manifest(Manifest(frame), path)
    final = load_config(
        config_path,
        [
            *overrides,
            f"name={config.name}_all",
            "data.protocol=given",
            f"data.manifest={path}",
        ],
    )
    return final, val_speakers


def corpora_of(config, frame) -> list[dict]:
    """Each training corpus with its facts (language, kind of speech, terms) and its size."""
    from crabser.data.corpora import corpus_facts

    names = [s.corpus for s in config.data.corpora] or [config.data.corpus]
    rows = []
    for name in names:
        part = frame[frame["corpus"] == name] if "corpus" in frame else frame
        rows.append(
            {
                **corpus_facts(name),
                "clips": len(part),
                "speakers": int(part["speaker"].nunique()),
                "classes": sorted(part["label"].unique()),
            }
        )
    return rows


def cross_validation(config, crossval: dict, pooled: dict, single: dict | None = None) -> dict:
    """The card's cross-validation section: per fold group for several corpora, pooled for one;
    ``single``: the folds' models on single clips, for a speaker-normalised model
    (:func:`crabser.cross_corpus.single_clip_metrics`)."""
    section = {
        "mean": crossval["mean"],
        "std": crossval["std"],
        "pooled": crossval["pooled"],
        "per_class_recall": {label: row["recall"] for label, row in pooled["per_class"].items()},
    }
    if single is not None:
        keys = ("war", "uar", "macro_f1", "n")
        section["single_clips"] = {
            "protocol": "each clip on its own, not adapted (what crabser predict FILE gives)",
            "pooled": {k: single[k] for k in keys},
            **({"per_corpus": single["per_corpus"]} if "per_corpus" in single else {}),
        }
    per = config.model.normalize_per
    adaptation = (
        ""
        if per is None
        else (
            f"; speech frames normalised per {per} (model.normalize_per): each held-out {per} "
            f"with the statistics of all its own clips. In prediction: crabser predict --adapt "
            f"over one {per}'s recordings (Recognizer.adapt_to), which pays where they span "
            f"several emotions and removes the emotion where they all have the same one; without "
            f"it the model normalises with its training {per}s' statistics"
        )
    )
    if config.data.fold_by == "corpus":
        return {
            "protocol": (
                "leave one corpus out: each corpus scored by a model trained on the others, "
                "on its own classes" + adaptation
            ),
            "per_corpus": crossval["per_corpus"],
            **section,
        }
    folds = "leave one speaker out" if config.data.folds is None else f"{config.data.folds} folds"
    protocol = f"speaker-independent, {folds} by {config.data.fold_by}" + adaptation
    return {"protocol": protocol, **section}


def limits(
    corpora: list[dict],
    crossval: dict,
    speech: str,
    normalize_per: str | None = None,
    single: dict | None = None,
    finetuned: bool = False,
) -> list[str]:
    """Known limits stated on the card."""
    acted = [c["corpus"] for c in corpora if c["speech"] == "acted"]
    clips, speakers = sum(c["clips"] for c in corpora), sum(c["speakers"] for c in corpora)
    size = f"Trained on {clips} clips from {speakers} speakers"
    if acted:
        verb = "is" if len(acted) == 1 else "are"
        size += f"; {', '.join(acted)} {verb} acted speech"
        size += ", more intense and cleaner than everyday speech"
    notes = [
        size + ".",
        (
            "Languages: "
            + ", ".join(sorted({c["language"] for c in corpora if c["language"]}))
            + "; other languages and recording conditions are unseen, and accuracy there is lower "
            "(see cross_validation)."
        ),
        (
            f"The speech encoder ({speech}) learnt from these corpora only."
            if finetuned
            else f"The speech encoder ({speech}) is frozen; only the head is trained."
        ),
    ]
    if "per_corpus" in crossval:
        worst = min(crossval["per_corpus"].items(), key=lambda item: item[1]["uar"])
        adapted = f", adapted to each {normalize_per}" if normalize_per else ""
        note = (
            f"On a corpus it never saw{adapted}, UAR ranged down to {worst[1]['uar']:.2f} "
            f"({worst[0]})"
        )
        if single is not None and "per_corpus" in single:
            worst = min(single["per_corpus"].items(), key=lambda item: item[1]["uar"])
            note += f"; on single clips, down to {worst[1]['uar']:.2f} ({worst[0]})"
        notes.append(note + ".")
    if normalize_per:
        notes.append(
            f"Adapt (--adapt) only over recordings of one {normalize_per} that span several "
            f"emotions: where they all carry one emotion, normalising the voice removes the "
            "emotion too."
        )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "default_model.yaml"))
    parser.add_argument(
        "--target",
        default=None,
        help="Folder name under src/crabser/pretrained "
        "(default: emodb_speech, or multicorpus_speech for data.corpora).",
    )
    parser.add_argument(
        "--skip-crossval", action="store_true", help="Reuse runs/<name>/crossval.json."
    )
    args = parser.parse_args()

    from crabser import pipeline
    from crabser.config import load_config
    from crabser.cross_corpus import single_clip_metrics
    from crabser.crossval import crossval
    from crabser.inference import export_model
    from crabser.runs import run_labels
    from crabser.training import fit

    config = load_config(args.config, [])
    target = PRETRAINED / (
        args.target or ("multicorpus_speech" if config.data.corpora else "emodb_speech")
    )
    manifest = pipeline.prepare(config)
    encoders = pipeline.EncoderCache()(config)  # none with train.finetune: nothing to extract
    pipeline.extract_features(config, manifest, encoders)
    summary_path = config.run_dir / "crossval.json"
    if not args.skip_crossval or not summary_path.is_file():
        crossval(
            config,
            manifest,
            encoders,
            on_fold=lambda k, m: print(f"fold {k}: UAR {m['uar']:.4f}", flush=True),
        )
    summary = json.loads(summary_path.read_text())
    pooled = json.loads((config.run_dir / "report" / "pooled_metrics.json").read_text())
    single = (  # the folds' models on single clips, where cross-validation adapted per speaker
        single_clip_metrics(config, run_labels(config, manifest))
        if config.model.normalize_per
        else None
    )

    final, val_speakers = every_utterance_config(args.config, config, manifest)
    result = fit.train(final, pipeline.prepare(final), encoders)
    print(
        f"final model: best val UAR {result.best_val_uar:.4f} after {result.epochs} epochs",
        flush=True,
    )

    export_model(final.run_dir, target, half=True)
    encoder_words = speech_encoder_description(final.speech, final.train.finetune)
    corpora = corpora_of(config, manifest.frame)
    how = (
        f"validation speakers {val_speakers} pick the number of epochs, then the model is refitted "
        "on every speaker"
        if final.train.refit
        else f"validation speakers {val_speakers} pick the checkpoint"
    )
    card = {
        "name": target.name,
        "trained_on": "; ".join(
            f"{c['corpus']} ({c['language']}, {c['speech']}): {c['clips']} clips, {c['speakers']} "
            "speakers"
            for c in corpora
        )
        + f"; every utterance used ({how})",
        "corpora": corpora,
        "languages": sorted({c["language"] for c in corpora if c["language"]}),
        "terms": "The training corpora's terms carry over to the model: "
        + " | ".join(f"{c['corpus']}: {c['terms']}" for c in corpora),
        "modalities": final.model.modalities,
        "speech_encoder": encoder_words,
        "labels": json.loads((target / "model.json").read_text())["labels"],
        "cross_validation": cross_validation(config, summary, pooled, single),
        "intended_use": INTENDED_USE,
        "limits": limits(
            corpora,
            summary,
            encoder_words,
            final.model.normalize_per,
            single,
            final.train.finetune,
        ),
        "final_val_uar": result.best_val_uar,
        "command": "python scripts/build_default_model.py --config "
        f"{Path(args.config).resolve().relative_to(REPO)}",
    }
    (target / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
    print(f"wrote {target} ({size:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
