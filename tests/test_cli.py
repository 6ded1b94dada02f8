"""End to end through the command line on tiny real videos: run folders, exit codes, bad
input, fine-tuning from a pre-training checkpoint, evaluation, resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fabricate import tiny_config, ucf_tree, wait_for_checkpoint_step
from safetensors.torch import save_file

from advise.cli import main
from advise.config import load_config
from advise.models.build import build_frozen_ifm
from advise.runs import RandomInitWarning, finetune, pretrain, setup
from advise.train.checkpoint import load_checkpoint


def run_cli(*args: str) -> int:
    return main([str(arg) for arg in args])


def test_pretrain_finetune_evaluate_predict(tmp_path, config, tree, capsys):
    prp, ft = tmp_path / "prp", tmp_path / "ft"
    assert run_cli("pretrain", "--config", config, "--out", prp) == 0
    assert (prp / "config.yaml").exists()
    for suffix in (".safetensors", ".json"):
        assert (prp / "checkpoints" / f"last{suffix}").exists()
    records = [json.loads(line) for line in (prp / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if "step_seconds" in record and "lr" in record]
    assert steps and all("data_seconds" in record for record in steps)
    assert [record["epoch"] for record in records if record.get("kind") == "epoch"] == [1, 2]

    init = prp / "checkpoints" / "last.safetensors"
    assert run_cli("finetune", "--config", config, "--out", ft, "--init", init) == 0
    checkpoint = ft / "checkpoints" / "last.safetensors"
    _, state = load_checkpoint(checkpoint)
    assert state["class_names"] == ["Left", "Right"]
    assert state["ifm"]["random_init"] is True
    # the data manifest and environment travel with every checkpoint and result
    manifest = state["data"]
    assert (manifest["format"], manifest["videos"], manifest["classes"]) == ("ucf101", 6, 2)
    assert manifest["per_class"] == {"Left": 3, "Right": 3}
    assert set(manifest["annotation_sha256"]) == {
        str(tree / "trainlist01.txt"),
        str(tree / "classInd.txt"),  # it defines the labels
    }
    assert state["environment"]["packages"]["torch"] == torch.__version__.split("+")[0]
    assert json.loads((ft / "run.json").read_text())["data"] == manifest

    assert run_cli("evaluate", "--config", config, "--ckpt", checkpoint, "--views", "2x3") == 0
    result = json.loads((ft / "eval-2x3.json").read_text())
    assert result["num_videos"] == 4  # 2 classes x 2 test videos, each counted once
    assert result["views"] == "2x3" and "mean of softmax" in result["views_combined"]
    assert result["ifm"]["random_init"] is True and result["data"]["videos"] == 4
    assert result["config"]["ifm"]["random_init"] is True and result["environment"]["python"]
    assert 0 <= result["top1"] <= 100 and result["top5"] == 100.0  # 2 classes
    assert "top-1" in capsys.readouterr().out
    # per-class accuracy, the confusion matrix and its figure, per-video predictions
    assert [row["class"] for row in result["per_class"]] == ["Left", "Right"]
    assert [row["videos"] for row in result["per_class"]] == [2, 2]
    confusion = result["confusion_matrix"]
    assert [sum(row) for row in confusion] == [2, 2]
    assert result["top1"] == pytest.approx(100 * (confusion[0][0] + confusion[1][1]) / 4)
    assert (ft / "eval-2x3_confusion.png").read_bytes()[:4] == b"\x89PNG"
    rows = (ft / "eval-2x3_predictions.csv").read_text().splitlines()
    assert rows[0] == "video,label,predicted,score,top5" and len(rows) == 5

    # predict: one video, the checkpoint's own config and views; scores sum to 1 over classes
    video = tree / "Right" / "v_Right_g03.mp4"
    capsys.readouterr()
    assert run_cli("predict", video, "--ckpt", checkpoint, "--json") == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["views"] == "2x1"  # tiny_config's eval.num_clips x eval.num_crops
    assert sorted(row["class"] for row in prediction["top"]) == ["Left", "Right"]
    assert sum(row["score"] for row in prediction["top"]) == pytest.approx(1, abs=1e-3)
    by_class = {row["class"]: row["score"] for row in prediction["top"]}
    predicted = next(
        line.split(",")[2] for line in rows if line.startswith(str(video))
    )  # the same video in evaluate's predictions, same views: the same winner
    assert max(by_class, key=by_class.get) == predicted
    assert run_cli("predict", video, "--ckpt", checkpoint) == 0
    assert "1. " in capsys.readouterr().out
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    assert run_cli("predict", bad, "--ckpt", checkpoint) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert run_cli("predict", video, "--ckpt", init) == 2  # a pre-training checkpoint


def test_a_random_ifm_is_announced(config):
    with pytest.warns(RandomInitWarning, match="randomly initialised"):
        setup(load_config(str(config)))


def test_finetune_inherits_the_temporal_module_only(tmp_path, config):
    cfg = load_config(str(config))
    ifm = build_frozen_ifm(cfg.ifm, torch.device("cpu"))
    prp = pretrain(cfg, tmp_path / "prp", ifm=ifm)
    prp_tensors, _ = load_checkpoint(prp.checkpoint)
    one_epoch = cfg.replace({"train.epochs": 0})
    ft = finetune(one_epoch, tmp_path / "ft", init=prp.checkpoint.with_suffix(".json"), ifm=ifm)
    ft_tensors, _ = load_checkpoint(ft.checkpoint)
    tmm_keys = [key for key in prp_tensors if key.startswith("model.tmm.")]
    assert tmm_keys and all(torch.equal(prp_tensors[k], ft_tensors[k]) for k in tmm_keys)
    # the head is new: PRP has 4 speed classes, the task 2 action classes
    assert prp_tensors["model.head.classifier.weight"].shape[0] == 4
    assert ft_tensors["model.head.classifier.weight"].shape[0] == 2


def test_linear_probe_trains_only_the_head(tmp_path, config):
    """tmm.frozen + head.kind=linear: the inherited TMM (weights and batch-norm statistics)
    comes out bit-identical; only the linear head learns."""
    cfg = load_config(str(config))
    ifm = build_frozen_ifm(cfg.ifm, torch.device("cpu"))
    prp = pretrain(cfg, tmp_path / "prp", ifm=ifm)
    prp_tensors, _ = load_checkpoint(prp.checkpoint)
    probe = cfg.replace({"tmm.frozen": True, "head.kind": "linear"})
    result = finetune(probe, tmp_path / "probe", init=prp.checkpoint, ifm=ifm)
    probe_tensors, _ = load_checkpoint(result.checkpoint)
    tmm_keys = [key for key in prp_tensors if key.startswith("model.tmm.")]
    assert any("running_mean" in key for key in tmm_keys)
    for key in tmm_keys:
        assert torch.equal(prp_tensors[key], probe_tensors[key]), key
    head_keys = [key for key in probe_tensors if key.startswith("model.head.")]
    assert sorted(head_keys) == ["model.head.classifier.bias", "model.head.classifier.weight"]
    assert result.steps > 0


def test_training_never_changes_an_ifm_weight(tmp_path, config):
    cfg = load_config(str(config))
    ifm = build_frozen_ifm(cfg.ifm, torch.device("cpu"))
    before = {key: value.clone() for key, value in ifm.state_dict().items()}
    pretrain(cfg, tmp_path / "prp", ifm=ifm)
    after = ifm.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not ifm.model.training


def test_truncated_video_is_skipped_with_a_warning(tmp_path, tree, capsys):
    broken = tmp_path / "broken"
    ucf_tree(broken)
    victim = broken / "Left" / "v_Left_g01.mp4"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(broken), "max_bad_fraction": 0.5})
    with pytest.warns(UserWarning, match="v_Left_g01.mp4"):
        assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 0
    records = [
        json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()
    ]
    epochs = [record for record in records if record.get("kind") == "epoch"]
    assert len(epochs) == 2 and sum(record["skipped_videos"] for record in epochs) >= 1


def test_too_many_bad_videos_fail_with_exit_1(tmp_path, capsys):
    broken = ucf_tree(tmp_path / "broken")
    for video in list(broken.glob("*/*.mp4"))[:4]:
        video.write_bytes(b"not a video")
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(broken), "max_bad_fraction": 0.1})
    with pytest.warns(UserWarning):
        assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 1
    assert "failed to decode" in capsys.readouterr().err


def test_evaluation_with_too_many_bad_videos_fails_instead_of_scoring_the_rest(
    tmp_path, config, tree, capsys
):
    assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 0
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    listed = (broken / "testlist01.txt").read_text().splitlines()
    for video in [broken / line.split()[0] for line in listed if line][:2]:
        video.write_bytes(b"not a video")
    bad = tiny_config(tmp_path / "bad.yaml", data={"root": str(broken), "max_bad_fraction": 0.25})
    checkpoint = tmp_path / "ft" / "checkpoints" / "last.safetensors"
    with pytest.warns(UserWarning):
        assert run_cli("evaluate", "--config", bad, "--ckpt", checkpoint) == 1
    assert "2 of 4 test videos could not be read" in capsys.readouterr().err


def test_annotation_naming_a_missing_file_exits_2_at_start(tmp_path, capsys):
    tree = ucf_tree(tmp_path / "tree")
    (tree / "Right" / "v_Right_g01.mp4").unlink()
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(tree)})
    assert run_cli("pretrain", "--config", config, "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "v_Right_g01.mp4" in err and "trainlist01.txt" in err
    assert not (tmp_path / "run").exists()  # stopped before creating anything


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["summary", "--config", "demo", "--set", "tmm.hiden=3"],
            "did you mean 'tmm.bottleneck.hidden'",
        ),
        (["summary", "--config", "no-such-preset"], "no preset"),
        (["pretrain", "--config", "demo", "--out", "x"], "data.root"),
        (["evaluate", "--config", "demo", "--ckpt", "missing.safetensors"], "missing"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_argparse_usage_error_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain"])
    assert exit_info.value.code == 2


def test_evaluate_refuses_a_dataset_with_other_classes(tmp_path, config, capsys):
    assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 0
    other = ucf_tree(tmp_path / "other", classes=("Up", "Down"), train_per_class=1)
    checkpoint = tmp_path / "ft" / "checkpoints" / "last.safetensors"
    code = run_cli(
        "evaluate", "--config", config, "--set", f"data.root={other}", "--ckpt", checkpoint
    )
    assert code == 2 and "class names must match" in capsys.readouterr().err


def test_an_existing_run_is_not_overwritten(tmp_path, config, capsys):
    assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 0
    assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 2
    assert "--resume" in capsys.readouterr().err


def _pretrain_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "advise.cli",
        "pretrain",
        "--config",
        str(config),
        "--out",
        str(out),
        *extra,
    ]


def test_killed_pretrain_resumes_to_the_same_weights(tmp_path, tree):
    """SIGKILL a real `advise pretrain` mid-run, rerun with --resume: the final weights equal
    an uninterrupted run's, bit for bit (CPU, deterministic settings)."""
    config = tiny_config(
        tmp_path / "c.yaml",
        data={"root": str(tree)},
        train={"epochs": 4, "checkpoint_every": 1, "batch_size": 2},
    )
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference"
    subprocess.run(
        _pretrain_command(config, reference), check=True, env=environment, capture_output=True
    )

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        _pretrain_command(config, interrupted),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = interrupted / "checkpoints" / "last.json"
    wait_for_checkpoint_step(process, state_file, 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(state_file)[1]["step"]
    assert 3 <= killed_at < 12  # 4 epochs x 3 steps

    resumed = subprocess.run(
        _pretrain_command(config, interrupted, "--resume"),
        env=environment,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    expected, expected_state = load_checkpoint(reference / "checkpoints" / "last")
    got, got_state = load_checkpoint(state_file)
    assert got_state["step"] == expected_state["step"] == 12
    model_keys = [key for key in expected if key.startswith("model.")]
    assert model_keys and all(torch.equal(expected[k], got[k]) for k in model_keys)
    # the log is continuous: every step logged exactly once
    steps = [
        json.loads(line).get("step")
        for line in (interrupted / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "step"
    ]
    assert steps == list(range(1, 13))


def test_evaluate_refuses_to_change_the_checkpoints_architecture(tmp_path, config, capsys):
    assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 0
    checkpoint = tmp_path / "ft" / "checkpoints" / "last.safetensors"
    code = run_cli("evaluate", "--config", config, "--set", "tmm.hidden=12", "--ckpt", checkpoint)
    error = capsys.readouterr().err
    assert code == 2 and "--set tmm.bottleneck.hidden=12: the model is rebuilt from the " in error


def test_check_data_quarantines_a_bad_video_and_training_skips_it(tmp_path, capsys):
    root = ucf_tree(tmp_path / "tree")
    bad = root / "Left" / "v_Left_g01.mp4"
    bad.write_bytes(bad.read_bytes()[:600])  # truncated mid-stream: not decodable
    config = tiny_config(tmp_path / "tiny.yaml", data={"root": str(root)})
    check = tmp_path / "check"
    assert run_cli("check-data", "--config", config, "--out", check, "--workers", "0") == 0
    out = capsys.readouterr().out
    assert "train: 6 videos, 2 classes" in out and "1 failed" in out
    listed = [
        line for line in (check / "quarantine.txt").read_text().splitlines() if line[:1] != "#"
    ]
    assert listed == [str(bad)]
    report = json.loads((check / "check_report.json").read_text())
    assert len(report["videos"]) == 10  # 6 train + 4 test

    quarantine = f"data.quarantine={check / 'quarantine.txt'}"
    with pytest.warns(UserWarning, match="skipping 1 of 6 videos quarantined"):
        assert (
            run_cli("pretrain", "--config", config, "--set", quarantine, "--out", tmp_path / "p")
            == 0
        )
    lines = (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    epochs = [record for record in records if "skipped_videos" in record]
    assert epochs and all(record["skipped_videos"] == 0 for record in epochs)


def test_ifm_weights_file_round_trip_and_exit_2_when_missing_or_mismatched(
    tmp_path, config, capsys
):
    """ifm.weights: a file written here is read back to the same tokens (and the same
    weights hash in the checkpoint); a missing or mismatched file stops the run with exit 2."""
    cfg = load_config(str(config))
    source = build_frozen_ifm(cfg.ifm, torch.device("cpu"))  # the random mini IFM
    path = tmp_path / "mini.safetensors"
    save_file({key: value.contiguous() for key, value in source.model.state_dict().items()}, path)
    loaded = build_frozen_ifm(
        cfg.replace({"ifm.random_init": False, "ifm.weights": str(path)}).ifm, torch.device("cpu")
    )
    frames = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(frames), source(frames))
    assert loaded.weights_hash() == source.weights_hash()

    from_file = ["--set", "ifm.random_init=false", "--set", f"ifm.weights={path}"]
    assert run_cli("pretrain", "--config", config, *from_file, "--out", tmp_path / "ok") == 0
    _, state = load_checkpoint(tmp_path / "ok" / "checkpoints" / "last.safetensors")
    assert state["ifm"]["weights_hash"] == source.weights_hash()
    assert state["ifm"]["random_init"] is False

    capsys.readouterr()
    missing = ["--set", "ifm.random_init=false", "--set", f"ifm.weights={tmp_path / 'nope.pt'}"]
    assert run_cli("pretrain", "--config", config, *missing, "--out", tmp_path / "a") == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    wrong = tmp_path / "wrong.safetensors"
    save_file({"blocks.0.weight": torch.zeros(3)}, wrong)
    mismatched = ["--set", "ifm.random_init=false", "--set", f"ifm.weights={wrong}"]
    assert run_cli("pretrain", "--config", config, *mismatched, "--out", tmp_path / "b") == 2
    assert "does not match IFM 'mini'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_ifms_lists_the_registry(capsys):
    assert run_cli("ifms", "--json") == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {
        "mini",
        "clip-b16",
        "clip-l14",
        "dinov2-b14",
        "dinov2-l14",
        "mae-b16",
        "mae-l16",
    } <= set(rows)
    assert (rows["dinov2-l14"]["embed_dim"], rows["dinov2-l14"]["token_grid"]) == (1024, [16, 16])
    assert (
        rows["clip-b16"]["weights_source"] == "Hugging Face timm/vit_base_patch16_clip_224.openai"
    )
    assert rows["clip-b16"]["weights_cached"] is None  # the test cache is empty
    assert run_cli("ifms") == 0
    assert "clip-l14" in capsys.readouterr().out


def test_bf16_for_the_temporal_module_only_when_asked(tmp_path, config):
    """train.precision=bf16 runs the TMM and head under bf16 autocast; the IFM keeps its own
    precision (fp32 here), and weights and checkpoints stay fp32."""
    from advise.models.build import build_model
    from advise.train.engine import trainable_autocast

    cfg = load_config(str(config), ["train.precision=bf16"])
    ifm = build_frozen_ifm(cfg.ifm, torch.device("cpu"))
    model = build_model(cfg, 2, ifm)
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen[name] = out.dtype  # returns None: the output is left alone

        return hook

    model.ifm.register_forward_hook(record("ifm"))
    model.tmm.register_forward_hook(record("tmm"))
    frames = torch.randn(2, 4, 3, 32, 32)
    with trainable_autocast(torch.device("cpu"), cfg.train.precision):
        model(frames)
    assert seen == {"ifm": torch.float32, "tmm": torch.bfloat16}

    result = pretrain(cfg, tmp_path / "bf16", ifm=ifm)
    tensors, _ = load_checkpoint(result.checkpoint)
    assert all(value.dtype in (torch.float32, torch.int64) for value in tensors.values())


def test_the_ifm_preprocessing_reaches_the_transforms(config):
    """Size, mean/std and interpolation come from the IFM (CLIP and DINOv2 resize bicubic)."""
    from advise.data import loaders
    from advise.data.transforms import Preprocessing

    run = setup(load_config(str(config)))
    run.ifm.interpolation = "bicubic"
    prep = run.preprocessing
    assert prep == Preprocessing(32, run.ifm.mean, run.ifm.std, "bicubic")
    assert loaders.views_transform(prep, 1).interpolation.value == "bicubic"
    train = loaders.finetune_dataset(run.config, loaders.read_split(run.config.data, "train"), prep)
    crops = [step for step in train.transform.transform.transforms if hasattr(step, "scale")]
    assert crops and crops[0].interpolation.value == "bicubic"


def test_linear_probe_without_init_and_resume_on_changed_data_exit_2(tmp_path, tree, capsys):
    config = tiny_config(tmp_path / "tiny.yaml", data={"root": str(tree)})
    probe = ["--set", "tmm.frozen=true", "--set", "head.kind=linear"]
    assert run_cli("finetune", "--config", config, *probe, "--out", tmp_path / "lp") == 2
    assert "needs --init" in capsys.readouterr().err

    copy = tmp_path / "copy"
    ucf_tree(copy)
    config = tiny_config(tmp_path / "copy.yaml", data={"root": str(copy)})
    assert run_cli("pretrain", "--config", config, "--out", tmp_path / "prp") == 0
    lines = (copy / "trainlist01.txt").read_text().splitlines()
    (copy / "trainlist01.txt").write_text("\n".join(lines[:-1]) + "\n")  # one video fewer
    capsys.readouterr()
    assert run_cli("pretrain", "--config", config, "--out", tmp_path / "prp", "--resume") == 2
    assert "the data changed" in capsys.readouterr().err


def test_unknown_ifm_names_exit_2_with_a_suggestion(capsys):
    for name in ("clip-b17", "clip-l14+mae-l61", "clip-b16+"):
        assert run_cli("summary", "--config", "default", "--set", f"ifm.name={name}") == 2
        assert "unknown IFM" in capsys.readouterr().err


def test_cuda_asked_for_without_a_gpu_exits_2(tmp_path, config, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error cannot happen")
    assert run_cli("pretrain", "--config", config, "--set", "train.device=cuda",
                   "--out", tmp_path / "run") == 2  # fmt: skip
    assert "no CUDA device" in capsys.readouterr().err


def test_demo_options_reach_run_demo(tmp_path, monkeypatch):
    import advise.demo

    seen = {}
    monkeypatch.setattr(advise.demo, "run_demo", lambda out, **options: seen.update(options))
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert seen == {"quick": False, "seed": 0, "features": "store", "workers": None}
    assert main(["demo", "--out", str(tmp_path), "--seed", "3", "--features", "int8",
                 "--jobs", "1"]) == 0  # fmt: skip
    assert seen == {"quick": False, "seed": 3, "features": "int8", "workers": 1}
    assert main(["demo", "--out", str(tmp_path), "--jobs", "0"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path), "--seed", "-1"])
    assert exit_info.value.code == 2
