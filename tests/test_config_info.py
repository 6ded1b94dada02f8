"""What a config means before anything runs: schedule warnings (defect 7: a one-epoch run at
lr 0), `describe` (the data of `advise config`), and the README's table of every config key."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fabricate import dataset_tree

import advise.config_info as config_info
from advise.config import load_config, valid_keys
from advise.config_info import (
    TABLE_END,
    TABLE_START,
    config_table,
    describe,
    format_description,
    readme_block,
)
from advise.train.engine import Schedule
from advise.train.optim import _zero_lr_steps, lr_at, schedule_warnings

ROOT = Path(__file__).resolve().parent.parent


def test_defect_7_one_epoch_of_one_step_under_a_two_epoch_warmup_warns():
    config = load_config("demo", ["optim.warmup_epochs=2", "train.epochs=1"])
    schedule = Schedule.of(4, config.optim, config.train)  # fewer videos than a batch: 1 step
    assert (schedule.steps_per_epoch, schedule.total_steps, schedule.warmup_steps) == (1, 1, 2)
    assert schedule.lr(0) == 0  # what the run trains its one step at today
    found = schedule_warnings(
        schedule.total_steps, schedule.warmup_steps, schedule.peak_lr, schedule.min_lr
    )
    assert len(found) == 2
    covers, zero = found
    assert "warm-up of 2 steps covers the whole run of 1 step" in covers
    assert "never reaches its peak" in covers
    assert "optim.warmup_epochs" in covers and "train.epochs" in covers
    assert zero.startswith("step 1 of 1 trains at lr 0")


def test_a_run_without_warmup_and_a_positive_peak_gives_no_warning():
    assert schedule_warnings(total_steps=100, warmup_steps=0, peak_lr=1e-3, min_lr=0.0) == []
    assert schedule_warnings(total_steps=0, warmup_steps=5, peak_lr=1e-3, min_lr=0.0) == []


def test_only_the_first_warmup_step_at_lr_0_is_the_schedule_as_meant():
    assert lr_at(0, 1000, 50, 1e-3) == 0  # the linear warm-up starts from 0 (as MAE's)
    assert schedule_warnings(1000, 50, 1e-3, 0.0) == []
    # ... but when the warm-up never ends, that step is named with the rest
    found = schedule_warnings(3, 5, 1e-3, 0.0)
    assert "covers the whole run" in found[0] and found[1].startswith("step 1 of 3 trains at lr 0")


def test_a_peak_lr_of_0_warns():
    found = schedule_warnings(10, 0, 0.0, 0.0)
    assert found[0].startswith("steps 1-10 of 10 train at lr 0")
    assert "peak lr is 0" in found[1] and "optim.base_lr" in found[1]


@pytest.mark.parametrize("total", [1, 2, 5, 17])
@pytest.mark.parametrize("warmup", [0, 1, 3, 17, 40])
@pytest.mark.parametrize("peak, low", [(1e-3, 0.0), (1e-3, 1e-4), (1e-3, 2e-3), (0.0, 0.0),
                                       (0.0, 1e-4)])  # fmt: skip
def test_zero_lr_steps_are_the_steps_lr_at_gives_0(total, warmup, peak, low):
    expected = [step for step in range(total) if lr_at(step, total, warmup, peak, low) == 0]
    found = [step for steps in _zero_lr_steps(total, warmup, peak, low) for step in steps]
    assert found == expected


def test_describe_demo_without_data_says_what_is_unknown():
    description = describe("demo", [])
    config, derived = description["config"], description["derived"]
    assert config == yaml.safe_load(yaml.safe_dump(config))  # plain values
    assert list(config["tmm"]) == ["kind", "frozen", "bottleneck"]  # the chosen kind only
    assert list(config["pretext"]) == ["kind", "prp"]
    assert derived["peak_lr"] == pytest.approx(0.05 * 16 / 256)
    for name in ("train_videos", "steps_per_epoch", "warmup_steps", "total_steps"):
        assert derived[name] == "unknown (data.root is not set)"
    assert derived["pretrain_trainable_params"] > 0 and derived["frozen_params"] > 0
    assert description["warnings"] == []


def test_describe_does_not_fail_on_an_unreadable_root(tmp_path):
    derived = describe("demo", [f"data.root={tmp_path / 'absent'}"])["derived"]
    assert derived["steps_per_epoch"].startswith("unknown (data.root not readable: ")
    assert "absent" in derived["steps_per_epoch"]


def test_describe_counts_steps_on_a_tiny_dataset_and_gives_the_runs_warnings(tmp_path):
    overrides = dataset_tree("ucf101", tmp_path / "ucf")  # 2 classes x 2 training videos
    one_video = tmp_path / "ucf" / "Left" / "v_Left_g00.mp4"
    (tmp_path / "quarantine.txt").write_text(f"{one_video}\n")
    overrides["data.quarantine"] = str(tmp_path / "quarantine.txt")
    sets = [f"{key}={value}" for key, value in overrides.items()]
    description = describe("demo", [*sets, "optim.warmup_epochs=2", "train.epochs=1"])
    derived, found = description["derived"], description["warnings"]
    assert derived["train_videos"] == 3
    assert (derived["steps_per_epoch"], derived["warmup_steps"], derived["total_steps"]) == (
        1,
        2,
        1,
    )
    assert derived["finetune_trainable_params"] != derived["pretrain_trainable_params"]
    assert any("skipping 1 of 4 videos quarantined" in message for message in found)
    assert any("covers the whole run of 1 step" in message for message in found)
    assert any(message.startswith("step 1 of 1 trains at lr 0") for message in found)


def test_describe_passes_on_the_warnings_of_loading_the_config(monkeypatch):
    def load_with_a_warning(source, overrides):
        import warnings

        warnings.warn("a preset note", stacklevel=2)
        return load_config(source, overrides)

    monkeypatch.setattr(config_info, "load_config", load_with_a_warning)
    assert describe("demo", [])["warnings"] == ["a preset note"]


def test_format_description_is_the_config_as_yaml_then_derived_then_warnings(tmp_path):
    description = describe("demo", ["train.epochs=1"])  # warm-up of 2 epochs covers the run
    text = format_description(description)
    assert text.index("# derived") < text.index("# warnings")
    assert "#   steps per epoch: unknown (data.root is not set)" in text
    assert "#   - optim.warmup_epochs=2 covers the whole run of train.epochs=1" in text
    assert yaml.safe_load(text) == description["config"]  # the comments hide the rest
    (tmp_path / "printed.yaml").write_text(text)
    assert load_config(str(tmp_path / "printed.yaml")) == load_config("demo", ["train.epochs=1"])


def test_a_bad_key_fails_before_torch_is_imported():
    code = (
        "import sys\n"
        "from advise.config import ConfigError\n"
        "from advise.config_info import describe\n"
        "try:\n"
        "    describe('demo', ['tmm.bottleneck.hiden=3'])\n"
        "except ConfigError as error:\n"
        "    print('torch' in sys.modules, error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("False unknown config key 'tmm.bottleneck.hiden'")


def test_config_table_has_one_row_per_key_with_its_default_and_comment():
    rows = [line for line in config_table().splitlines()[2:] if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == valid_keys()
    for row in rows:  # three cells each: a `|` inside a cell is escaped
        assert row.replace("\\|", "").count("|") == 4, row
    by_key = {row.split("`")[1]: row for row in rows}
    assert by_key["train.batch_size"] == "| `train.batch_size` | `8` | videos per step |"
    assert "| `[1, 2, 4, 8]` | label = index in this tuple |" in by_key["pretext.prp.speeds"]
    assert "auto \\| cpu \\| cuda" in by_key["train.device"]
    assert "transformer blocks whose patch tokens" in by_key["ifm.layers"]  # comment above
    assert "| **tmm.bottleneck** | | tmm.kind=bottleneck: ResNet-3D" in config_table()


def test_readme_config_table_is_current():
    """Fails when a config field, default or comment changed: run
    `python scripts/config_table.py` to rewrite README.md's table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    markers = f"README.md needs {TABLE_START} and {TABLE_END} lines where the config table goes"
    assert TABLE_START in readme and TABLE_END in readme, markers
    fix = "README.md's config table is stale: run python scripts/config_table.py"
    assert readme_block(readme) == config_table(), fix


def test_config_table_script_rewrites_and_checks_the_block(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts/config_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{TABLE_START}\n| old |\n{TABLE_END}\n\nafter\n")
    assert script.main(["--check", "--readme", str(readme)]) == 1
    assert script.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith(f"{TABLE_END}\n\nafter\n")
    assert readme_block(text) == config_table()
    assert script.main(["--check", "--readme", str(readme)]) == 0
    readme.write_text("# no markers\n")
    assert script.main(["--readme", str(readme)]) == 2
    assert "config-table:start" in capsys.readouterr().err
