"""Training on several processes (DDP over gloo on the CPU, two ranks), as on several GPUs: each
epoch's batches shared among the ranks, validation scored once over all of them, the best
checkpoint and the resume, and the supervision legs on per-rank batches.

Most tests fork the ranks (``ddp_fork``) from the test process, which has Lightning imported
already; the last one runs ``crabser train`` with ``train.strategy: ddp`` as a user would on GPUs
(Lightning starts rank 1 by running the same command again).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import tiny_runs
import torch
from tiny_runs import Interrupt, KillAt

from crabser import pipeline
from crabser.data.manifest import write_manifest
from crabser.runs import RunFolder
from crabser.training import fit
from crabser.training.loaders import feature_splits, raw_loader, split_loader, train_batch_sampler

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
EPOCHS, BATCH = 3, 8


class RecordBatches(L.Callback):
    """Each rank writes, per epoch, the ids of its training and validation batches and the number of
    utterances its validation UAR was computed over, to ``<folder>/rank<k>.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.seen = (
            Path(folder),
            {"train": {}, "val": {}, "val_n": {}, "leg_batches": []},
        )

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.seen["train"].setdefault(str(trainer.current_epoch), []).append(batch["ids"])

    def on_validation_batch_start(
        self, trainer, module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.seen["val"].setdefault(str(trainer.current_epoch), []).append(batch["ids"])

    def on_validation_end(self, trainer, module) -> None:
        self.seen["val_n"][str(trainer.current_epoch)] = module.last_metrics["val"]["n"]

    def on_train_start(self, trainer, module) -> None:
        legs = module.objective

        def record(_, args, output) -> None:  # what the supervision legs are computed on
            self.seen["leg_batches"].append(len(args[1]))

        legs.register_forward_hook(record)

    def on_train_end(self, trainer, module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def _train(root: Path, name: str, sampler: str, **kwargs) -> fit.TrainResult:
    config = tiny_runs.tiny_config(
        root, name, epochs=EPOCHS, batch_size=BATCH, sampler=sampler, strategy="ddp_fork", devices=2
    )
    return fit.train(config, tiny_runs.tiny_manifest(root), tiny_runs.encoders(), **kwargs)


def _ranks(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.mark.parametrize("sampler", ["length_bucketed", "class_balanced"])
def test_two_ranks_share_every_epoch_and_score_validation_over_all_of_it(root, sampler):
    folder = root / f"seen-{sampler}"
    result = _train(root, sampler, sampler, callbacks=[RecordBatches(folder)])
    manifest = tiny_runs.tiny_manifest(root)
    config = tiny_runs.tiny_config(root, sampler, batch_size=BATCH, sampler=sampler)
    train_items = feature_splits(
        config, manifest, tiny_runs.encoders(), tiny_runs.LABELS, ("train",)
    )["train"]
    single = train_batch_sampler(
        config, [u.label for u in train_items], tiny_runs.LABELS, [u.frames for u in train_items]
    )
    val_ids = sorted(manifest.subset("val").frame["id"])
    ranks = _ranks(folder)
    for epoch in map(str, range(EPOCHS)):
        assert len(ranks[0]["train"][epoch]) == len(
            ranks[1]["train"][epoch]
        )  # as many steps on each rank
        shares = [Counter(i for batch in rank["train"][epoch] for i in batch) for rank in ranks]
        single.set_epoch(int(epoch))  # what one process draws in this epoch, shared out exactly
        assert shares[0] + shares[1] == Counter(
            train_items[i].id for batch in single for i in batch
        )
        if (
            sampler == "length_bucketed"
        ):  # every training utterance exactly once per epoch, on one rank
            assert sorted(shares[0] + shares[1]) == sorted(u.id for u in train_items)
            assert set((shares[0] + shares[1]).values()) == {1}
        val_seen = [i for rank in ranks for batch in rank["val"][epoch] for i in batch]
        assert sorted(val_seen) == val_ids  # each validation utterance once, on one rank
        assert all(
            rank["val_n"][epoch] == len(val_ids) for rank in ranks
        )  # UAR over all of them on each rank
    # MPCL and the other legs see each rank's own batch (per-rank, as lit_module documents)
    for rank in ranks:
        assert rank["leg_batches"] == [
            len(batch) for epoch in map(str, range(EPOCHS)) for batch in rank["train"][epoch]
        ]
        assert max(rank["leg_batches"]) <= BATCH
    # the best checkpoint is the best epoch's, with the val UAR a single process gives it
    saved = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)
    best_uar, best_epoch = RunFolder.of(config).best_validation()
    assert saved["epoch"] == best_epoch - 1 and result.best_val_uar == pytest.approx(best_uar)
    metrics, _ = pipeline.evaluate(
        config, manifest, tiny_runs.encoders(), "val", result.best_checkpoint
    )
    assert metrics["n"] == len(val_ids) and metrics["uar"] == pytest.approx(best_uar)


def test_two_ranks_stopped_mid_epoch_resume_exactly(root):
    """Both ranks stop at the same step (as when a job is killed), then the run resumes on two
    ranks."""
    with pytest.raises(Exception) as stopped:
        _train(root, "cut", "length_bucketed", callbacks=[KillAt("train_batch", 1, 1)])
    assert Interrupt.__name__ in str(stopped.value) or isinstance(stopped.value, Interrupt)
    _train(root, "cut", "length_bucketed", resume=True)
    whole = torch.load(
        root / "runs/length_bucketed/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    resumed = torch.load(
        root / "runs/cut/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    assert whole["epoch"] == resumed["epoch"] == EPOCHS
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_the_cli_trains_on_two_processes_with_strategy_ddp(root):
    command = Path(sys.executable).parent / "crabser"
    if not command.is_file():
        pytest.skip(
            f"the crabser command is not installed beside {sys.executable} (pip install -e .)"
        )
    manifest = tiny_runs.tiny_manifest(root)
    write_manifest(manifest, root / "manifest.csv")
    (root / "cli.yaml").write_text(f"""
name: cli-ddp
output_dir: {root / "runs"}
cache_dir: {root / "cache"}
data: {{manifest: {root / "manifest.csv"}, protocol: given, labels: {tiny_runs.LABELS}}}
text: {{kind: hf-text}}
model: {{modalities: [text], hidden: 16, leg_dim: 8, leg_hidden: 8, leg_hidden_unimodal: 8}}
train: {{epochs: 2, batch_size: {BATCH}, accumulate: 1, lr_head: 3.0e-3, progress: false,
        threads: 1, accelerator: cpu, devices: 2, strategy: ddp}}
""")
    done = subprocess.run(
        [str(command), "train", "-c", str(root / "cli.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "best val UAR" in done.stdout
    last = torch.load(
        root / "runs/cli-ddp/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    batches = math.ceil(len(manifest.subset("train")) / BATCH)
    assert last["epoch"] == 2 and last["global_step"] == 2 * math.ceil(
        batches / 2
    )  # half the steps: two ranks
    assert (root / "runs/cli-ddp/checkpoints/best.ckpt").is_file()


def test_evaluation_in_a_process_of_a_finished_fit_scores_every_utterance(root, monkeypatch):
    """After a distributed fit the process stays in its group (crossval then evaluates each fold):
    training and validation batches are shared out, evaluation batches are not."""
    from crabser.data import sampling

    class FineTuned:  # what split_loader asks of a fine-tuned module
        labels = tiny_runs.LABELS

        def encoder_parameters(self) -> list:
            return [torch.nn.Parameter(torch.zeros(1))]

    monkeypatch.setattr(sampling, "world", lambda: (2, 1))  # rank 1 of 2
    config, manifest = tiny_runs.tiny_config(root, "eval"), tiny_runs.tiny_manifest(root)
    ids = sorted(manifest.subset("test").frame["id"])
    loader = split_loader(config, manifest, {}, FineTuned(), "test")
    assert sorted(i for batch in loader for i in batch["ids"]) == ids
    items = [item for item in loader.dataset.items]
    shared = raw_loader(config, items, train=False)
    assert (
        0 < sum(len(batch["ids"]) for batch in shared) < len(ids)
    )  # fit-time loaders: this rank's share
