"""Build the packaged default model: cross-validate its settings, train it on all of EmoDB, export it.

Usage: python scripts/build_default_model.py [--config configs/default_model.yaml] [--skip-crossval]

1. Leave-one-speaker-out cross-validation with ``configs/default_model.yaml`` (the figure the
   README reports; folds already finished are read back).
2. One model on all ten speakers (validation speakers 12 and 13 choose the checkpoint or, with
   ``train.refit``, the epochs of a refit on all ten).
3. ``crabser export --half`` into ``src/crabser/pretrained/emodb_speech`` with ``card.json``: what
   it was trained on, its labels, and the cross-validated metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "src" / "crabser" / "pretrained" / "emodb_speech"
VAL_SPEAKERS = ["12", "13"]  # one male, one female


def speech_encoder_description(speech) -> str:
    """The card's words for the speech encoder settings."""
    form = "each clip's own length" if speech.pad_to_seconds is None else f"padded to {speech.pad_to_seconds:g} s"
    if speech.kind == "whisper-ct2" and speech.model == "embedded":
        return f"Whisper tiny.en encoder (embedded, CTranslate2), output layer, {form}"
    if speech.kind == "hf-speech" and speech.model == "embedded":
        return f"Whisper tiny.en encoder (embedded, PyTorch from the bundled weights), hidden state {speech.layer} of 4, {form}"
    return f"{speech.kind} {speech.model}, layer {speech.layer}, {form}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "default_model.yaml"))
    parser.add_argument("--skip-crossval", action="store_true", help="Reuse runs/<name>/crossval.json.")
    args = parser.parse_args()

    from crabser import pipeline
    from crabser.config import load_config
    from crabser.data.manifest import Manifest, write_manifest
    from crabser.inference import export_model

    config = load_config(args.config, [])
    manifest = pipeline.prepare(config)
    encoders = pipeline.build_encoders(config)
    pipeline.extract_features(config, manifest, encoders)
    summary_path = config.run_dir / "crossval.json"
    if not args.skip_crossval or not summary_path.is_file():
        pipeline.crossval(config, manifest, encoders, on_fold=lambda k, m: print(f"fold {k}: UAR {m['uar']:.4f}", flush=True))
    crossval = json.loads(summary_path.read_text())
    pooled = json.loads((config.run_dir / "report" / "pooled_metrics.json").read_text())

    frame = manifest.frame.drop(columns=["fold"]).copy()
    frame["split"] = ["val" if s in VAL_SPEAKERS else "train" for s in frame["speaker"]]
    final_manifest = config.run_dir / "all_speakers_manifest.csv"
    write_manifest(Manifest(frame), final_manifest)
    final = load_config(args.config, [f"name={config.name}_all", "data.protocol=given", f"data.manifest={final_manifest}"])
    final_manifest_loaded = pipeline.prepare(final)
    result = pipeline.train(final, final_manifest_loaded, encoders)
    print(f"final model: best val UAR {result.best_val_uar:.4f} after {result.epochs} epochs", flush=True)

    export_model(final.run_dir, TARGET, half=True)
    card = {
        "name": "emodb_speech",
        "trained_on": "Berlin EmoDB (vendored data/emodb): 535 acted German utterances, 10 speakers, all used "
        + (f"(validation speakers {VAL_SPEAKERS} pick the number of epochs, then the model is refitted on all ten)"
           if final.train.refit else f"(validation speakers {VAL_SPEAKERS} pick the checkpoint)"),
        "modalities": final.model.modalities,
        "speech_encoder": speech_encoder_description(final.speech),
        "labels": json.loads((TARGET / "model.json").read_text())["labels"],
        "cross_validation": {
            "protocol": "leave-one-speaker-out, 10 folds",
            "mean": crossval["mean"], "std": crossval["std"], "pooled": crossval["pooled"],
            "per_class_recall": {label: row["recall"] for label, row in pooled["per_class"].items()},
        },
        "final_val_uar": result.best_val_uar,
        "command": "python scripts/build_default_model.py",
    }
    (TARGET / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    size = sum(p.stat().st_size for p in TARGET.iterdir()) / 1e6
    print(f"wrote {TARGET} ({size:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
