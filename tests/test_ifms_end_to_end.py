"""Every registry IFM, randomly initialised on request, runs the whole pipeline on a fabricated
tree of every annotation format: one PRP pre-training step, one fine-tuning step from it, and
a multi-view evaluation. Frames are tiny (a 2 x 2 token grid for the ViTs), so even the
ViT-L models take seconds; the token grid and width are asserted per IFM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fabricate import FORMATS, dataset_tree, tiny_config

from advise.config import load_config
from advise.data import loaders
from advise.models.build import build_frozen_ifm
from advise.models.ifm import IFM_REGISTRY
from advise.runs import evaluate_checkpoint, finetune, pretrain

# name -> (input size in pixels, embedding width, token grid at that size)
IFMS = {
    "mini": (32, 96, (4, 4)),
    "mini-seed1": (32, 96, (4, 4)),
    "mini-vit": (32, 96, (4, 4)),
    "clip-b16": (32, 768, (2, 2)),
    "clip-l14": (28, 1024, (2, 2)),
    "dinov2-b14": (28, 768, (2, 2)),
    "dinov2-l14": (28, 1024, (2, 2)),
    "mae-b16": (32, 768, (2, 2)),
    "mae-l16": (32, 1024, (2, 2)),
    "vit-b16": (32, 768, (2, 2)),
    "mobilenetv2-in1k": (32, 1280, (2, 2)),
    "clip-b16+dinov2-b14": (28, 1536, (1, 1)),  # 28 px: 1 x 1 (patch 16) and 2 x 2 -> 1 x 1
    "clip-b16+mobilenetv2-in1k": (32, 2048, (2, 2)),
}


def test_every_registry_ifm_is_covered():
    assert set(IFM_REGISTRY) <= set(IFMS)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, dict[str, object]]:
    root = tmp_path_factory.mktemp("formats")
    return {name: dataset_tree(name, root / name) for name in FORMATS}


@pytest.mark.parametrize("name", list(IFMS))
def test_pretrain_finetune_evaluate_on_every_format(name, trees, tmp_path):
    size, width, grid = IFMS[name]
    base = tiny_config(tmp_path / "tiny.yaml", ifm={"name": name, "img_size": size})
    first = load_config(str(base))
    ifm = build_frozen_ifm(first.ifm, torch.device("cpu"))  # once per IFM, shared by formats
    frames = torch.zeros(1, first.data.num_frames, 3, size, size)
    assert ifm(frames).shape == (1, width, first.data.num_frames, *grid)
    assert ifm.grid_size() == grid and ifm.embed_dim == width

    for format_name, overrides in trees.items():
        config = first.replace(overrides)
        train_videos = len(loaders.read_split(config.data, "train").records)
        config = config.replace({"train.batch_size": train_videos, "train.epochs": 1})
        out = tmp_path / format_name
        prp = pretrain(config, out / "prp", ifm=ifm)
        assert prp.steps == 1, format_name
        ft = finetune(config, out / "ft", init=prp.checkpoint, ifm=ifm)
        assert ft.steps == 1, format_name
        result = evaluate_checkpoint(
            config, ft.checkpoint, views=(2, 1), out_file=out / "eval.json", ifm=ifm
        )
        test_videos = len(loaders.read_split(config.data, "test").records)
        assert result["num_videos"] == test_videos == 2, format_name
        assert result["ifm"]["name"] == name and result["ifm"]["random_init"] is True
        assert result["data"]["format"] == format_name
        assert json.loads(Path(out / "eval.json").read_text())["views"] == "2x1"
