"""The contrastive pretext (BYOL): pairs of clips, a momentum target kept in checkpoints and
restored bit-exactly on resume, its kNN measure, and a TMM that fine-tuning inherits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from fabricate import tiny_config, ucf_tree

from advise.cli import main
from advise.config import load_config
from advise.pretexts import PRETEXTS, build_pretext
from advise.pretexts.byol import BYOLTask
from advise.runs import evaluate_pretext
from advise.train import engine
from advise.train.checkpoint import load_checkpoint


def byol_config(path: Path, root: Path, **train) -> Path:
    tiny_config(path, data={"root": str(root)}, train={"batch_size": 4, **train})
    values = yaml.safe_load(path.read_text())
    values["pretext"] = {"kind": "byol", "byol": {"dim": 8, "hidden": 16, "momentum": 0.9}}
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return ucf_tree(tmp_path_factory.mktemp("byol") / "tree", train_per_class=4)


def tensors_of(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last")[0]


def test_the_table_and_the_config_agree():
    assert set(PRETEXTS) == set(load_config(None).to_dict()["pretext"]) - {"kind"}
    pretext = build_pretext(load_config("demo-byol"))
    assert pretext.class_names == [] and len(pretext.sampler()(20, _rng())) == 2


def _rng():
    import numpy as np

    return np.random.default_rng(0)


def test_momentum_rises_to_one_and_the_target_follows_the_online_weights():
    task = BYOLTask(momentum=0.9)
    assert task.momentum(-1, 10) == pytest.approx(0.9)
    assert task.momentum(9, 10) == pytest.approx(1.0)
    assert task.momentum(4, 10) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 2) + 1) / 2)
    config = load_config("demo-byol", ["ifm.random_init=true"])
    pretext = build_pretext(config)
    from advise.models.build import build_model

    model = build_model(config, 0, None, token_dim=32, head=pretext.head)
    task.start(model)
    before = {k: v.clone() for k, v in task.target.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    task.after_update(model, 4, 10)
    m = task.momentum(4, 10)
    weight = "tmm.blocks.0.temporal.0.weight"
    expected = m * before[weight] + (1 - m) * model.tmm.blocks[0].temporal[0].weight
    torch.testing.assert_close(task.target.state_dict()[weight], expected)


def test_pretrain_resume_evaluate_and_finetune(tmp_path, tree, capsys, monkeypatch):
    config = byol_config(tmp_path / "c.yaml", tree, epochs=3)
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "straight")]) == 0
    straight = tensors_of(tmp_path / "straight")
    targets = [key for key in straight if key.startswith("task.target.")]
    assert targets and any(key.startswith("model.head.predictor.") for key in straight)

    # stopped after the checkpoint of step 2 (of 6), then resumed: the same bits, target
    # network included
    real_save = engine.save_checkpoint

    def save_then_stop(stem, tensors, state):
        real_save(stem, tensors, state)
        if state["step"] == 2:
            raise KeyboardInterrupt

    args = ["pretrain", "--config", str(config), "--out", str(tmp_path / "resumed")]
    monkeypatch.setattr(engine, "save_checkpoint", save_then_stop)
    assert main([*args, "--set", "train.checkpoint_every=1"]) != 0  # "advise: interrupted"
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last")[1]["step"] == 2
    assert main([*args, "--resume"]) == 0
    resumed = tensors_of(tmp_path / "resumed")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[key], straight[key]) for key in straight)
    # the target is an average of the online weights, not a copy of them
    key = "tmm.blocks.0.temporal.0.weight"
    assert not torch.equal(straight[f"task.target.{key}"], straight[f"model.{key}"])

    checkpoint = tmp_path / "straight" / "checkpoints" / "last.safetensors"
    result = evaluate_pretext(load_config(str(config)), checkpoint)
    assert 0 <= result["knn_top1"] <= 100 and result["test_videos"] == 4

    capsys.readouterr()
    finetune = ["finetune", "--config", str(config), "--init", str(checkpoint)]
    assert main([*finetune, "--set", "train.epochs=1", "--out", str(tmp_path / "ft")]) == 0
    inherited = tensors_of(tmp_path / "ft")
    assert "model.head.classifier.weight" in inherited  # the config's head, a new one
    assert not any(key.startswith("task.") for key in inherited)


def test_a_byol_key_under_prp_is_refused_naming_the_kinds():
    from advise.config import ConfigError

    with pytest.raises(ConfigError, match="pretext.byol.dim is set but pretext.kind=prp.*byol"):
        load_config("demo", ["pretext.byol.dim=32"])
    assert load_config("demo", ["pretext.kind=byol", "pretext.byol.dim=32"]).pretext.byol.dim == 32
