"""Speed of the pipeline's stages, each beside the plain way of doing the same work.

- extraction: real-time factor and peak memory of each embedded encoder (Whisper tiny.en at the
  clip's own length and padded to 30 s, MiniLM on text, eGeMAPS), batched with length bucketing
  (``batch_size`` 16, ``bucket_batches`` 8) vs. one clip at a time; each in a fresh process with
  torch threads set to the core count, features written to a throw-away store.
- training on cached features: utterances per second per epoch of Crab (the default model's
  settings, speech only) with the features read once into memory and length-bucketed batches (what
  ``crabser train`` does) vs. the same with shuffled batches, and vs. a naive loop that re-reads
  every feature file each epoch; the same model and optimiser.
  Beside it ``crabser train`` itself: utterances per second and time to the best validation UAR.
- inference: a batch of 100 clips through ``Recognizer.predict_batch`` vs. ``predict`` in a loop.
  (Cold and warm latency of one 3-second clip: ``python -m benchmarks.service``.)
- scaling: extraction and a training epoch at 1x, 2x, 4x the utterances (134, 268, 535 EmoDB
  clips), and extraction and warm inference with the clip length (1 to 30 s, EmoDB speech joined);
  a plot in docs/benchmarks_scaling.png.

Usage (from the repository root): python -m benchmarks.speed [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import QUICK_OUTPUT, REPO, command_line, header, write_section

EMODB = REPO / "data" / "emodb"
MELD_TRAIN = (
    Path(os.environ.get("CRABSER_MELD", REPO.parent / "shared" / "data" / "meld"))
    / "train_sent_emo.csv"
)
PLOT = REPO / "docs" / "benchmarks_scaling.png"
ENCODERS = {
    "Whisper tiny.en, own length": {"kind": "whisper-ct2", "pad_to_seconds": None},
    "Whisper tiny.en, 30 s padding": {"kind": "whisper-ct2", "pad_to_seconds": 30},
    "MiniLM (text)": {"kind": "hf-text"},
    "eGeMAPS LLD": {"kind": "egemaps"},
}
MODES = {"one at a time": (1, 1), "batched + bucketed": (16, 8)}  # batch_size, bucket_batches
#: encoders measured on a fraction of the clips: 30 s padding costs ~10x more per clip, and the
#: Whisper padding section measures it on all of EmoDB
CLIP_FRACTION = {"Whisper tiny.en, 30 s padding": 3}


def emodb_frame(count: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The vendored EmoDB manifest (all 535 clips, or ``count`` drawn with a fixed seed)."""
    from crabser.data.corpora import emodb

    frame = emodb.prepare(EMODB).frame
    if count is not None and count < len(frame):
        frame = frame.sample(n=count, random_state=seed).reset_index(drop=True)
    return frame


def meld_texts(count: int) -> list[str]:
    """``count`` distinct MELD training utterances (text only), in file order."""
    from crabser.data.text import clean_text

    texts = pd.read_csv(MELD_TRAIN)["Utterance"].map(clean_text).dropna().drop_duplicates()
    return texts.head(count).tolist()


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- extraction ------------------------------------------------------------------------------


def extraction_worker(name: str, mode: str, clips: int, threads: int) -> dict:
    """In a fresh process: build one encoder, extract ``clips`` utterances, report time and
    memory."""
    import torch

    from crabser.config import EncoderConfig
    from crabser.data.manifest import Manifest
    from crabser.features.encoders import build_encoder
    from crabser.features.extract import extract
    from crabser.features.store import FeatureStore

    torch.set_num_threads(threads)
    settings = ENCODERS[name]
    encoder = build_encoder(EncoderConfig(**settings))
    frame = emodb_frame(clips)
    if settings["kind"] == "hf-text":
        texts = meld_texts(clips)
        frame = frame.head(len(texts)).assign(text=texts)
    loaded_rss = current_rss_mb()
    batch_size, bucket_batches = MODES[mode]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = extract(
            Manifest(frame),
            encoder,
            FeatureStore(folder),
            "raise",
            batch_size,
            None,
            bucket_batches,
        )
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "items": report.encoded,
        "audio_s": report.seconds_of_audio,
        "rtf": seconds / report.seconds_of_audio if report.seconds_of_audio else None,
        "peak_rss_mb": peak_rss_mb(),
        "loaded_rss_mb": loaded_rss,
    }


def run_worker(*args: str) -> dict:
    """Run this script's worker in a new process; its JSON answer."""
    command = [sys.executable, "-m", "benchmarks.speed", "--worker", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode:
        raise RuntimeError(f"worker {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed_figure(measured: dict) -> str:
    """RTF for audio encoders, items per second for text."""
    return (
        f"RTF {measured['rtf']:.4f}"
        if measured["rtf"] is not None
        else f"{measured['items'] / measured['seconds']:.1f} items/s"
    )


def extraction_table(clips: int, threads: int, encoders: list[str]) -> tuple[list[str], dict]:
    rows, results = [], {}
    for name in encoders:
        count = max(1, clips // CLIP_FRACTION.get(name, 1))
        measured = {
            mode: run_worker("extract", name, mode, str(count), str(threads)) for mode in MODES
        }
        results[name] = measured
        plain, ours = measured["one at a time"], measured["batched + bucketed"]
        rows.append(
            f"| {name} | {ours['items']} | {speed_figure(plain)} ({plain['seconds']:.1f} s) | "
            f"{speed_figure(ours)} ({ours['seconds']:.1f} s) | "
            f"**{plain['seconds'] / ours['seconds']:.2f}x** | {plain['peak_rss_mb']:.0f} | "
            f"{ours['peak_rss_mb']:.0f} |"
        )
        print(rows[-1], flush=True)
    return rows, results


# --- training --------------------------------------------------------------------------------


def training_config(name: str, epochs: int, threads: int):
    """The default model's Crab settings (speech only, Whisper own length) on the demo's split."""
    from crabser.config import load_config

    return load_config(
        "configs/demo.yaml",
        [
            f"name={name}",
            "model.modalities=[speech]",
            "speech.pad_to_seconds=null",
            f"train.epochs={epochs}",
            "train.progress=false",
            f"train.threads={threads}",
            "output_dir=" + tempfile.mkdtemp(prefix="crabser-speed-"),
        ],
    )


class RereadingDataset:
    """The naive loader's dataset: every item's features read from the store on every access."""

    def __init__(self, items, digests: dict[str, str], store, cache_id: str) -> None:
        self.items, self.digests, self.store, self.cache_id = items, digests, store, cache_id

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from crabser.training.datamodule import Utterance

        item = self.items[index]
        return Utterance(
            item.id, {"speech": self.store.get(self.cache_id, self.digests[item.id])}, item.label
        )


def training_inputs(config, clips: int | None = None):
    """The split manifest (all clips, or ``clips`` drawn with a fixed seed) with its features
    extracted, and the encoders."""
    from crabser import pipeline
    from crabser.data.manifest import Manifest

    manifest = pipeline.prepare(config)
    if clips is not None:
        keep = manifest.frame["id"].isin(set(emodb_frame(clips)["id"]))
        manifest = Manifest(manifest.frame[keep].reset_index(drop=True))
    encoders = pipeline.build_encoders(config)
    pipeline.extract_features(config, manifest, encoders)
    return manifest, encoders


OURS, SHUFFLED, NAIVE = (
    "in memory, length-bucketed batches (crabser)",
    "in memory, shuffled batches",
    "re-read every epoch, shuffled (naive)",
)
UNFUSED = "in memory, length-bucketed batches, per-tensor AdamW"


def epoch_rates(config, manifest, encoders, epochs: int, baselines: bool = True) -> dict:
    """Utterances per second of a hand-written epoch loop: features in memory with length-bucketed
    batches (``train.bucket_pool``) and crabser's fused AdamW step; with ``baselines`` also the same
    with shuffled batches, a loop that re-reads every feature file each epoch, and one with the
    per-tensor AdamW step (torch's CPU default)."""
    import torch
    from torch.utils.data import DataLoader

    from crabser.data.sampling import LengthBucketSampler
    from crabser.features.extract import content_hashes
    from crabser.features.store import FeatureStore
    from crabser.runs import run_labels
    from crabser.training.datamodule import FeatureDataset, collate, load_utterances
    from crabser.training.lit_module import CrabLitModule
    from crabser.training.optim import fusable

    store, cache_id = FeatureStore(config.cache_dir), encoders["speech"].cache_id
    train = manifest.subset("train")
    labels = run_labels(config, manifest)
    started = time.perf_counter()
    items, _ = load_utterances(train, store, {"speech": cache_id}, labels)
    preload_s = time.perf_counter() - started
    in_memory = FeatureDataset(items)
    loops = {
        OURS: (in_memory, True, True)
    }  # name -> dataset, length-bucketed batches (else shuffled), fused step
    if baselines:
        loops[SHUFFLED] = (in_memory, False, True)
        loops[NAIVE] = (
            RereadingDataset(items, content_hashes(train, "speech"), store, cache_id),
            False,
            True,
        )
        loops[UNFUSED] = (in_memory, True, False)
    runners = {}
    for name, (dataset, bucketed, fused) in loops.items():
        torch.manual_seed(0)
        module = CrabLitModule(
            input_dims={"speech": items[0].features["speech"].shape[-1]},
            labels=labels,
            model=config.model.model_dump(),
            loss=config.loss.model_dump(),
            train=config.train.model_dump(),
            class_weights=None,
        )
        params = [{"params": list(module.parameters())}]
        optimiser = torch.optim.AdamW(
            params, lr=config.train.lr_head, fused=fused and fusable(params)
        )
        if bucketed:
            sampler = LengthBucketSampler(
                [u.frames for u in items], config.train.batch_size, pool=config.train.bucket_pool
            )
            loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
        else:
            loader = DataLoader(
                dataset,
                batch_size=config.train.batch_size,
                shuffle=True,
                collate_fn=collate,
                generator=torch.Generator().manual_seed(0),
            )
        runners[name] = (module, optimiser, loader)
    # epochs interleaved (one of each loop in turn): timed one loop after another (make bench of
    # 2026-11-30), the last loop came out 29 % faster than the first though the two differed only in
    # their optimiser step (0.1 s of a 5 s epoch): the order, not the loop, was being measured
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(epochs):
        for name, (module, optimiser, loader) in runners.items():
            started = time.perf_counter()
            for batch in loader:
                output = module.model(
                    *module.inputs(batch), return_taps=module.objective.wants_taps
                )
                loss = module.objective(output, batch["labels"], None).total
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            seconds[name].append(time.perf_counter() - started)
    rates = {name: len(items) / float(np.median(times)) for name, times in seconds.items()}
    return {"rates": rates, "preload_s": preload_s, "utterances": len(items)}


def pipeline_training(config, manifest, encoders) -> dict:
    """``crabser train`` as a user runs it: utterances per second and time to the best val UAR."""
    from crabser.runs import RunFolder
    from crabser.training import fit

    result = fit.train(config, manifest, encoders)
    best_val_uar, best_epoch = RunFolder.of(config).best_validation()
    per_epoch = result.seconds / max(result.epochs, 1)
    train_size = int((manifest.frame["split"] == "train").sum())
    return {
        "seconds": result.seconds,
        "per_epoch_s": per_epoch,
        "utt_per_s": train_size / per_epoch,
        "best_val_uar": best_val_uar,
        "best_epoch": best_epoch,
        "to_best_s": per_epoch * best_epoch,
    }


# --- inference and scaling -------------------------------------------------------------------


def batch_inference(count: int) -> dict:
    """Throughput of the default model on ``count`` clips: predict_batch vs. predict in a loop."""
    from crabser.inference import Recognizer

    recognizer = Recognizer.load("default")
    clips = emodb_frame(count)["audio"].tolist()
    recognizer.predict(clips[0])  # warm
    started = time.perf_counter()
    looped = [recognizer.predict(clip).label for clip in clips]
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = [p.label for p in recognizer.predict_batch(clips)]
    batch_s = time.perf_counter() - started
    if looped != batched:
        raise RuntimeError("predict_batch and predict disagree")
    return {"clips": len(clips), "loop_s": loop_s, "batch_s": batch_s}


def joined_speech(seconds: float) -> np.ndarray:
    """EmoDB speech joined end to end, cut to ``seconds``."""
    from crabser.data.audio import load_audio

    pieces, total = [], 0
    for path in emodb_frame()["audio"]:
        pieces.append(load_audio(path, 16000))
        total += len(pieces[-1])
        if total >= seconds * 16000:
            break
    return np.concatenate(pieces)[: int(seconds * 16000)]


def length_scaling(lengths: list[float]) -> list[dict]:
    """Per clip length: Whisper (own length) extraction seconds and warm predict seconds (median of
    3)."""
    from crabser.features.encoders import WhisperCT2Encoder
    from crabser.inference import Recognizer

    encoder, recognizer = WhisperCT2Encoder(), Recognizer.load("default")
    rows = []
    for length in lengths:
        wave = joined_speech(length)
        times = {"extract": [], "predict": []}
        for _ in range(3):
            started = time.perf_counter()
            encoder.encode([wave])
            times["extract"].append(time.perf_counter() - started)
            started = time.perf_counter()
            recognizer.predict(wave, sample_rate=16000)
            times["predict"].append(time.perf_counter() - started)
        rows.append({"seconds": length, **{k: float(np.median(v)) for k, v in times.items()}})
    return rows


def size_scaling(sizes: list[int], threads: int, epochs: int) -> list[dict]:
    """Per corpus size: Whisper (own length) extraction in a fresh process and one training
    epoch."""

    rows = []
    for size in sizes:
        extraction = run_worker(
            "extract", "Whisper tiny.en, own length", "batched + bucketed", str(size), str(threads)
        )
        config = training_config(f"speed_size{size}", epochs, threads)
        manifest, encoders = training_inputs(config, size)
        rates = epoch_rates(config, manifest, encoders, epochs, baselines=False)
        epoch_s = rates["utterances"] / rates["rates"][OURS]
        rows.append(
            {
                "clips": size,
                "extract_s": extraction["seconds"],
                "train_utts": rates["utterances"],
                "epoch_s": epoch_s,
            }
        )
        print(rows[-1], flush=True)
    return rows


def plot(sizes: list[dict], lengths: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    clips = [row["clips"] for row in sizes]
    left.plot(
        clips, [row["extract_s"] for row in sizes], "o-", label="extraction (Whisper own length)"
    )
    left.plot(
        clips, [row["epoch_s"] for row in sizes], "s-", label="one training epoch (train split)"
    )
    left.set(xlabel="EmoDB clips", ylabel="seconds", title="corpus size")
    seconds = [row["seconds"] for row in lengths]
    right.plot(seconds, [row["extract"] for row in lengths], "o-", label="Whisper encode")
    right.plot(
        seconds, [row["predict"] for row in lengths], "s-", label="predict (default model, warm)"
    )
    right.set(xlabel="clip length (s)", ylabel="seconds", title="clip length")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 encoders on 8 clips, 64 for training, 2 epochs, sizes 8/16, lengths to 4 s; "
        "plot in runs/quick",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _, name, mode, clips, threads = args.worker
        print(json.dumps(extraction_worker(name, mode, int(clips), int(threads))))
        return
    import torch

    torch.set_num_threads(args.threads)
    clips, epochs = (8, 2) if args.quick else (96, 5)
    sizes = [8, 16] if args.quick else [134, 268, 535]
    lengths = [1, 2, 4] if args.quick else [1, 2, 4, 8, 16, 30]
    target = REPO / QUICK_OUTPUT / PLOT.name if args.quick else PLOT
    encoders = ["Whisper tiny.en, own length", "MiniLM (text)"] if args.quick else list(ENCODERS)
    extraction_rows, _ = extraction_table(clips, args.threads, encoders)

    config = training_config("speed_train", 20 if not args.quick else 2, args.threads)
    manifest, encoders = training_inputs(config, 64 if args.quick else None)
    rates = epoch_rates(config, manifest, encoders, epochs)
    trained = pipeline_training(config, manifest, encoders)
    ours, shuffled, naive, unfused = (
        rates["rates"][name] for name in (OURS, SHUFFLED, NAIVE, UNFUSED)
    )
    print(rates, trained, flush=True)

    inference = batch_inference(20 if args.quick else 100)
    print(inference, flush=True)
    size_rows = size_scaling(sizes, args.threads, 2)
    length_rows = length_scaling(lengths)
    plot(size_rows, length_rows, target)

    body = header(command_line()) + (
        f"- torch threads: {args.threads}\n\n### Feature extraction (EmoDB clips; MiniLM: MELD "
        "utterances)\n\n"
        "Each encoder and mode in a fresh process; peak RSS includes the loaded model. Whisper "
        "with 30 s padding "
        "on a third of the clips (its cost per clip is ~10x; all of EmoDB: the Whisper padding "
        "section).\n\n"
        "| encoder | items | one at a time | batched + bucketed | speed-up | peak RSS MB (one) | "
        "peak RSS MB (batched) |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(extraction_rows) + "\n\n"
        f"### Training on cached features (EmoDB demo split, {rates['utterances']} training clips, "
        "speech only)\n\n"
        "| loop | utterances / s per epoch | ratio |\n|---|---|---|\n"
        f"| features in memory (read once, {rates['preload_s']:.1f} s), length-bucketed batches "
        "(`train.sampler: length_bucketed`, "
        f"pools of {config.train.bucket_pool} batches) | {ours:.0f} | **{ours / naive:.2f}x** |\n"
        "| features in memory, shuffled batches (each padded to its longest clip) | "
        f"{shuffled:.0f} | {shuffled / naive:.2f}x |\n"
        f"| naive: re-read every feature file each epoch, shuffled batches | {naive:.0f} | 1.00x "
        "|\n"
        "| features in memory, length-bucketed batches, per-tensor AdamW step (torch's CPU "
        f"default) | {unfused:.0f} | {unfused / naive:.2f}x |\n\n"
        "Every loop but the last steps with the fused AdamW kernel, as `crabser train` does. "
        "Length-bucketed vs. shuffled "
        f"batches: **{ours / shuffled:.2f}x**; fused vs. per-tensor AdamW step: "
        f"**{ours / unfused:.2f}x**.\n\n"
        f"`crabser train` ({config.train.epochs} epochs, with validation and checkpoints): "
        f"{trained['utt_per_s']:.0f} utterances/s, "
        f"{trained['per_epoch_s']:.1f} s per epoch; best val UAR {trained['best_val_uar']:.3f} at "
        f"epoch {trained['best_epoch']}, "
        f"reached after {trained['to_best_s']:.0f} s.\n\n"
        f"### Inference (default model, warm)\n\n"
        "| way | clips | seconds | clips / s | ratio |\n|---|---|---|---|---|\n"
        f"| `predict_batch` | {inference['clips']} | {inference['batch_s']:.2f} | "
        f"{inference['clips'] / inference['batch_s']:.1f} | "
        f"**{inference['loop_s'] / inference['batch_s']:.2f}x** |\n"
        f"| `predict` in a loop | {inference['clips']} | {inference['loop_s']:.2f} | "
        f"{inference['clips'] / inference['loop_s']:.1f} | 1.00x |\n\n"
        "Cold and warm latency of one 3-second clip: the service section below.\n\n"
        "### Scaling\n\n| EmoDB clips | extraction s (Whisper own, batched) | training clips | one "
        "epoch s |\n|---|---|---|---|\n"
        + "\n".join(
            f"| {r['clips']} | {r['extract_s']:.1f} | {r['train_utts']} | {r['epoch_s']:.2f} |"
            for r in size_rows
        )
        + "\n\n| clip length s | Whisper encode s | predict s (warm) |\n|---|---|---|\n"
        + "\n".join(
            f"| {r['seconds']:g} | {r['extract']:.3f} | {r['predict']:.3f} |" for r in length_rows
        )
        + f"\n\n![scaling]({target.relative_to(REPO)})\n"
    )
    write_section("Speed: extraction, training, inference, scaling", body)


if __name__ == "__main__":
    main()
