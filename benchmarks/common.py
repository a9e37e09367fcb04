"""Helpers shared by the benchmark scripts: machine facts and writing a section of BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from crabser.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"

#: a --quick run's run folders, apart from the full runs they would stand in for

QUICK_OUTPUT = "runs/quick"


def quick_overrides(quick: bool) -> list[str]:
    """Config overrides of a ``--quick`` run: its own output folder (a one-epoch run never answers
    for a full one when a benchmark resumes)."""
    return [f"output_dir={QUICK_OUTPUT}"] if quick else []


def quick_meld_manifest(config, sizes: dict[str, int] | None = None, seed: int = 0) -> str:
    """A small MELD manifest for ``--quick`` runs: per split, ``sizes`` utterances drawn
    stratified by label from the official split; returns its path (for ``data.manifest``)."""
    import pandas as pd

    from crabser import pipeline
    from crabser.data.manifest import Manifest, write_manifest

    sizes = sizes or {"train": 700, "val": 200, "test": 300}
    frame = pipeline.prepare(config.model_copy(update={"name": "meld_quick_full"})).frame
    parts = []
    for split, size in sizes.items():
        rows = frame[frame["split"] == split]
        parts.append(rows.groupby("label").sample(frac=size / len(rows), random_state=seed))
    target = Path(QUICK_OUTPUT) / "meld_quick_manifest.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(Manifest(pd.concat(parts, ignore_index=True)), target)
    return str(target)


def quick_emodb_manifest(speakers: tuple[str, ...] = ("03", "08", "09", "10")) -> str:
    """Some EmoDB speakers' clips (by default two men, two women) for a --quick run, as a manifest
    file."""
    from crabser.data.corpora import emodb
    from crabser.data.manifest import Manifest, write_manifest

    frame = emodb.prepare(REPO / "data" / "emodb").frame
    target = Path(QUICK_OUTPUT) / f"emodb_quick_{'_'.join(speakers)}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(Manifest(frame[frame["speaker"].isin(speakers)]), target)
    return str(target)


def cpu_description() -> str:
    """The CPU's model name and widest vector extension (Linux). Two 2-core machines of this
    project differed about 3x in Whisper extraction time, so the core count alone is not enough."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE) or [None, ""])[1].split())
    vector = next((flag for flag in ("avx512f", "avx2", "avx") if flag in flags), "no AVX")
    return f"{model[1].strip() if model else platform.machine()} ({vector})"


def machine() -> str:
    """One line describing this machine."""
    cores, python = os.cpu_count(), platform.python_version()
    return f"{platform.machine()}, {cpu_description()}, {cores} cores, Python {python}"


def header(command: str) -> str:
    """The provenance lines every table carries."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"- command: `{command}`\n- date: {dt.date.today().isoformat()}\n"
        f"- machine: {machine()}\n- git commit: {commit or 'unknown'}\n"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``## name`` of BENCHMARKS.md with ``body``."""
    # a --quick run never replaces a measured table, whether run_all started it or a user did
    default = (
        BENCHMARKS.with_name("BENCHMARKS.quick.md") if "--quick" in sys.argv[1:] else BENCHMARKS
    )
    target = Path(os.environ.get("CRABSER_BENCHMARKS_MD", default))
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    with open(
        target.with_name(f".{target.name}.lock"), "w"
    ) as lock:  # scripts run side by side (run_all --quick)
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = target.read_text() if target.is_file() else "# Benchmarks\n"
        text = (
            pattern.sub(section + "\n", text)
            if pattern.search(text)
            else text.rstrip() + "\n\n" + section
        )
        with atomic_path(target) as tmp:
            tmp.write_text(text)


def command_line() -> str:
    """How this script was invoked, as a module run from the repository root."""
    script = Path(sys.argv[0]).resolve()
    module = ".".join(script.relative_to(REPO).with_suffix("").parts)
    return " ".join(["python -m", module, *sys.argv[1:]])


def pooled_features(config, manifest, encoder_id: str, modality: str, pooling: str = "mean+std"):
    """The rows of ``manifest`` with cached features of one modality, and those features pooled over
    time, ``(N, D')``. ``pooling``: ``mean+std`` or ``mean``, or ``mean-l2`` (unit-length mean, as
    sentence-transformers embeds)."""
    import numpy as np

    from crabser.features.extract import content_hashes
    from crabser.features.store import FeatureStore

    store = FeatureStore(config.cache_dir)
    hashes = content_hashes(manifest, modality)
    frame = manifest.frame[manifest.frame["id"].isin(hashes)]
    features = (store.get(encoder_id, hashes[i]) for i in frame["id"])
    pools = {
        "mean+std": lambda f: np.concatenate([f.mean(0), f.std(0)]),
        "mean": lambda f: f.mean(0),
        "mean-l2": lambda f: (
            f.mean(0) / max(float(np.linalg.norm(f.mean(0))), 1e-12)
        ),  # sentence-transformers style
    }
    return frame, np.stack([pools[pooling](f) for f in features])


def pooled_baseline(
    config, manifest, encoder_id: str, modality: str, pooling: str = "mean+std"
) -> dict[str, dict]:
    """The simple baseline of REFERENCE.md: :func:`pooled_features` of one modality + class-balanced
    logistic regression, fit on train; metrics on val and test (``mean-l2`` is not standardised)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from crabser.evaluation.metrics import compute_metrics
    from crabser.runs import run_labels

    labels = run_labels(config, manifest)
    frame, pooled = pooled_features(config, manifest, encoder_id, modality, pooling)
    y = np.array([labels.index(label) for label in frame["label"]])
    split = frame["split"].to_numpy()
    classifier = LogisticRegression(max_iter=3000, class_weight="balanced")
    model = classifier if pooling == "mean-l2" else make_pipeline(StandardScaler(), classifier)
    model.fit(pooled[split == "train"], y[split == "train"])
    return {
        name: compute_metrics(y[split == name], model.predict(pooled[split == name]), labels)
        for name in ("val", "test")
    }


def quick_subset(manifest, per_corpus: int = 40, seed: int = 0):
    """A ``--quick`` run's share of a multi-corpus manifest: ``per_corpus`` clips of each corpus,
    drawn by seed (the columns, folds included, kept)."""
    from crabser.data.manifest import Manifest

    frame = manifest.frame.groupby("corpus", group_keys=False).apply(
        lambda part: part.sample(min(per_corpus, len(part)), random_state=seed)
    )
    return Manifest(frame.reset_index(drop=True))


def prepared_corpora(config, quick: bool, frozen_features: bool = True):
    """A multi-corpus benchmark run's manifest (``quick``: 40 clips of each corpus, saved as the
    run's) and encoders, its features extracted; with ``frozen_features`` false, none for a
    fine-tuning config (its runs train the encoder from raw audio)."""
    from crabser import pipeline
    from crabser.runs import RunFolder

    manifest = pipeline.prepare(config)
    if quick:
        manifest = quick_subset(manifest)
        RunFolder.of(config).save_inputs(config, manifest)
    build = pipeline.build_encoders if frozen_features else pipeline.EncoderCache()
    encoders = build(config)
    pipeline.extract_features(config, manifest, encoders)
    return manifest, encoders


def per_speaker(vectors: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each speaker's vectors standardised with that speaker's own mean and std, the held-out
    speaker's too (its audio, never its labels): a baseline's speaker normalisation, beside
    Crab's ``model.normalize_per: speaker`` on frames."""
    out = vectors.astype(np.float64).copy()
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        out[rows] = (out[rows] - out[rows].mean(0)) / np.maximum(out[rows].std(0), 1e-5)
    return out
