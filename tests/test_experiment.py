"""Experiment grids: expansion, per-cell configs, the summary table, and the shipped grid files."""

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import REPO

from crabser.errors import ConfigError
from crabser.experiment import (
    ExperimentConfig,
    cell_config,
    expand,
    load_experiment,
    results_markdown,
    summarise,
)


def _grid(tmp_path, **extra):
    base = tmp_path / "base.yaml"
    base.write_text("name: base\noutput_dir: out\ntrain: {weight_decay: 2.0}\n")
    return ExperimentConfig(
        name="g",
        base=str(base),
        seeds=[0, 1],
        overrides=["train.epochs=3"],
        axes={
            "objective": {"ce": ["loss.legs=none"], "mlcs": []},
            "decay": {"0.5": ["train.weight_decay=0.5"], "1": ["train.weight_decay=1"]},
        },
        **extra,
    )


def test_cells_are_seed_major_with_level_overrides(tmp_path):
    grid = _grid(tmp_path)
    cells = expand(grid)
    assert len(cells) == 8
    assert [c.seed for c in cells] == [0] * 4 + [1] * 4
    assert [c.name for c in cells[:4]] == ["ce-0.5", "ce-1", "mlcs-0.5", "mlcs-1"]
    config = cell_config(grid, cells[1], ["train.lr_head=0.01"])
    assert config.loss.legs == "none" and config.train.weight_decay == 1.0
    assert config.train.epochs == 3 and config.train.lr_head == 0.01 and config.train.seed == 0
    assert str(config.run_dir) == "out/g/ce-1/seed0"


def test_summary_is_mean_and_population_std_over_seeds(tmp_path):
    results = pd.DataFrame(
        {
            "objective": ["ce", "ce", "mlcs"],
            "cell": ["ce", "ce", "mlcs"],
            "seed": [0, 1, 0],
            "war": [0.5, 0.7, 0.6],
            "uar": [0.4, 0.8, 0.5],
            "macro_f1": [0.3, 0.5, 0.45],
        }
    )
    summary = summarise(results, ["objective"]).set_index("cell")
    assert summary.loc["ce", "uar_mean"] == pytest.approx(0.6)
    assert summary.loc["ce", "uar_std"] == pytest.approx(0.2)
    assert summary.loc["mlcs", "uar_std"] == 0.0 and summary.loc["mlcs", "seeds"] == 1
    table = results_markdown(summary.reset_index(), ["objective"])
    assert "| ce | 2 | 0.6000 ± 0.1000 | 0.6000 ± 0.2000 | 0.4000 ± 0.1000 |" in table


def test_bad_experiment_files_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: b.yaml\naxes: {objective: {ce: []}}\ncurve: alpha\n")
    with pytest.raises(ConfigError, match="curve 'alpha'"):
        load_experiment(bad)
    bad.write_text("name: x\nbase: b.yaml\ngrid: {}\n")
    with pytest.raises(ConfigError, match="grid"):
        load_experiment(bad)


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs/experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_grids_give_valid_run_configs(path, monkeypatch):
    monkeypatch.chdir(REPO)
    grid = load_experiment(path)
    cells = expand(grid)
    assert len(cells) == len(grid.seeds) * pd.Series([len(v) for v in grid.axes.values()]).prod()
    names = set()
    for cell in cells:
        config = cell_config(grid, cell)
        names.add(str(config.run_dir))
    assert len(names) == len(cells)  # no two cells share a run folder
    assert Path(grid.base).is_file()


def test_only_keeps_the_named_levels(tmp_path):
    grid = _grid(tmp_path)
    cells = expand(grid, {"objective": ["mlcs"]})
    assert [c.name for c in cells] == ["mlcs-0.5", "mlcs-1"] * 2
    with pytest.raises(ConfigError, match="no such axis or level"):
        expand(grid, {"objective": ["focal"]})
    with pytest.raises(ConfigError, match="no such axis or level"):
        expand(grid, {"model": ["crab"]})


def test_report_only_needs_finished_cells(tmp_path):
    from crabser.experiment import run_experiment

    with pytest.raises(ConfigError, match="no finished cell"):
        run_experiment(_grid(tmp_path), report_only=True)


def _fake_grid_runs(tmp_path, monkeypatch, uar=lambda config: 0.5) -> SimpleNamespace:
    """Grids run without training: each cell run writes its config.yaml and a result.json (UAR
    ``uar(config)``); the pool runs its jobs in order. Returns what was seen: ``runs`` (config and
    manifest of each cell run), ``pools`` (each run_jobs call's keys), ``written`` (the grids whose
    outputs were written)."""
    import json

    from crabser import experiment, parallel, pipeline
    from crabser.config import dump_config

    seen = SimpleNamespace(runs=[], pools=[], written=[])

    def fake_run_cell(config, encoders, manifest=None):
        seen.runs.append((config, manifest))
        config.run_dir.mkdir(parents=True, exist_ok=True)
        (config.run_dir / "config.yaml").write_text(dump_config(config))
        (config.run_dir / "result.json").write_text(
            json.dumps({"war": 0.5, "uar": uar(config), "macro_f1": 0.4, "seconds": 1.0})
        )

    def fake_run_jobs(function, arguments, jobs=1, on_done=None, finished=()):
        seen.pools.append(list(arguments))
        for args in arguments.values():
            function(*args)

    monkeypatch.setattr(experiment, "run_cell", fake_run_cell)
    monkeypatch.setattr(parallel, "run_jobs", fake_run_jobs)
    monkeypatch.setattr(pipeline, "EncoderCache", lambda: lambda config: {})
    monkeypatch.setattr(
        experiment,
        "write_outputs",
        lambda grid, results, overrides: seen.written.append(grid.name) or tmp_path / grid.name,
    )
    monkeypatch.chdir(tmp_path)
    return seen


def test_several_grids_train_in_one_pool_and_report_apart(tmp_path, monkeypatch):
    """Two grids' pending cells go to one run_jobs call (no core idles between grids); each grid
    gets its own results table, in the order asked."""
    from crabser import experiment

    seen = _fake_grid_runs(tmp_path, monkeypatch, uar=lambda config: config.train.seed / 10)
    first = _grid(tmp_path)
    second = first.model_copy(update={"name": "h", "seeds": [2]})
    outputs = experiment.run_experiments([(first, [], {"objective": ["ce"]}), (second, [], None)])
    assert len(seen.pools) == 1 and len(seen.pools[0]) == 4 + 4  # 2 cells x 2 seeds, 4 x 1
    assert [index for index, _ in seen.pools[0]] == [0] * 4 + [1] * 4
    assert seen.written == ["g", "h"]
    (results_g, out_g), (results_h, _) = outputs
    assert (
        out_g == tmp_path / "g"
        and set(results_g["cell"]) == {"ce-0.5", "ce-1"}
        and len(results_h) == 4
    )
    assert sorted(results_g["uar"]) == [0.0, 0.0, 0.1, 0.1] and set(results_h["uar"]) == {0.2}


def test_cells_run_as_jobs_are_prepared_once_with_the_jobs_threads(tmp_path, monkeypatch):
    """With --jobs each pending cell is prepared once, here, with the config its job runs (so its
    saved config.yaml names the job's threads), and that manifest goes to the job."""
    from crabser import experiment, pipeline
    from crabser.parallel import threads_per_job

    prepared = []

    def fake_prepare(config, resume=False):
        assert resume  # a cell's unfinished run resumes only with its settings
        prepared.append(config)
        return f"manifest of {config.name}"

    seen = _fake_grid_runs(tmp_path, monkeypatch)
    monkeypatch.setattr(pipeline, "prepare", fake_prepare)
    monkeypatch.setattr(pipeline, "extract_features", lambda config, manifest, encoders: None)
    experiment.run_experiments([(_grid(tmp_path), [], {"objective": ["ce"]})], jobs=2)
    assert len(prepared) == 4 and {config.train.threads for config in prepared} == {
        threads_per_job(2)
    }
    assert [(config.train.threads, manifest) for config, manifest in seen.runs] == [
        (threads_per_job(2), f"manifest of {config.name}") for config in prepared
    ]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_run_configs_validate_and_fine_tuning_ones_pass_the_fine_tuning_checks(path):
    from crabser.config import load_config
    from crabser.training import fit

    config = load_config(path, check_outputs=False)
    if (
        config.train.finetune
    ):  # the settings fine-tuning refuses (no CTranslate2 encoder, no padding)
        assert fit.finetune_encoders(config)[
            "speech_model" if "speech" in config.model.modalities else "text_model"
        ]


def test_a_finished_cell_is_read_back_only_with_the_settings_asked_for(tmp_path, monkeypatch):
    """A cell with result.json is not run again; its saved config must match the cell's (threads
    may differ), else the grid is refused naming the setting, not reported with another run's
    results."""
    from crabser import experiment
    from crabser.errors import CrabserError

    seen = _fake_grid_runs(tmp_path, monkeypatch)
    grid = _grid(tmp_path)
    experiment.run_experiments([(grid, [], {"objective": ["ce"]})])
    assert len(seen.runs) == 4
    ((results, _),) = experiment.run_experiments([(grid, ["train.threads=1"], None)])
    assert len(seen.runs) == 8 and len(results) == 8  # the four ce cells read back, mlcs run
    with pytest.raises(CrabserError, match=r"train\.epochs: 3 there, 4 now"):
        experiment.run_experiments([(grid, ["train.epochs=4"], None)], report_only=True)
