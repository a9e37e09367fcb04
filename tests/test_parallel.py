"""Independent runs side by side: every job runs, failures wait for the others, threads are shared
out."""

from pathlib import Path

import pytest

from crabser.parallel import (
    StoredFeatures,
    encoders_for_jobs,
    jobs_for,
    run_jobs,
    stored_features,
    threads_per_job,
)


def _record(path: str, value: str) -> None:
    """A job: append ``value``, this process's torch thread count and Lightning's log level to
    ``path``; ``bad`` fails."""
    import logging

    import lightning.pytorch  # noqa: F401  (as a training job does; its import sets INFO)
    import torch

    if value == "bad":
        raise ValueError(f"job {value} failed")
    level = logging.getLogger("lightning.pytorch").getEffectiveLevel()
    with open(path, "a") as handle:
        handle.write(f"{value}:{torch.get_num_threads()}:{level}\n")


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_job_runs_and_the_first_failure_is_raised_after(tmp_path, jobs):
    log = tmp_path / "log.txt"
    done = []
    arguments = {
        "a": (str(log), "a"),
        "b": (str(log), "bad"),
        "c": (str(log), "c"),
        "d": (str(log), "d"),
    }
    with pytest.raises(ValueError, match="job bad failed"):
        run_jobs(_record, arguments, jobs, on_done=done.append)
    lines = sorted(Path(log).read_text().split())
    assert [line.split(":")[0] for line in lines] == [
        "a",
        "c",
        "d",
    ]  # the jobs after the failure ran too
    assert sorted(done) == ["a", "c", "d"]
    if jobs > 1:  # each process got its share of the cores, and no Lightning info lines
        assert {line.split(":")[1] for line in lines} == {str(threads_per_job(jobs))}
        assert {line.split(":")[2] for line in lines} == {"30"}  # logging.WARNING


def test_threads_are_shared_and_stand_ins_keep_the_cache_id(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [threads_per_job(j) for j in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]

    class Encoder:
        cache_id = "whisper:last:own"

    assert stored_features({"speech": Encoder()})["speech"].cache_id == "whisper:last:own"
    loaded = {"speech": Encoder()}
    assert encoders_for_jobs(loaded, 1) is loaded  # one job: the loaded encoders themselves
    assert encoders_for_jobs(loaded, 2) == {"speech": StoredFeatures("speech", "whisper:last:own")}


def test_finished_runs_are_reported_first_and_jobs_never_exceed_the_runs(tmp_path):
    done = []
    run_jobs(
        _record,
        {"a": (str(tmp_path / "log.txt"), "a")},
        2,
        on_done=done.append,
        finished=["x", "y"],
    )
    assert done == ["x", "y", "a"]
    assert [jobs_for(2, 1), jobs_for(2, 5), jobs_for(3, 0), jobs_for(1, 4)] == [1, 2, 1, 1]
