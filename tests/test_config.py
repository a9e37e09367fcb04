"""Run config validation: nonsense values, invalid YAML and misplaced outputs are one-line
ConfigErrors naming the key."""

from pathlib import Path

import pytest

from crabser.config import load_config
from crabser.errors import ConfigError

NONSENSE = [
    "train.epochs=-1",
    "train.epochs=0",
    "train.lr_head=nan",
    "train.lr_head=.inf",
    "train.lr_head=-1",
    "loss.tau=0",
    "train.batch_size=0",
    "train.accumulate=0",
    "train.threads=-1",
    "train.devices=0",
    "model.dropout=1.0",
    "loss.alpha=-0.5",
    "speech.batch_size=0",
    "train.neutral_share=1.5",
]


@pytest.mark.parametrize("override", NONSENSE)
def test_nonsense_values_are_refused_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    message = str(caught.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize(
    "override",
    [
        "train.devices=-1",
        "train.devices=2",
        "train.threads=1",
        "train.lr_encoder=0",
        "loss.alpha=0",
    ],
)
def test_sensible_edge_values_are_kept(override):
    key, value = override.split("=")
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [override]), section), name) == float(value)


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: [3\nloss: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (
        str(path) in str(caught.value)
        and "line" in str(caught.value)
        and "\n" not in str(caught.value)
    )


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


@pytest.mark.parametrize("key", ["output_dir", "cache_dir"])
def test_an_output_folder_that_is_a_file_is_refused(tmp_path: Path, key):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"{key}.*is a file"):
        load_config(None, [f"{key}={blocker}"])


def test_an_output_folder_under_a_file_is_refused_but_a_saved_run_loads_anywhere(
    tmp_path: Path, monkeypatch
):
    from crabser.config import dump_config, load_run_config

    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="output_dir.*out is a file"):
        load_config(None, [f"output_dir={blocker / 'runs'}"])
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config(None, ["cache_dir=cache/features"])))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "features").write_text("a file where the run's cache was")
    assert load_run_config(run).name == "demo"  # evaluating or predicting writes no cache


def test_settings_that_meant_something_before_still_load():
    config = load_config(
        None, ["speech.kind=whisper-ct2", "speech.bucket_batches=0", "train.lr_decay=1.05"]
    )
    assert config.speech.bucket_batches == 0 and config.train.lr_decay == 1.05
