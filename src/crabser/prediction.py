"""The answer of a model for one input, the same in Python, the CLI and HTTP
(:class:`Prediction`; README, "Output schema"), and the rule that turns probabilities into a label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crabser.errors import CrabserError

#: the label of a prediction whose top probability is below the caller's ``min_confidence``
UNCERTAIN = "uncertain"


def check_min_confidence(min_confidence: float | None) -> None:
    """ValueError unless ``min_confidence`` is None or a probability."""
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence}")


def decided_label(probabilities: dict[str, float], min_confidence: float | None = None) -> str:
    """The most probable class, or :data:`UNCERTAIN` when its probability is below
    ``min_confidence`` (None: always the most probable; a forced choice, as a classifier makes)."""
    check_min_confidence(min_confidence)
    best = max(probabilities, key=lambda label: probabilities[label])
    if min_confidence is not None and probabilities[best] < min_confidence:
        return UNCERTAIN
    return best


@dataclass
class Prediction:
    """The predicted label of one input and the probability of every class."""

    source: str
    label: str
    probabilities: dict[str, float]
    transcript: str | None = None  #: the text the model read (None for a model without text)
    text_source: str | None = None  #: "given" or "asr"
    #: the utterance embedding (the model's ``fused`` tap), only when asked for (``embed=True``)
    embedding: list[float] | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict; ``embedding`` only when it was asked for."""
        record = asdict(self)
        if record["embedding"] is None:
            del record["embedding"]
        return record


def predict_each(
    predictor: Any,
    audios: Sequence[Any],
    texts: Sequence[str | None],
    names: Sequence[str],
    **options: Any,
) -> list[Prediction | CrabserError]:
    """Each input's prediction, or the CrabserError that names why it failed: all of them in one
    ``predictor.predict_batch`` pass, and one by one when one fails, so a bad input costs only its
    own answer (long recordings' segments, tables of inputs). ``options`` go to
    ``predict_batch`` (``sample_rate``, ``min_confidence``, ``embed``)."""
    try:
        return list(predictor.predict_batch(audios, texts, names=names, **options))
    except CrabserError:
        answers: list[Prediction | CrabserError] = []
        for audio, text, name in zip(audios, texts, names):
            try:
                answers += predictor.predict_batch([audio], [text], names=[name], **options)
            except CrabserError as error:
                answers.append(error)
        return answers
