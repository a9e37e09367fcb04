"""Word error rate of ASR transcripts: word-level edit distance over reference length.

Both sides are normalised the usual way before scoring: lower case, punctuation removed except
in-word apostrophes, whitespace collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCTUATION = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def normalise_words(text: str) -> list[str]:
    """Lower-cased words without punctuation."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis``
    (Levenshtein)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
            )
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for reference, hypothesis in zip(references, hypotheses):
        ref = normalise_words(reference)
        edits += edit_distance(ref, normalise_words(hypothesis))
        words += len(ref)
    if words == 0:
        raise ValueError("the references have no words")
    return edits / words
