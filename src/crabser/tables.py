"""Prediction over many inputs: folders, lists and tables in; one table out, resumable.

``crabser predict DIR|LIST.txt|TABLE.csv --out OUT.parquet`` and
:meth:`crabser.inference.Recognizer.predict_table`.

Inputs (:func:`gather_inputs`), in the order given:

- a folder: every audio file under it, recursively, found by content
  (:func:`crabser.data.audio.looks_like_audio`), not by extension; hidden files and folders are
  skipped and links to folders are not followed; sorted by path;
- a list (``.txt``, ``.lst``): one path per line; blank lines and ``#`` comments are skipped;
- a table (``.csv``, ``.tsv``, ``.parquet``): a path column (``path_column``, else the first of
  :data:`PATH_COLUMNS` present) and, optionally, a transcript column (``text_column``, else the
  first of :data:`TEXT_COLUMNS` present); its other columns are carried into the output;
- any other file: itself (an audio file).

Relative paths in a list or a table are read from the list's or the table's folder; the path and
transcript cells of a CSV are read as written (a transcript "NA" stays "NA"), and a row with an
empty path becomes an error row. A sub-folder that cannot be searched is left out with a warning;
a file that cannot be opened gets its error row.
A row's transcript is, in this order: its table's transcript column, the ``text`` given for every
input, ``FILE.txt`` beside the audio, else (a model with text) the offline ASR.

Output, one row per input in input order: the input table's columns, then the fields of
:class:`crabser.prediction.Prediction` (``source``, ``label``, ``probabilities``, ``transcript``,
``text_source``) and ``error``. JSONL keeps ``probabilities`` as an object, as ``crabser predict
--json`` prints it; CSV and Parquet flatten it to one column per class, ``probabilities.<class>``
(the dotted names of ``pandas.json_normalize``). An input column named like an output field
(``label``, ``probabilities.<class>``, ...) is kept as ``input.<name>``. Input columns of mixed
types over several tables are written to Parquet as text. A row that fails holds its problem in
``error`` (empty prediction fields) and the others go on.

Resume: predictions are appended batch by batch to ``OUT.partial.jsonl`` (flushed to disk), the
table is written atomically at the end and the partial file removed. Running again with the same
``out`` predicts only the inputs not yet predicted (new ones, and those that failed), taking the
others from the partial file or from ``out`` itself; an input is known by its absolute path and
its occurrence among inputs with the same path (an edited transcript column is not noticed: use
``overwrite``). The output may not be one of the input tables. The label of a row taken over is
decided again from its stored probabilities with the current ``min_confidence``. Resume trusts
that the same model wrote ``out``: a file with other classes is refused, and ``overwrite=True``
starts over.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from crabser.data.audio import looks_like_audio
from crabser.errors import CrabserError
from crabser.io import atomic_path, ensure_folder, read_csv_utf8, read_utf8
from crabser.prediction import check_min_confidence, decided_label, predict_each

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: path columns looked for in an input table when none is named, in this order
PATH_COLUMNS = ("path", "file", "filename", "audio", "wav")
#: transcript columns looked for in an input table when none is named, in this order
TEXT_COLUMNS = ("transcript", "text")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
LIST_SUFFIXES = (".txt", ".lst")
OUTPUT_SUFFIXES = (".csv", ".parquet", ".jsonl")
#: the fields of a result row after the input's own columns (and ``embedding`` when asked for)
OUTPUT_FIELDS = ("source", "label", "probabilities", "transcript", "text_source", "error")
EMBEDDING = "embedding"
PROBABILITY_PREFIX = "probabilities."
INPUT_PREFIX = "input."  #: an input column named like an output field is kept under this prefix


class TablePredictor(Protocol):
    """What :func:`predict_table` needs of a recognizer."""

    labels: list[str]
    modalities: list[str]

    def predict_batch(
        self,
        audios: Sequence[Any],
        texts: Sequence[str | None] | None = None,
        *,
        names: Sequence[str] | None = None,
        min_confidence: float | None = None,
        embed: bool = False,
    ) -> list[Any]: ...


@dataclass
class TableInput:
    """One input row: the audio's path, its transcript from a table (if any) and the table's other
    columns."""

    path: Path
    text: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  #: why the row cannot be predicted (an empty path in its table)

    @property
    def source(self) -> str:
        return str(self.path)


def gather_inputs(
    sources: Iterable[str | Path],
    path_column: str | None = None,
    text_column: str | None = None,
) -> list[TableInput]:
    """The inputs named by folders, lists, tables and audio files (see the module docstring);
    CrabserError naming the source that is missing, unreadable or has no path column."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    inputs: list[TableInput] = []
    for source in map(Path, sources):
        if source.is_dir():
            inputs += [TableInput(path) for path in audio_files(source)]
        elif not source.exists():
            raise CrabserError(f"{source}: no such file or folder")
        elif source.suffix.lower() in TABLE_SUFFIXES:
            inputs += _table_inputs(source, path_column, text_column)
        elif source.suffix.lower() in LIST_SUFFIXES and not looks_like_audio(source):
            inputs += [TableInput(path) for path in _listed_paths(source)]
        else:
            inputs.append(TableInput(source))
    return inputs


def audio_files(folder: Path) -> list[Path]:
    """Every audio file under ``folder`` (by content), recursively, sorted; hidden entries skipped,
    links to folders not followed."""
    found = []

    def unreadable(error: OSError) -> None:
        log.warning("%s: cannot be searched (%s); its audio is left out", error.filename, error)

    for root, folders, files in os.walk(folder, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [
            Path(root) / name
            for name in files
            if not name.startswith(".") and _audio_or_unreadable(Path(root) / name)
        ]
    return sorted(found)


def _audio_or_unreadable(path: Path) -> bool:
    """Audio by content, or a file that cannot be opened (kept, to get its error row)."""
    if looks_like_audio(path):
        return True
    try:
        path.open("rb").close()
    except FileNotFoundError:
        return False  # a broken link
    except OSError:
        return True
    return False


def _listed_paths(listing: Path) -> list[Path]:
    lines = (line.strip() for line in read_utf8(listing).splitlines())
    return [listing.parent / line for line in lines if line and not line.startswith("#")]


def _read_table(
    path: Path, as_text: Callable[[list[str]], list[str]] | None = None
) -> pd.DataFrame:
    """A CSV, TSV or Parquet table; ``as_text(columns)`` names the columns read as raw strings
    from a CSV (a path "1" or a transcript "NA" stays as written)."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        raw = as_text(list(read_csv_utf8(path, sep=sep, nrows=0).columns)) if as_text else []
        return read_csv_utf8(path, sep=sep, converters=dict.fromkeys(raw, str))
    except CrabserError:
        raise
    except Exception as error:  # noqa: BLE001 (pandas and pyarrow raise many kinds for damage)
        raise CrabserError(f"{path}: cannot be read as a table ({error})") from None


def _pick_column(
    columns: list[str], path: Path, given: str | None, candidates: tuple[str, ...], what: str
) -> str | None:
    if given is not None:
        if given not in columns:
            raise CrabserError(
                f"{path}: no column {given!r} for the {what} (columns: {', '.join(columns)})"
            )
        return given
    return next((name for name in candidates if name in columns), None)


def _table_inputs(path: Path, path_column: str | None, text_column: str | None) -> list[TableInput]:
    picked: dict[str, str | None] = {}

    def pick(columns: list[str]) -> list[str]:
        columns = [str(c) for c in columns]
        picked["paths"] = _pick_column(columns, path, path_column, PATH_COLUMNS, "audio paths")
        if picked["paths"] is None:
            raise CrabserError(
                f"{path}: no path column (looked for {', '.join(PATH_COLUMNS)}; columns: "
                f"{', '.join(columns)}); name it with --path-column"
            )
        picked["texts"] = _pick_column(columns, path, text_column, TEXT_COLUMNS, "transcripts")
        return [c for c in picked.values() if c is not None]

    table = _read_table(path, pick)
    if not picked:  # a Parquet table: its columns are known once read
        pick(list(table.columns))
    paths, texts = picked["paths"], picked["texts"]
    inputs = []
    for number, row in enumerate(table.to_dict(orient="records"), start=2):
        columns = {_input_column(name): _plain(v) for name, v in row.items()}
        value, text = _cell_text(row[paths]), _cell_text(row[texts]) if texts else ""
        if not value:
            problem = f"row {number}: empty path in column {paths!r}"
            inputs.append(TableInput(path, None, columns, problem))
            continue
        inputs.append(TableInput(path.parent / value, text or None, columns))
    return inputs


def _cell_text(value: Any) -> str:
    """A path or transcript cell as stripped text ("" for an empty cell)."""
    value = _plain(value)
    return "" if value is None else str(value).strip()


def _input_column(name: object) -> str:
    """An input column's name in the output: ``input.<name>`` where it would clash with an output
    field (``label``, ``probabilities.<class>``, ...)."""
    name = str(name)
    clashes = name in (*OUTPUT_FIELDS, EMBEDDING) or name.startswith(PROBABILITY_PREFIX)
    return INPUT_PREFIX + name if clashes or name.startswith(INPUT_PREFIX) else name


def _plain(value: Any) -> Any:
    """A table cell as a plain Python value (numpy scalars and arrays unwrapped, NaN as None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return None if isinstance(value, float) and math.isnan(value) else value


def sidecar_transcript(path: Path) -> str | None:
    """The UTF-8 ``FILE.txt`` beside an audio file (TextEncodingError naming it), else None."""
    sidecar = path.with_suffix(".txt")
    return read_utf8(sidecar) if sidecar.is_file() else None


def input_keys(sources: Sequence[str]) -> list[str]:
    """One key per input: its absolute, normalised path and its occurrence among equal ones
    (``/data/a.wav#0``), so ``a.wav`` and ``./a.wav`` from the same folder are one input."""
    seen: Counter[str] = Counter()
    keys = []
    for source in map(os.path.abspath, sources):
        keys.append(f"{source}#{seen[source]}")
        seen[source] += 1
    return keys


def check_output(out: Path, embed: bool = False, inputs: Iterable[str | Path] = ()) -> str:
    """The format of an output table (its suffix), or CrabserError (also when it is one of the
    ``inputs``: a table or list being read)."""
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise CrabserError(
            f"--out {out}: write a table ending in {', '.join(OUTPUT_SUFFIXES)} (got {suffix!r})"
        )
    if embed and suffix == ".csv":
        raise CrabserError(f"--out {out}: embeddings are vectors; write .parquet or .jsonl")
    for source in map(Path, inputs):
        if source.is_file() and out.exists() and source.resolve() == out.resolve():
            raise CrabserError(f"--out {out}: is an input; choose another file for the results")
    if out.is_dir():
        raise CrabserError(f"--out {out}: is a folder; give a file name")
    return suffix


def partial_path(out: Path) -> Path:
    """Where predictions of an unfinished table are kept."""
    return out.with_name(out.name + ".partial.jsonl")


def predict_table(
    predictor: TablePredictor,
    inputs: Sequence[TableInput],
    out: str | Path | None = None,
    *,
    text: str | None = None,
    batch_size: int = 16,
    min_confidence: float | None = None,
    overwrite: bool = False,
    embed: bool = False,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> pd.DataFrame:
    """Predict every input, ``batch_size`` at a time, into one table (see the module docstring);
    with ``out``, write it there and resume what an earlier run left; with ``embed``, an
    ``embedding`` column (the utterance vector, as a list). ``progress(n)`` is called with the
    number of inputs to predict and returns a callback advanced by each batch's size."""
    import pandas as pd

    check_min_confidence(min_confidence)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if embed and not getattr(predictor, "gives_embeddings", True):
        raise CrabserError(f"{type(predictor).__name__} gives no embeddings; embed with one model")
    keys = input_keys([row.source for row in inputs])
    done: dict[str, dict[str, Any]] = {}
    for row, key in zip(inputs, keys):
        if row.problem:  # nothing to predict: its error row as it is
            done[key] = _failure(row, CrabserError(row.problem))
    journal = None
    if out is not None:
        out = Path(out)
        check_output(out, embed)
        ensure_folder(out.parent, "--out")
        if overwrite:
            partial_path(out).unlink(missing_ok=True)
        else:
            done = {**_previous_results(out, predictor.labels), **done}
        journal = _open_journal(partial_path(out))
    pending = [
        i
        for i, key in enumerate(keys)
        if not inputs[i].problem and not _succeeded(done.get(key), embed)
    ]
    advance = progress(len(pending)) if progress else None
    try:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            rows = [inputs[i] for i in batch]
            results = _predict_rows(predictor, rows, text, min_confidence, embed)
            for i, result in zip(batch, results):
                done[keys[i]] = result
                if journal is not None:  # ASCII: a cut line never splits a character
                    journal.write(json.dumps({"key": keys[i], **result}) + "\n")
            if journal is not None:
                journal.flush()
                os.fsync(journal.fileno())
            if advance:
                advance(len(batch))
    finally:
        if journal is not None:
            journal.close()
    fields = (*OUTPUT_FIELDS, EMBEDDING) if embed else OUTPUT_FIELDS
    records = [
        _output_row(row, done[key], min_confidence, fields) for row, key in zip(inputs, keys)
    ]
    table = pd.DataFrame(records, columns=_columns(records, fields))
    if out is not None:
        write_table(table, out, predictor.labels)
        partial_path(out).unlink(missing_ok=True)
    return table


def _open_journal(path: Path) -> IO[str]:
    """The partial file opened for appending, on a line of its own (a run killed mid-line left
    a torn last line, which reading skips)."""
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    journal = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    if torn:
        journal.write("\n")
    return journal


def _succeeded(result: dict[str, Any] | None, embed: bool = False) -> bool:
    """Whether a stored result is a prediction (with its embedding when one is asked for)."""
    if result is None or result.get("error"):
        return False
    return not embed or isinstance(result.get(EMBEDDING), list)


def _predict_rows(
    predictor: TablePredictor,
    rows: Sequence[TableInput],
    text: str | None,
    min_confidence: float | None,
    embed: bool = False,
) -> list[dict[str, Any]]:
    """The prediction record of each row (``error`` set on the rows that fail): the batch in one
    forward pass, and row by row when one of them fails."""
    reads_text = "text" in predictor.modalities
    results: list[dict[str, Any] | None] = [None] * len(rows)
    texts: list[str | None] = [None] * len(rows)
    for i, row in enumerate(rows):
        if reads_text:
            try:
                texts[i] = row.text or text or sidecar_transcript(row.path)
            except CrabserError as error:
                results[i] = _failure(row, error)
    todo = [i for i in range(len(rows)) if results[i] is None]
    answers = predict_each(
        predictor,
        [rows[i].path for i in todo],
        [texts[i] for i in todo],
        [rows[i].source for i in todo],
        min_confidence=min_confidence,
        embed=embed,
    )
    for i, answer in zip(todo, answers):
        if isinstance(answer, CrabserError):
            results[i] = _failure(rows[i], answer)
        else:
            results[i] = {**answer.to_dict(), "error": None}
    return [result for result in results if result is not None]


def _failure(row: TableInput, error: CrabserError) -> dict[str, Any]:
    """The record of a failed row: its problem (without the file name, which is the source)."""
    problem = getattr(error, "problem", None) or str(error)
    return {"source": row.source, "label": None, "probabilities": None, "error": problem}


def _output_row(
    row: TableInput,
    result: dict[str, Any],
    min_confidence: float | None,
    fields: Sequence[str] = OUTPUT_FIELDS,
) -> dict[str, Any]:
    record = {name: result.get(name) for name in fields}
    record["source"] = row.source
    if record["probabilities"] and not record["error"]:
        record["label"] = decided_label(record["probabilities"], min_confidence)
    return {**row.columns, **record}


def _columns(rows: list[dict[str, Any]], fields: Sequence[str]) -> list[str]:
    """The input columns in order of first appearance, then the output fields."""
    columns = dict.fromkeys(name for row in rows for name in row if name not in fields)
    return [*columns, *fields]


def write_table(table: pd.DataFrame, out: Path, labels: Sequence[str]) -> None:
    """Write a result table atomically: JSONL with ``probabilities`` as objects, CSV and Parquet
    with one ``probabilities.<class>`` column per class."""
    suffix = check_output(out, EMBEDDING in table.columns)
    try:
        with atomic_path(out) as tmp:
            if suffix == ".jsonl":
                with open(tmp, "w", encoding="utf-8") as file:
                    for record in table.to_dict(orient="records"):
                        clean = {k: _plain(v) for k, v in record.items()}
                        line = json.dumps(clean, ensure_ascii=False, allow_nan=False, default=str)
                        file.write(line + "\n")
            elif suffix == ".csv":
                flatten(table, labels).to_csv(tmp, index=False, encoding="utf-8")
            else:
                _to_parquet(flatten(table, labels), tmp)
    except (OSError, CrabserError):
        raise
    except Exception as error:  # noqa: BLE001 (pandas and pyarrow raise many kinds)
        raise CrabserError(
            f"--out {out}: the table cannot be written ({error}); the predictions are kept in "
            f"{partial_path(out)}: write another format"
        ) from None


def _to_parquet(table: pd.DataFrame, path: Path) -> None:
    """Parquet, with input columns of mixed types (numbers in one table, text in another) as
    text, which Arrow cannot store in one column."""
    import pyarrow as pa

    try:
        table.to_parquet(path, index=False)
    except (pa.ArrowException, TypeError, ValueError):
        mixed = [
            name
            for name in table.columns
            if table[name].dtype == object
            and len({type(v) for v in table[name] if _plain(v) is not None}) > 1
        ]
        table.astype({name: "string" for name in mixed}).to_parquet(path, index=False)


def flatten(table: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """``probabilities`` (dicts) as one float column per class, in its place."""
    import pandas as pd

    probabilities = {
        PROBABILITY_PREFIX + label: [
            (p or {}).get(label, float("nan")) if isinstance(p, dict) else float("nan")
            for p in table["probabilities"]
        ]
        for label in labels
    }
    at = list(table.columns).index("probabilities")
    before, after = table.iloc[:, :at], table.iloc[:, at + 1 :]
    flat = pd.concat([before, pd.DataFrame(probabilities, index=table.index), after], axis=1)
    return flat.astype({name: "float64" for name in probabilities})


def read_table(out: Path) -> list[dict[str, Any]]:
    """The prediction records of a table written by :func:`write_table` (``probabilities`` as
    dicts), in its order."""
    import pandas as pd

    suffix = check_output(out)
    try:
        if suffix == ".jsonl":
            lines = out.read_text(encoding="utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()]
        table = pd.read_parquet(out) if suffix == ".parquet" else read_csv_utf8(out)
    except CrabserError:
        raise
    except Exception as error:  # noqa: BLE001 (as in _read_table)
        raise CrabserError(
            f"{out}: cannot be read to resume ({error}); delete it or pass --overwrite"
        ) from None
    labels = [
        c[len(PROBABILITY_PREFIX) :] for c in table.columns if c.startswith(PROBABILITY_PREFIX)
    ]
    records = []
    for row in table.to_dict(orient="records"):
        record = {k: _plain(v) for k, v in row.items() if not k.startswith(PROBABILITY_PREFIX)}
        scores = {label: _plain(row[PROBABILITY_PREFIX + label]) for label in labels}
        record["probabilities"] = scores if all(v is not None for v in scores.values()) else None
        records.append(record)
    return records


def _previous_results(out: Path, labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Results an earlier run left for ``out`` by input key: its finished table, then its partial
    file (newer; a torn last line is ignored). CrabserError if they hold other classes."""
    done: dict[str, dict[str, Any]] = {}
    if out.is_file():
        records = read_table(out)
        if records and "source" not in records[0]:
            raise CrabserError(
                f"{out}: not a prediction table (no source column); choose another --out"
            )
        for key, record in zip(input_keys([str(r["source"]) for r in records]), records):
            done[key] = record
    partial = partial_path(out)
    if partial.is_file():
        for line in partial.read_bytes().splitlines():
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:  # JSON or UTF-8: the line being written when the run stopped
                continue
            if isinstance(record, dict) and "key" in record:
                done[record.pop("key")] = record
    for record in done.values():
        scores = record.get("probabilities")
        if _succeeded(record) and (not isinstance(scores, dict) or list(scores) != list(labels)):
            found = list(scores) if isinstance(scores, dict) else None
            raise CrabserError(
                f"{out}: holds predictions of a model with the classes {found}, this one has "
                f"{list(labels)}; choose another --out or pass --overwrite"
            )
    return done
