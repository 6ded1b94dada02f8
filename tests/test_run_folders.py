"""Run folders a researcher can trust (issue 11): one run per folder, resume that honours the
run's config, evaluation from the checkpoint's own config into named files, validation and
the best checkpoint, clear path messages, one line per epoch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advise.cli import main
from advise.files import locked_folder
from advise.train.checkpoint import load_checkpoint
from advise.train.engine import ScheduleWarning


def run_cli(*args) -> int:
    return main([str(arg) for arg in args])


def advise_process(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "advise.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# 1. two trainings into one folder


def test_two_trainings_started_together_into_one_folder_one_is_refused(tmp_path, config):
    out = tmp_path / "run"
    first = advise_process("pretrain", "--config", config, "--out", out, "--set", "train.seed=0")
    second = advise_process("pretrain", "--config", config, "--out", out, "--set", "train.seed=1")
    results = [(process.wait(timeout=300), process.communicate()[1]) for process in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "in use by another advise process (PID" in refused or "already holds a run" in refused
    # the folder holds the winner's run only: one seed in config, checkpoint and log
    seed = next(i for i, (code, _) in enumerate(results) if code == 0)
    _, state = load_checkpoint(out / "checkpoints" / "last")
    assert state["config"]["train"]["seed"] == seed
    assert f"seed: {seed}" in (out / "config.yaml").read_text()
    steps = [row["step"] for row in rows(out) if row["kind"] == "step"]
    assert steps == sorted(set(steps))


def test_a_held_folder_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(
    tmp_path, config, capsys
):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from advise.files import locked_folder\n"
         f"with locked_folder({str(out)!r}):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert run_cli("pretrain", "--config", config, "--out", out) == 2
    assert f"in use by another advise process (PID {holder.pid})" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert run_cli("pretrain", "--config", config, "--out", out) == 0  # no stale lock


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with locked_folder(tmp_path / "x"):
        with pytest.raises(Exception, match=f"PID {os.getpid()}"):
            with locked_folder(tmp_path / "x"):
                pass
    with locked_folder(tmp_path / "x"):  # released
        pass


def test_checkpoint_seconds_saves_fewer_epochs_and_changes_no_weight(tmp_path, config, monkeypatch):
    """train.checkpoint_seconds skips the saves of epochs that end soon after the last one; the
    end is saved, and the weights are those of a run saving every epoch."""
    from advise.train import engine

    saves = []
    save = engine.save_checkpoint
    monkeypatch.setattr(engine, "save_checkpoint",
                        lambda stem, tensors, state: saves.append(state["step"]) or
                        save(stem, tensors, state))  # fmt: skip
    every, seldom = tmp_path / "every", tmp_path / "seldom"
    assert run_cli("pretrain", "--config", config, "--out", every, "--set", "train.epochs=3") == 0
    each_epoch, saves[:] = list(saves), []
    assert run_cli("pretrain", "--config", config, "--out", seldom, "--set", "train.epochs=3",
                   "--set", "train.checkpoint_seconds=3600") == 0  # fmt: skip
    assert len(each_epoch) == 3 and saves == each_epoch[-1:]  # the end only
    weights = [load_checkpoint(run / "checkpoints" / "last")[0] for run in (every, seldom)]
    model = [key for key in weights[0] if key.startswith("model.")]
    assert model and all(torch.equal(weights[0][key], weights[1][key]) for key in model)


# 2. resume honours the run's config


def test_resume_refuses_a_changed_config_and_records_an_allowed_change(tmp_path, config, capsys):
    out = tmp_path / "ft"
    assert run_cli("finetune", "--config", config, "--out", out) == 0
    saved_yaml = (out / "config.yaml").read_text()
    capsys.readouterr()
    changed = ["--set", "train.epochs=3", "--set", "optim.base_lr=0.05"]
    assert run_cli("finetune", "--config", config, *changed, "--out", out, "--resume") == 2
    error = capsys.readouterr().err
    assert "optim.base_lr: run 0.5, now 0.05" in error and "train.epochs: run" not in error
    assert (out / "config.yaml").read_text() == saved_yaml  # nothing written
    # an architecture change names its key
    wider = ["--set", "tmm.bottleneck.hidden=12"]
    assert run_cli("finetune", "--config", config, *wider, "--out", out, "--resume") == 2
    assert "tmm.bottleneck.hidden: checkpoint 8, config 12" in capsys.readouterr().err
    # --out alone resumes with the run's own config; train.epochs may grow
    assert run_cli("finetune", "--out", out, "--resume", "--set", "train.epochs=3") == 0
    _, state = load_checkpoint(out / "checkpoints" / "last")
    assert state["step"] == 9 and state["config"]["optim"]["base_lr"] == 0.5
    record = json.loads((out / "run.json").read_text())
    assert record["config_changes"] == [{"step": 6, "key": "train.epochs", "old": 2, "new": 3}]
    assert "epochs: 3" in (out / "config.yaml").read_text()


def test_resume_without_a_run_or_a_config_says_what_is_missing(tmp_path, config, capsys):
    assert run_cli("finetune", "--out", tmp_path / "none", "--resume") == 2
    assert "holds no run to resume" in capsys.readouterr().err
    assert run_cli("finetune", "--out", tmp_path / "none") == 2
    assert "--config is required" in capsys.readouterr().err


def test_run_json_records_how_the_run_was_started(tmp_path, config):
    out = tmp_path / "ft"
    assert run_cli("finetune", "--config", config, "--set", "train.seed=3", "--out", out) == 0
    record = json.loads((out / "run.json").read_text())
    invocation = record["invocation"]
    assert invocation["argv"][:3] == ["advise", "finetune", "--config"]
    assert invocation["overrides"] == ["train.seed=3"]
    assert invocation["preset_chain"][-1] == str(config)
    assert Path(invocation["preset_chain"][-2]).name == "demo.yaml"
    git = record["environment"]["git"]
    assert git is None or len(git["commit"]) == 40


# 3, 4, 6, 9. evaluate


def test_evaluate_rebuilds_the_model_from_the_checkpoint_and_writes_named_files(
    tmp_path, config, tree, capsys
):
    run = tmp_path / "ft"
    assert run_cli("finetune", "--config", config, "--out", run) == 0
    capsys.readouterr()
    # another preset's model (CLIP ViT-B/16: a download) is not built; its data keys are used
    code = run_cli("evaluate", "--config", "default", "--set", f"data.root={tree}",
                   "--ckpt", run, "--views", "1x1")  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "model is rebuilt from the checkpoint's own config" in out.out
    assert "ifm.name" in out.out
    result = json.loads((run / "eval-1x1.json").read_text())
    assert result["ifm"]["name"] == "mini" and result["checkpoint_step"] == 6
    assert run_cli("evaluate", "--ckpt", run / "checkpoints" / "last.safetensors") == 0
    assert (run / "eval-2x1.json").exists() and (run / "eval-1x1.json").exists()  # both kept
    assert {path.name for path in run.glob("eval-2x1*")} == {
        "eval-2x1.json", "eval-2x1_confusion.png", "eval-2x1_predictions.csv"
    }  # fmt: skip


def test_evaluate_out_is_a_folder_and_nothing_is_written_beside_a_lone_checkpoint(
    tmp_path, config, capsys
):
    run = tmp_path / "ft"
    assert run_cli("finetune", "--config", config, "--out", run) == 0
    models = tmp_path / "shared" / "models"
    models.mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(run / "checkpoints" / f"last{suffix}", models / f"x{suffix}")
    assert run_cli("evaluate", "--ckpt", models / "x.safetensors") == 0
    assert sorted(path.name for path in (tmp_path / "shared").iterdir()) == ["models"]
    assert (models / "eval-x-2x1.json").exists()
    existing = tmp_path / "results"
    existing.mkdir()
    assert run_cli("evaluate", "--ckpt", run, "--out", existing) == 0
    assert json.loads((existing / "eval-2x1.json").read_text())["num_videos"] == 4
    capsys.readouterr()
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    assert run_cli("evaluate", "--ckpt", run, "--out", a_file) == 2
    assert "is a file; --out names a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


def test_path_messages_name_what_the_user_gave(tmp_path, config, tree, capsys):
    run = tmp_path / "ft"
    assert run_cli("finetune", "--config", config, "--out", run) == 0
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("evaluate", "--ckpt", empty) == 2
    error = capsys.readouterr().err
    assert f"{empty} is a folder but holds no run" in error
    assert "checkpoints/last.safetensors" in error
    missing = tmp_path / "x.safetensors"
    assert run_cli("evaluate", "--ckpt", missing) == 2
    error = capsys.readouterr().err
    assert f"no checkpoint at {missing}" in error and "both are missing" in error
    assert run_cli("predict", empty, "--ckpt", run) == 2  # a folder: its videos, if any
    assert f"{empty}: a folder with no videos in it" in capsys.readouterr().err


def test_evaluate_scores_a_pretraining_checkpoint_on_its_pretext(tmp_path, config, capsys):
    run = tmp_path / "prp"
    assert run_cli("pretrain", "--config", config, "--out", run) == 0
    capsys.readouterr()
    assert run_cli("evaluate", "--ckpt", run) == 0
    assert "prp pretext" in capsys.readouterr().out
    result = json.loads((run / "eval-pretext.json").read_text())
    assert 0 <= result["speed_acc"] <= 100 and result["clips"] > 0


# 5. permissions


def test_checkpoints_respect_the_umask(tmp_path, config):
    umask = os.umask(0o022)
    try:
        assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 0
    finally:
        os.umask(umask)
    for path in (tmp_path / "ft" / "checkpoints").glob("last*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# 7. the schedule


def test_a_warmup_covering_the_whole_run_is_warned(tmp_path, config):
    with pytest.warns(ScheduleWarning, match="covers the whole run") as caught:
        assert run_cli("finetune", "--config", config, "--set", "train.epochs=1",
                       "--set", "optim.warmup_epochs=2", "--set", "train.batch_size=6",
                       "--out", tmp_path / "ft") == 0  # fmt: skip
    assert any("step 1 of 1 trains at lr 0" in str(warning.message) for warning in caught)


# 10. terminal feedback and the log


def test_one_line_per_epoch_and_one_name_per_quantity(tmp_path, config, capsys):
    out = tmp_path / "ft"
    assert run_cli("finetune", "--config", config, "--out", out) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " epoch " in line]
    assert [line.split()[2] for line in lines] == ["1/2", "2/2"]
    assert all("loss" in line and "lr" in line and "ETA" in line for line in lines)
    logged = rows(out)
    assert {row["kind"] for row in logged} == {"step", "epoch"}
    assert all(isinstance(row["time"], float) and row["time"] > 1e9 for row in logged)
    epochs = [row for row in logged if row["kind"] == "epoch"]
    assert all({"loss", "acc", "lr", "data_share", "elapsed", "eta"} <= set(row) for row in epochs)
    assert not any("train_loss" in row for row in logged)


# validation and the best checkpoint


def test_validation_logs_rows_keeps_the_best_and_changes_nothing_else(tmp_path, config):
    plain, validated = tmp_path / "plain", tmp_path / "validated"
    assert run_cli("finetune", "--config", config, "--out", plain) == 0
    assert run_cli("finetune", "--config", config, "--set", "train.eval_every=1",
                   "--out", validated) == 0  # fmt: skip
    val = [row for row in rows(validated) if row["kind"] == "val"]
    assert [row["epoch"] for row in val] == [1, 2] and all(row["views"] == "1x1" for row in val)
    best_tensors, best_state = load_checkpoint(validated / "checkpoints" / "best")
    best = max(val, key=lambda row: (row["top1"], -row["epoch"]))
    assert best_state["best"] == {
        "top1": best["top1"],
        "epoch": best["epoch"],
        "step": best["step"],
    }
    assert best_state["step"] == best["step"]
    # validation draws no training randomness: the last weights are those of a plain run
    plain_tensors, _ = load_checkpoint(plain / "checkpoints" / "last")
    last_tensors, _ = load_checkpoint(validated / "checkpoints" / "last")
    model = [key for key in plain_tensors if key.startswith("model.")]
    assert all(torch.equal(plain_tensors[key], last_tensors[key]) for key in model)
    assert run_cli("evaluate", "--ckpt", validated / "checkpoints" / "best.safetensors") == 0
    assert (validated / "eval-best-2x1.json").exists()


# advise config


def test_config_command_checks_a_typo_without_importing_torch(tmp_path):
    typo = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "advise.cli", "config", "--config", "demo",
         "--set", "tmm.bottleneck.hiden=3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert typo.returncode == 2
    assert (
        "unknown config key 'tmm.bottleneck.hiden' (tmm.bottleneck has: blocks, hidden"
        in typo.stderr
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in typo.stderr.splitlines()]
    assert "advise.config" in imported and "torch" not in imported


def test_config_command_prints_the_resolved_config_and_what_follows_from_it(config, capsys):
    smoke = ["--set", "train.epochs=1", "--set", "optim.warmup_epochs=2"]
    assert run_cli("config", "--config", config, *smoke, "--set", "train.batch_size=6") == 0
    out = capsys.readouterr().out
    assert "# derived" in out and "steps per epoch: 1" in out and "total steps: 1" in out
    assert "covers the whole run" in out  # the warning the run would give


# advise plot and TensorBoard


def test_plot_draws_runs_with_validation_and_tensorboard_gets_the_same_rows(tmp_path, config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        watched = ["--set", "train.eval_every=1", "--set", "train.tensorboard=true"]
        seeded = ["--set", f"train.seed={seed}"]
        assert run_cli("finetune", "--config", config, "--out", run, *seeded, *watched) == 0
    figure = tmp_path / "curves.png"
    assert run_cli("plot", *runs, "--out", figure) == 0
    import matplotlib.image

    assert matplotlib.image.imread(figure).shape[2] == 4
    events = EventAccumulator(str(runs[0] / "tensorboard"))
    events.Reload()
    val = [row for row in rows(runs[0]) if row["kind"] == "val"]
    assert [event.value for event in events.Scalars("val/top1")] == pytest.approx(
        [row["top1"] for row in val]
    )
    assert len(events.Scalars("train/loss")) == 6  # log_every=1, 6 steps
    assert run_cli("plot", tmp_path / "nothing", "--out", figure) == 2


def test_evaluate_accepts_the_training_overrides_repeated_but_not_changed(tmp_path, config, capsys):
    run = tmp_path / "ft"
    same = ["--set", "train.seed=3", "--set", "ifm.random_init=true"]
    assert run_cli("finetune", "--config", config, *same, "--out", run) == 0
    assert run_cli("evaluate", "--config", config, *same, "--ckpt", run, "--views", "1x1") == 0
    capsys.readouterr()
    assert run_cli("evaluate", "--ckpt", run, "--set", "train.seed=4") == 2
    error = capsys.readouterr().err
    assert "--set train.seed=4: the model is rebuilt from the checkpoint's own config, " in error
    assert "which has train.seed=3" in error


def test_the_best_validation_survives_a_resume(tmp_path, config):
    out = tmp_path / "ft"
    assert run_cli("finetune", "--config", config, "--set", "train.eval_every=1", "--out", out) == 0
    _, before = load_checkpoint(out / "checkpoints" / "last")
    assert run_cli("finetune", "--out", out, "--resume", "--set", "train.epochs=3") == 0
    val = [row for row in rows(out) if row["kind"] == "val"]
    assert [row["epoch"] for row in val] == [1, 2, 3]
    _, after = load_checkpoint(out / "checkpoints" / "last")
    best = max(val, key=lambda row: (row["top1"], -row["epoch"]))
    assert after["best"]["top1"] == best["top1"] and after["best"]["epoch"] == best["epoch"]
    assert before["best"]["top1"] <= after["best"]["top1"]
