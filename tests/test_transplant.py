"""Plug-and-play: a TMM pre-trained on one IFM's tokens, fine-tuned on another IFM's
(`finetune --transplant`), directly at the same width or through `sfu.adapter` at another,
and the ablation arm that does it over seeds."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from fabricate import tiny_config

from advise.ablate import load_grid, plan
from advise.cli import main
from advise.config import load_config
from advise.models.build import build_model
from advise.models.sfu import SFU
from advise.runs import load_init, setup
from advise.train.checkpoint import load_checkpoint, part_tensors


def test_the_adapter_maps_every_token_linearly_to_its_width():
    plain = SFU(spatial=2)
    assert plain.adapter is None and not list(plain.parameters()) and plain.out_dim(12) == 12
    sfu = SFU(spatial=2, channels=6, adapter=4, in_dim=12)
    assert sfu.out_dim(12) == 4
    tokens = torch.randn(2, 12, 3, 4, 4)
    out = sfu(tokens)
    assert out.shape == (2, 4, 3, 2, 2)
    pooled = SFU(spatial=2, channels=6)(tokens)  # [2, 6, 3, 2, 2]
    weight, bias = sfu.adapter.weight.flatten(1), sfu.adapter.bias  # [4, 6], [4]
    expected = torch.einsum("oc,bcthw->bothw", weight, pooled) + bias.view(1, 4, 1, 1, 1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="in_dim"):
        SFU(adapter=4)


@pytest.fixture
def source(tmp_path, tree):
    """A PRP pre-training on the random mini IFM's tokens (width 96)."""
    config = tiny_config(tmp_path / "source.yaml", data={"root": str(tree)})
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "prp")]) == 0
    return tmp_path / "prp" / "checkpoints" / "last.safetensors"


def test_a_tmm_from_another_ifm_is_refused_unless_transplanted(tmp_path, tree, source, capsys):
    # mini-seed1: the same width (random init: seeded like every random IFM, but another name)
    target = tiny_config(tmp_path / "t.yaml", data={"root": str(tree)},
                         ifm={"name": "mini-seed1"})  # fmt: skip
    args = ["finetune", "--config", str(target), "--init", str(source)]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "was trained on IFM 'mini'" in capsys.readouterr().err
    assert main([*args, "--transplant", "--out", str(tmp_path / "ft")]) == 0
    record = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert record["transplant"]["from_ifm"] == "mini"
    assert record["ifm"]["name"] == "mini-seed1"
    # the TMM it started from is the source's, bit for bit (the head is new)
    config = load_config(str(target), [f"data.root={tree}"])
    run = setup(config)
    model = build_model(config, 2, run.ifm, run.token_dim)
    load_init(model, source, run, transplant=True)
    tensors, _ = load_checkpoint(source)
    for key, value in part_tensors(tensors, ("tmm",)).items():
        assert torch.equal(model.trainable_state_dict()[key], value), key


def test_another_width_needs_the_adapter_and_trains_with_it(tmp_path, tree, source, capsys):
    # two random mini IFMs side by side: 192 channels where the TMM was pre-trained on 96
    wide = {"name": "mini+mini-seed1"}
    target = tiny_config(tmp_path / "t.yaml", data={"root": str(tree)}, ifm=wide)
    args = ["finetune", "--config", str(target), "--init", str(source), "--transplant"]
    assert main([*args, "--out", str(tmp_path / "no-adapter")]) == 2
    err = capsys.readouterr().err
    assert "wrong shape" in err and "set sfu.adapter" in err and "192" in err
    assert main([*args, "--set", "sfu.adapter=96", "--out", str(tmp_path / "ft")]) == 0
    tensors, state = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.safetensors")
    assert tuple(tensors["model.sfu.adapter.weight"].shape) == (96, 192, 1, 1, 1)
    assert state["config"]["sfu"]["adapter"] == 96
    # evaluate rebuilds the adapter from the checkpoint's config
    ckpt = tmp_path / "ft" / "checkpoints" / "last.safetensors"
    assert main(["evaluate", "--ckpt", str(ckpt), "--set", f"data.root={tree}"]) == 0


def test_transplant_without_init_is_refused(tmp_path, config, capsys):
    assert main(["finetune", "--config", str(config), "--transplant",
                 "--out", str(tmp_path / "ft")]) == 2  # fmt: skip
    assert "--transplant needs --init" in capsys.readouterr().err


def test_the_transplant_arm_starts_from_the_pretraining_on_the_source_ifm(tmp_path):
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump({
        "base": "demo", "set": {"ifm.name": "mini-seed1"},
        "transplant": {"ifm.name": "mini"},
        "tasks": ["temporal"], "arms": ["scratch", "transplant", "prp"], "seeds": [0, 1],
    }))  # fmt: skip
    specs = plan(load_grid(str(grid_file)))
    by_id = {spec.id: spec for spec in specs}
    pretrains = [spec for spec in specs if spec.stage == "pretrain"]
    assert sorted(s.overrides["ifm.name"] for s in pretrains) == ["mini", "mini", "mini-seed1",
                                                                   "mini-seed1"]  # fmt: skip
    for spec in specs:
        if spec.stage == "finetune" and spec.arm != "scratch":
            source = by_id[spec.init].overrides["ifm.name"]
            assert spec.transplant == (spec.arm == "transplant")
            assert source == ("mini" if spec.arm == "transplant" else "mini-seed1")
            assert spec.overrides["ifm.name"] == "mini-seed1"
    # an arm transplant with nothing to transplant from is refused before any work
    grid_file.write_text(yaml.safe_dump({"base": "demo", "arms": ["transplant"]}))
    with pytest.raises(Exception, match="arm transplant needs `transplant:`"):
        load_grid(str(grid_file))
