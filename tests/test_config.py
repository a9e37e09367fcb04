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


def test_saved_sections_are_completed_the_way_older_runs_trained():
    """A checkpoint saved before a setting existed: the setting takes the value it had then where
    the default changed (MPCL's anchors), else today's default; settings since removed drop."""
    from crabser.config import LossConfig, ModelConfig, saved_section

    old_loss = {"alpha": 0.5, "tau": 0.1, "a_setting_since_removed": 3}
    loss = saved_section("loss", old_loss)
    assert isinstance(loss, LossConfig)
    assert loss.mpcl_anchors == "with_positive" != LossConfig().mpcl_anchors
    assert (loss.alpha, loss.tau) == (0.5, 0.1)
    assert loss.soft_margin_weight == LossConfig().soft_margin_weight
    assert saved_section("loss", {"mpcl_anchors": "all"}).mpcl_anchors == "all"
    model = saved_section("model", {"name": "medusa", "hidden": 8})
    assert (model.name, model.hidden, model.mask_time) == ("medusa", 8, ModelConfig().mask_time)


def test_crabser_config_prints_the_resolved_settings_with_their_comments(tmp_path):
    """``crabser config`` is YAML that reads back to the same config, each setting under its
    schema comment; --defaults ignores the file."""
    import yaml
    from typer.testing import CliRunner

    from crabser.cli import app
    from crabser.config import RunConfig, load_config

    path = tmp_path / "run.yaml"
    path.write_text("name: mine\ndata: {label_map: {boredom: null}}\n")
    result = CliRunner().invoke(app, ["config", "-c", str(path), "-o", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    resolved = load_config(path, ["train.epochs=3"])
    assert yaml.safe_load(result.output) == resolved.model_dump(mode="json")
    lines = result.output.splitlines()
    index = lines.index("  label_map: {boredom: null}")
    assert lines[index - 1].startswith("  # ") and "calm: neutral" in lines[index - 1]
    defaults = CliRunner().invoke(app, ["config", "--defaults", "-c", str(path)])
    assert yaml.safe_load(defaults.output) == RunConfig().model_dump(mode="json")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model.aggregation=max"], "model.aggregation (read by memocmt, not crab)"),
        (["model.name=medusa", "model.heads=4"], "model.heads (read by crab, focalser, memocmt"),
        (["loss.legs=none", "loss.tau=0.2"], "loss.tau (not read by loss.classifier ce"),
        (["loss.supcon_variant=in"], "loss.supcon_variant (not read by"),
        (["loss.focal_gamma=1.0"], "loss.focal_gamma (not read by"),
        (["speech.max_tokens=64"], "speech.max_tokens (read by hf-text, not whisper-ct2)"),
        (["text.pad_to_seconds=30"], "text.pad_to_seconds (read by hf-speech, whisper-ct2"),
    ],
)
def test_settings_the_run_would_ignore_are_refused_by_name(overrides, named):
    from crabser.config import load_config

    with pytest.raises(ConfigError, match="does not read") as refused:
        load_config(None, overrides)
    assert named in str(refused.value)


def test_settings_read_by_the_chosen_parts_are_accepted():
    from crabser.config import load_config

    load_config(None, ["model.name=memocmt", "model.aggregation=max", "model.heads=2"])
    load_config(None, ["loss.leg_loss=supcon", "loss.supcon_variant=in", "loss.tau=0.2"])
    load_config(None, ["loss.classifier=focal", "loss.focal_gamma=1.0", "loss.legs=none"])
    load_config(None, ["loss.name=multi_loss", "loss.center_lr=0.01", "model.name=mll"])
    load_config(None, ["speech.kind=hf-speech", "speech.layer=2", "text.max_tokens=64"])


def test_an_encoder_section_given_in_part_keeps_its_modality_kind():
    from crabser.config import load_config

    config = load_config(None, ["text.max_tokens=64", "speech.batch_size=4"])
    assert (config.text.kind, config.text.max_tokens) == ("hf-text", 64)
    assert (config.speech.kind, config.speech.batch_size) == ("whisper-ct2", 4)
    assert load_config(None, ["speech.kind=hf-speech"]).speech.kind == "hf-speech"


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_shipped_configs_state_only_what_departs_from_the_defaults(path):
    """A shipped config restates a default only on a line whose comment says why."""
    import re

    import yaml

    from crabser.config import RunConfig

    defaults = RunConfig().model_dump(mode="json")
    raw = yaml.safe_load(path.read_text())
    text = path.read_text()
    restated = []
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(defaults.get(section), dict):
            for key, value in values.items():
                line = re.search(rf"^  {key}:.*$", text, re.MULTILINE)
                if defaults[section].get(key, object()) == value and "#" not in line.group(0):
                    restated.append(f"{section}.{key}")
        elif section != "name" and defaults.get(section) == values:
            restated.append(section)
    assert restated == []


def test_a_saved_run_with_settings_now_refused_still_loads(tmp_path):
    """Runs saved before settings were checked against the model and loss load for evaluation
    and prediction; a new config with the same settings is refused."""
    import yaml

    from crabser.config import RunConfig, load_config, load_run_config

    saved = RunConfig().model_dump(mode="json")
    saved["loss"].update({"legs": "none", "alpha": 1.0})
    run = tmp_path / "old_run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert load_run_config(run).loss.alpha == 1.0
    with pytest.raises(ConfigError, match="loss.alpha"):
        load_config(run / "config.yaml")


def test_val_balance_and_the_loss_tables_name_what_they_read():
    from crabser.config import load_config

    with pytest.raises(ConfigError, match="data.val_balance"):
        load_config(None, ["data.val_balance=corpus"])  # no corpora, no folds
    with pytest.raises(ConfigError, match="loss.tau"):
        load_config(None, ["loss.leg_loss=ce", "loss.tau=0.2"])  # CE legs read no temperature
    with pytest.raises(ConfigError, match="loss.classifier"):
        load_config(None, ["loss.name=multi_loss", "model.name=mll", "loss.classifier=focal"])
    with pytest.raises(ConfigError, match="speech.max_seconds"):
        load_config(None, ["speech.max_seconds=12"])  # CTranslate2 Whisper takes whole clips
