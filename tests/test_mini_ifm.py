"""The mini IFM: architecture, cost, and the train-once weight cache."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from advise import mini_ifm
from advise.mini_ifm import (
    MINI_EMBED_DIM,
    MINI_IMG_SIZE,
    MINI_MEAN,
    MINI_STD,
    build_mini_ifm_model,
    ensure_mini_ifm,
    load_mini_ifm,
    recipe_tag,
)


def test_forward_features_is_an_8x8_token_grid():
    model = build_mini_ifm_model().eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, MINI_IMG_SIZE, MINI_IMG_SIZE))
        logits = model(torch.randn(2, 3, MINI_IMG_SIZE, MINI_IMG_SIZE))
    assert features.shape == (2, MINI_EMBED_DIM, 8, 8)
    assert logits.shape == (2, 10)
    assert model.num_features == MINI_EMBED_DIM
    config = model.pretrained_cfg
    assert config["mean"] == MINI_MEAN and config["std"] == MINI_STD
    assert config["input_size"] == (3, MINI_IMG_SIZE, MINI_IMG_SIZE)


def test_cost_per_frame_is_small():
    model = build_mini_ifm_model().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward_features(torch.randn(1, 3, MINI_IMG_SIZE, MINI_IMG_SIZE))
    macs = counter.get_total_flops() // 2
    assert 5e6 < macs <= 20e6
    assert sum(p.numel() for p in model.parameters()) < 400_000


def test_recipe_tag_tracks_the_recipe():
    assert recipe_tag(2, 0) == recipe_tag(2, 0)
    assert len({recipe_tag(2, 0), recipe_tag(3, 0), recipe_tag(2, 1)}) == 3


def test_ensure_trains_once_then_reuses_the_file(tmp_path, monkeypatch):
    path = ensure_mini_ifm(tmp_path, progress=False, steps=2)
    assert path.parent == tmp_path and path.suffix == ".safetensors"
    assert recipe_tag(2) in path.name
    model = build_mini_ifm_model()
    model.load_state_dict(load_file(str(path)), strict=True)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind

    def must_not_train(**_):
        raise AssertionError("trained again although the weights are cached")

    monkeypatch.setattr(mini_ifm, "train_mini_ifm", must_not_train)
    assert ensure_mini_ifm(tmp_path, progress=False, steps=2) == path
    loaded = load_mini_ifm(path)
    assert not loaded.training
    for name, tensor in load_file(str(path)).items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_default_cache_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mini_ifm.default_cache_dir() == tmp_path / "advise"


def test_concurrent_callers_train_once(tmp_path, monkeypatch):
    calls = []

    def slow_train(steps, seed, progress, family):
        calls.append(steps)
        time.sleep(0.3)
        model = build_mini_ifm_model().eval()
        model.heldout_accuracy = 0.0
        return model

    monkeypatch.setattr(mini_ifm, "train_mini_ifm", slow_train)
    paths = []
    workers = [
        threading.Thread(target=lambda: paths.append(ensure_mini_ifm(tmp_path, False, steps=5)))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert calls == [5] and len(set(paths)) == 1 and len(paths) == 3
    build_mini_ifm_model().load_state_dict(load_file(str(paths[0])), strict=True)


@pytest.mark.slow
def test_full_recipe_reaches_useful_still_accuracy(tmp_path):
    model = mini_ifm.train_mini_ifm(progress=False)
    assert model.heldout_accuracy > 0.8


def test_training_gives_the_same_weights_whatever_the_callers_thread_count():
    """The cache file's name promises one set of weights: a caller on two threads gets the
    weights of a caller on one (training pins its own thread count), and keeps its setting."""
    threads = torch.get_num_threads()
    try:
        weights = []
        for count in (1, 2):
            torch.set_num_threads(count)
            model = mini_ifm.train_mini_ifm(steps=3, progress=False)
            assert torch.get_num_threads() == count
            weights.append(model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_the_recipe_keeps_its_cache_name():
    """Every number measured on the mini IFM used the weights of this recipe tag; a change to
    the recipe code that changes it must be deliberate (and re-measure them)."""
    assert recipe_tag() == "s1200-582efad9d2"


def test_the_mini_vit_is_another_family_on_the_same_token_grid(tmp_path):
    from advise.config import load_config
    from advise.models.build import build_frozen_ifm

    model = mini_ifm.build_mini_model("vit").eval()
    assert len(model.blocks) == 4  # attention mixes the tokens a ConvNet trunk makes
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 64, MINI_EMBED_DIM)
    assert recipe_tag(family="vit") != recipe_tag()
    path = ensure_mini_ifm(tmp_path, progress=False, steps=2, family="vit")
    assert path.name.startswith("mini_vit-") and recipe_tag(2, family="vit") in path.name
    loaded = load_mini_ifm(path, family="vit")  # strictly, the classifier included
    assert isinstance(loaded.blocks[0].attn, torch.nn.Module)
    with pytest.raises(RuntimeError):
        build_mini_ifm_model().load_state_dict(load_file(str(path)), strict=True)
    config = load_config("demo", {"ifm.name": "mini-vit", "ifm.random_init": True})
    ifm = build_frozen_ifm(config.ifm, torch.device("cpu"))
    tokens = ifm(torch.randn(1, 2, 3, 64, 64))  # [B, T, 3, H, W]
    assert tokens.shape == (1, MINI_EMBED_DIM, 2, 8, 8)  # the mini IFM's grid and width
    with pytest.raises(ValueError, match="family must be one of"):
        mini_ifm.build_mini_model("resnet")
