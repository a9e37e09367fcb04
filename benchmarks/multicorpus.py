"""Four corpora, four languages: leave-one-corpus-out with the multi-corpus model, the EmoDB-only
default model and a linear probe, each scored on the held-out corpus's own classes, under two
protocols: single clips (each clip on its own) and adapted (each held-out speaker's clips
normalised with that speaker's statistics; for speaker-normalised models, ``model.normalize_per``).

- multi-corpus model: ``crabser crossval -c configs/multicorpus.yaml`` (fold_by corpus) on each
  seed of ``--seeds``: each corpus is scored by a Crab trained on the other three; a
  speaker-normalised config's crossval is the adapted column, and its folds' models through
  ``Recognizer`` without ``adapt_to`` the single clips (Whisper run again on the audio: a few
  minutes);
- EmoDB-only: the packaged EmoDB model (crabser/emodb_speech: all of EmoDB, 7 classes; seed 0)
  and the same recipe trained on the other seeds of ``--emodb-seeds``, through ``crabser evaluate
  --corpus --no-adapt`` (single clips) on each other corpus, and for a speaker-normalised
  multi-corpus config the packaged one adapted too, with the same label map (its extra class,
  boredom, stays a possible error, as it is for a user). One seed of each side is not enough:
  seeds of one recipe move a held-out corpus's UAR by up to .1;
- probe: mean+std of the same cached Whisper features, standardised, class-balanced logistic
  regression trained on the other three corpora (C by speaker-grouped 3-fold CV on them); with a
  speaker-normalised config, also on each speaker's vectors standardised with its own statistics.

Usage (from the repository root): python -m benchmarks.multicorpus [--jobs 2] [--seeds 0 1]
[--emodb-seeds 0 1 2] [--quick] [-o KEY=VALUE ...] (``--quick``: 40 clips per corpus, 2 epochs,
seed 0 only, in runs/quick: a smoke run, not the benchmark; ``-o``: a recipe other than the
config's, written to a section of its own named by the overrides.)"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import (
    command_line,
    header,
    per_speaker,
    pooled_features,
    prepared_corpora,
    quick_overrides,
    write_section,
)
from benchmarks.crab_head import mean_best_validation
from benchmarks.whisper_layers import probe_loso
from crabser import pipeline
from crabser.config import load_config
from crabser.cross_corpus import evaluate_on_corpus, single_clip_metrics
from crabser.crossval import crossval, require_same_settings
from crabser.data.manifest import Manifest, write_manifest
from crabser.evaluation.metrics import metrics_by_group
from crabser.runs import run_labels
from crabser.training import fit
from crabser.training.checkpoint_io import run_checkpoint

EMODB_ONLY = "crabser/emodb_speech"  #: the packaged EmoDB-only model
DEFAULT_MODEL_CONFIG = "configs/default_model.yaml"  #: its recipe


def single_corpus_config(config, manifest, corpus: str):
    """``config`` reading the run's utterances of one corpus (a manifest file: already through the
    label map)."""
    path = config.run_dir / f"{corpus}_manifest.csv"
    write_manifest(Manifest(manifest.frame[manifest.frame["corpus"] == corpus]), path)
    data = config.data.model_copy(update={"manifest": str(path)})
    return config.model_copy(update={"data": data, "name": f"{config.name}_{corpus}"})


def multi_corpus_runs(args, seeds: list[int]) -> tuple[list[tuple], dict]:
    """The multi-corpus cross-validation of each seed (seed 0 in ``runs/<name>``, seed s in
    ``runs/<name>_seed<s>``; finished folds are read back): ``(config, manifest, summary)`` each,
    and the encoders (every seed's are the same)."""
    quick = (
        ["train.epochs=2", "train.progress=false", "data.val_speakers_per_fold=2"]
        if args.quick
        else []
    )
    common = [*quick, *quick_overrides(args.quick), *args.override]
    name = load_config(args.config, common).name
    runs = []
    for seed in seeds:
        by_seed = [f"name={name}_seed{seed}", f"train.seed={seed}"] if seed else []
        config = load_config(args.config, [*common, *by_seed])
        manifest, encoders = prepared_corpora(config, args.quick)
        runs.append((config, manifest, crossval(config, manifest, encoders, jobs=args.jobs)))
    return runs, encoders


def emodb_only_models(seeds: list[int], quick: bool) -> dict[int, str]:
    """The EmoDB-only model of each seed: seed 0 is the packaged one; another seed is trained the
    way scripts/build_default_model.py trained it (configs/default_model.yaml on every EmoDB
    utterance, validation speakers 12 and 13 choosing the refit's epochs) in
    ``runs/default_model_seed<s>_all``, read back when finished. Its model is not exported, so it
    is scored in float32 where the packaged one is float16."""
    from scripts.build_default_model import every_utterance_config

    models = {}
    for seed in seeds:
        if seed == 0:
            models[seed] = EMODB_ONLY
            continue
        overrides = [f"name=default_model_seed{seed}", f"train.seed={seed}"]
        overrides += quick_overrides(quick)
        config = load_config(DEFAULT_MODEL_CONFIG, overrides)
        final, _ = every_utterance_config(
            DEFAULT_MODEL_CONFIG, config, pipeline.prepare(config), overrides
        )
        if run_checkpoint(final.run_dir).is_file():
            require_same_settings(final)
        else:
            encoders = pipeline.build_encoders(final)
            manifest = pipeline.prepare(final)
            pipeline.extract_features(final, manifest, encoders)
            fit.train(final, manifest, encoders)
        models[seed] = str(final.run_dir)
    return models


def encoder_training(config) -> str:
    """How the speech encoder was trained, in the table's words."""
    if not config.train.finetune:
        return "speech encoder frozen"
    return f"speech encoder fine-tuned with the head (lr_encoder {config.train.lr_encoder:g})"


def spread(values: list[float]) -> str:
    """``mean ± std (each)`` of several seeds' scores, the score alone for one."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    each = ", ".join(f"{v:.3f}" for v in values)
    return f"{np.mean(values):.3f} ± {np.std(values):.3f} ({each})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/multicorpus.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="folds trained side by side")
    parser.add_argument("--quick", action="store_true", help="2 epochs: a smoke run")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="multi-corpus seeds (default 0 1)"
    )
    parser.add_argument(
        "--emodb-seeds",
        type=int,
        nargs="+",
        default=None,
        help="EmoDB-only seeds, 0 the packaged model (default 0 1 2)",
    )
    parser.add_argument(
        "-o", "--override", action="append", default=[], help="config override, key=value"
    )
    args = parser.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    emodb_seeds = args.emodb_seeds or ([0] if args.quick else [0, 1, 2])
    started = time.perf_counter()
    runs, encoders = multi_corpus_runs(args, seeds)
    crab_seconds = time.perf_counter() - started
    config, manifest, summary = runs[0]

    labels = run_labels(config, manifest)
    adapts = config.model.normalize_per is not None
    started = time.perf_counter()
    frame, pooled = pooled_features(config, manifest, encoders["speech"].cache_id, "speech")
    y = np.array([labels.index(label) for label in frame["label"]])
    folds, corpora = frame["fold"].astype(int).to_numpy(), frame["corpus"].tolist()
    speakers = frame["speaker"].astype(str).to_numpy()
    probe = probe_loso(pooled, y, folds, speakers)
    probe_scores = metrics_by_group(y.tolist(), probe.tolist(), corpora, labels)
    probe_adapted = {}
    if adapts:  # the probe given the same speaker normalisation
        probe = probe_loso(per_speaker(pooled, speakers), y, folds, speakers)
        probe_adapted = metrics_by_group(y.tolist(), probe.tolist(), corpora, labels)
    probe_seconds = time.perf_counter() - started

    started = time.perf_counter()
    held_out = [corpus for corpus in sorted(frame["corpus"].unique()) if corpus != "emodb"]
    # the EmoDB-only models: each clip on its own; adapted per speaker (the packaged one)
    single: dict[str, list[float]] = {corpus: [] for corpus in held_out}
    adapted: dict[str, list[float]] = {corpus: [] for corpus in held_out}
    for seed, model in emodb_only_models(emodb_seeds, args.quick).items():
        for corpus in held_out:
            corpus_config = single_corpus_config(config, manifest, corpus)
            single[corpus].append(evaluate_on_corpus(model, corpus_config, adapt=False)["uar"])
            if adapts and seed == 0:
                adapted[corpus].append(evaluate_on_corpus(model, corpus_config)["uar"])
    default_seconds = time.perf_counter() - started
    started = time.perf_counter()
    crab_single: dict[str, list[float]] = {}
    crab_adapted: dict[str, list[float]] = {}
    for seed_config, _, seed_summary in runs:
        scores = (
            single_clip_metrics(seed_config, labels)["per_corpus"]
            if adapts
            else seed_summary["per_corpus"]
        )
        for corpus in seed_summary["per_corpus"]:
            crab_single.setdefault(corpus, []).append(scores[corpus]["uar"])
            if adapts:
                crab_adapted.setdefault(corpus, []).append(
                    seed_summary["per_corpus"][corpus]["uar"]
                )
    unadapted_seconds = time.perf_counter() - started

    counts = frame.groupby("corpus")["label"].agg(
        lambda s: f"{len(s)} clips, {s.nunique()} classes"
    )
    validation = [mean_best_validation(c, m) for c, m, _ in runs]
    body = header(command_line()) + (
        f"- {config.name}: {', '.join(f'{c} ({n})' for c, n in counts.items())}; classes "
        f"{', '.join(labels)}\n"
        f"- multi-corpus Crab: {config.model.normalize_per or 'no'} normalisation "
        f"(model.normalize_per), {encoder_training(config)}, seeds "
        f"{', '.join(map(str, seeds))}; mean best validation UAR "
        f"of its folds {spread(validation)}\n"
        f"- EmoDB-only: seeds {', '.join(map(str, emodb_seeds))} (seed 0: the packaged "
        "crabser/emodb_speech; others trained the same way, scripts/build_default_model.py's "
        "final model, in runs/default_model_seed<s>_all)\n"
        f"- seconds: Crab crossval {crab_seconds:.0f} (finished folds read back), its folds' "
        f"models on single clips {unadapted_seconds:.0f}, probe {probe_seconds:.0f}, EmoDB-only "
        f"models on the other corpora {default_seconds:.0f}\n\n"
        "UAR on the held-out corpus's own classes (the models never saw a clip of it), mean ± "
        "std over seeds (each seed in brackets). Single clips: each clip on its own (a "
        "speaker-normalised model uses its training speakers' statistics), what `crabser "
        "predict FILE` gives."
        + (
            " Adapted: each held-out speaker's clips normalised with that speaker's own "
            "statistics (its audio, never its labels), what `crabser predict --adapt` and "
            "`crabser evaluate --corpus` give."
            if adapts
            else ""
        )
        + " Apart: every multi-corpus seed above every EmoDB-only seed.\n\n"
        "| held-out corpus | EmoDB-only, single clips | multi-corpus Crab, single clips | probe "
        "| multi / EmoDB-only | apart |"
        + (
            " EmoDB-only, adapted | multi-corpus Crab, adapted | probe, per speaker "
            "| multi / EmoDB-only, adapted |"
            if adapts
            else ""
        )
        + "\n|---|---|---|---|---|---|"
        + ("---|---|---|---|" if adapts else "")
        + "\n"
    )

    def ratio(multi: list[float], emodb_only: list[float]) -> str:
        return f"{np.mean(multi) / np.mean(emodb_only):.2f}" if multi and emodb_only else ""

    def apart(multi: list[float], emodb_only: list[float]) -> str:
        if not multi or not emodb_only:
            return ""
        return "yes" if min(multi) > max(emodb_only) else "no"

    def uar(scores: dict, corpus: str) -> str:
        return f"{scores[corpus]['uar']:.4f}" if corpus in scores else ""

    for corpus in summary["per_corpus"]:
        trained = "(trained on it)" if corpus == "emodb" else ""
        emodb_only, multi = single.get(corpus, []), crab_single.get(corpus, [])
        body += (
            f"| {corpus} | {spread(emodb_only) or trained} | {spread(multi)} "
            f"| {uar(probe_scores, corpus)} | {ratio(multi, emodb_only)} "
            f"| {apart(multi, emodb_only)} |"
        )
        if adapts:
            emodb_adapted, multi_adapted = adapted.get(corpus, []), crab_adapted.get(corpus, [])
            body += (
                f" {spread(emodb_adapted) or trained} | {spread(multi_adapted)} "
                f"| {uar(probe_adapted, corpus)} | {ratio(multi_adapted, emodb_adapted)} |"
            )
        body += "\n"
    # a recipe changed by -o gets its own section beside the config's own
    recipe = f" ({', '.join(args.override)})" if args.override else ""
    write_section(f"Leave one corpus out: EmoDB, EMOVO, ASED, URDU{recipe}", body)
    print(body)
    print(
        json.dumps(
            {
                "crab_single": crab_single,
                "crab_adapted": crab_adapted,
                "probe": probe_scores,
                "probe_per_speaker": probe_adapted,
                "emodb_only_single": single,
                "emodb_only_adapted": adapted,
            }
        )
    )


if __name__ == "__main__":
    main()
