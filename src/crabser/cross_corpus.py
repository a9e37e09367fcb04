"""Cross-corpus evaluation: any model (a run, an exported model, the packaged default, a stack) on
any corpus a config names (``data.corpus`` or ``data.corpora``), through the config's label map.

Every utterance of the corpus is scored, whatever split a protocol would give it: a corpus the model
never saw is all test. Only the classes the model and the corpus share count:

- utterances of a class the model lacks are left out, and the report counts them per class;
- classes the model has and the corpus lacks are left out of UAR (a prediction into one of them is
  still an error), and the report names them.

A clip that cannot be read (:class:`~crabser.errors.AudioError`) is named in the report and left
out; the others are still scored. Any other error (a missing transcript for a model that reads
text and has no ASR, a non-finite output) stops the evaluation with its message.

:func:`single_clip_metrics` scores a finished cross-validation's folds as a user's single clips
are scored: not adapted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from crabser.config import RunConfig
from crabser.data.text import clean_text
from crabser.errors import AudioError, CrabserError
from crabser.evaluation.metrics import compute_metrics, metrics_by_group
from crabser.evaluation.report import write_predictions, write_report
from crabser.pipeline import source_manifest
from crabser.runs import RunFolder, git_commit

log = logging.getLogger(__name__)


def _predict_rows(recognizer, rows: pd.DataFrame, errors: dict[str, str]) -> dict[str, str]:
    """Predicted label per id of ``rows``; a batch with a bad clip is redone clip by clip, and each
    bad clip's error goes into ``errors``."""
    audios = rows["audio"].tolist()
    texts = [clean_text(t) for t in rows["text"]] if "text" in rows else None
    ids = rows["id"].tolist()
    try:
        return {p.source: p.label for p in recognizer.predict_batch(audios, texts, names=ids)}
    except AudioError:
        predicted = {}
        for i, name in enumerate(ids):
            try:
                predicted[name] = recognizer.predict(
                    audios[i], texts[i] if texts else None, name=name
                ).label
            except AudioError as error:
                errors[name] = f"{audios[i]}: {error}"
                log.warning("%s", errors[name])
        return predicted


def _adaptation_groups(
    column: str | None, rows: pd.DataFrame
) -> list[tuple[str | None, pd.DataFrame]]:
    """The rows to predict together: each ``column`` group's (the model's
    ``model.normalize_per``, speaker or corpus, to be adapted to first); all of them, no group,
    where ``column`` is None."""
    if column is None:
        return [(None, rows)]
    if column not in rows:
        raise CrabserError(
            f"the model normalises per {column} (model.normalize_per) and the corpus has no "
            f"'{column}' column"
        )
    return [(str(group), members) for group, members in rows.groupby(column, sort=False)]


def evaluate_on_corpus(
    model: str | Path,
    config: RunConfig,
    out_dir: Path | None = None,
    batch_size: int = 16,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    adapt: bool = True,
) -> dict:
    """Score ``model`` (:meth:`crabser.inference.Recognizer.load`) on the corpus ``config`` names;
    write the report into ``out_dir`` when given. ``progress(total)`` returns the function told
    after each batch how many clips it held. A model trained with ``model.normalize_per`` is
    adapted to each speaker (corpus) of the corpus in turn; ``adapt=False`` scores every clip on
    its own, with the model's training statistics (what one clip of a stranger gets)."""
    from crabser.inference import Recognizer

    recognizer = Recognizer.load(model)
    frame = source_manifest(config).frame
    model_labels = list(recognizer.labels)
    corpus_labels = sorted(frame["label"].unique())
    shared = [label for label in corpus_labels if label in model_labels]
    if not shared:
        raise CrabserError(
            f"the corpus shares no class with the model (corpus: {', '.join(corpus_labels)}; "
            f"model: {', '.join(model_labels)}); "
            "rename its labels with data.label_map"
        )
    scored = frame[frame["label"].isin(shared)].reset_index(drop=True)
    errors: dict[str, str] = {}
    predicted: dict[str, str] = {}
    advance = progress(len(scored)) if progress else None
    adapted = (
        recognizer
        if adapt and isinstance(recognizer, Recognizer) and recognizer.normalize_per
        else None
    )
    column = adapted.normalize_per if adapted is not None else None
    for group, members in _adaptation_groups(column, scored):
        if adapted is not None:  # normalised with the group's own recordings, as in training
            try:
                adapted.adapt_to(members["audio"].tolist(), names=members["id"].tolist())
            except AudioError as error:  # none of the group's recordings could be read
                errors.update({name: f"{group}: {error}" for name in members["id"]})
                continue
        for start in range(0, len(members), batch_size):
            rows = members.iloc[start : start + batch_size]
            predicted.update(_predict_rows(recognizer, rows, errors))
            if advance:
                advance(len(rows))
    if adapted is not None:
        adapted.adapt_to(None)
    scored = scored[scored["id"].isin(predicted)]
    if scored.empty:
        raise CrabserError(
            f"no clip of the corpus could be read ({len(errors)} errors, e.g. "
            f"{next(iter(errors.values()))})"
        )
    index = {label: i for i, label in enumerate(model_labels)}
    truth = [index[label] for label in scored["label"]]
    predictions = [index[predicted[i]] for i in scored["id"]]
    metrics = compute_metrics(truth, predictions, model_labels)
    if "corpus" in scored:
        metrics["per_corpus"] = metrics_by_group(
            truth, predictions, scored["corpus"].astype(str).tolist(), model_labels
        )
    report = {
        "model": str(model),
        "adapted_per": column,
        "corpus_classes": corpus_labels,
        "scored_classes": shared,
        "left_out_model_lacks": frame.loc[~frame["label"].isin(model_labels), "label"]
        .value_counts()
        .to_dict(),
        "model_classes_corpus_lacks": [
            label for label in model_labels if label not in corpus_labels
        ],
        "unreadable": errors,
        "git_commit": git_commit(),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_report(metrics, out_dir, prefix="cross_corpus", extra=report)
        write_predictions(
            out_dir / "cross_corpus_predictions.csv",
            scored["id"],
            scored["label"],
            [predicted[i] for i in scored["id"]],
        )
    return {**metrics, **report}


def single_clip_metrics(config: RunConfig, labels: list[str]) -> dict:
    """Pooled metrics (and per corpus, for a multi-corpus run) of each fold's model of a finished
    cross-validation on its held-out utterances, each clip on its own: through
    :class:`~crabser.inference.Recognizer` without ``adapt_to``, so a model trained with
    ``model.normalize_per`` normalises with its training speakers' statistics (what one clip of a
    stranger gets, where the cross-validation adapted to each held-out speaker). Runs the speech
    encoder again on the audio."""
    from crabser.inference import Recognizer

    truth: list[int] = []
    predicted: list[int] = []
    corpora: list[str] = []
    for fold in sorted(config.run_dir.glob("fold*")):
        recognizer = Recognizer.from_run(fold)
        test = RunFolder(fold).manifest().subset("test").frame
        answers = recognizer.predict_batch(test["audio"].tolist(), names=test["id"].tolist())
        truth += [labels.index(label) for label in test["label"]]
        predicted += [labels.index(answer.label) for answer in answers]
        corpora += test["corpus"].astype(str).tolist() if "corpus" in test else []
    if not truth:
        raise CrabserError(f"{config.run_dir}: no finished fold to score")
    metrics = compute_metrics(truth, predicted, labels)
    if corpora:
        metrics["per_corpus"] = metrics_by_group(truth, predicted, corpora, labels)
    return metrics
