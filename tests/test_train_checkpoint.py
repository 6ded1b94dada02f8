"""Checkpoints: exact resume of model + AdamW + RNG, hash-verified pairs, crash safety."""

import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from advise.train.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from advise.train.optim import build_optimizer, lr_at, set_lr

TOTAL_STEPS = 6


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)
    )


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    """Steps whose data depend on the step index and whose dropout uses the global RNG."""
    model.train()
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        inputs, labels = torch.randn(6, 5, generator=generator), torch.arange(6) % 3
        set_lr(optimizer, lr_at(step, TOTAL_STEPS, 2, peak_lr=0.05))
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def save_training(stem, model, optimizer, step):
    optimizer_tensors, optimizer_meta = optimizer_to_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | optimizer_tensors
    state = {"step": step, "optimizer": optimizer_meta, "rng": rng_state()}
    return save_checkpoint(stem, tensors, state)


def test_resume_is_bit_identical(tmp_path):
    model = make_model(seed=0)
    optimizer = build_optimizer(model.named_parameters(), 0.05, weight_decay=0.01)
    train(model, optimizer, range(3))
    save_training(tmp_path / "last", model, optimizer, step=3)

    resumed = make_model(seed=1)  # different initial weights: everything must come from disk
    resumed_optimizer = build_optimizer(resumed.named_parameters(), 0.05, weight_decay=0.01)
    tensors, state = load_checkpoint(tmp_path / "last")
    resumed.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer_from_tensors(resumed_optimizer, tensors, state["optimizer"])
    assert state["step"] == 3

    # The restored optimiser state equals the saved one exactly, hyper-parameters included.
    saved, restored = optimizer.state_dict(), resumed_optimizer.state_dict()
    assert restored["param_groups"] == saved["param_groups"]
    for index, values in saved["state"].items():
        for name, value in values.items():
            assert torch.equal(restored["state"][index][name], value), (index, name)

    # Continue both runs: the resumed one first (it changes the global RNG), then the original
    # from the same RNG state it had at saving time.
    set_rng_state(state["rng"])
    train(resumed, resumed_optimizer, range(3, TOTAL_STEPS))
    set_rng_state(state["rng"])
    train(model, optimizer, range(3, TOTAL_STEPS))
    for (name, expected), actual in zip(
        model.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(actual, expected), name


def draws():
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.randn()],
        torch.rand(3).tolist() + torch.randint(0, 1000, (2,)).tolist(),
    )


def test_rng_state_round_trip_through_json():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached second Gaussian in each generator
    np.random.randn()
    state = json.loads(json.dumps(rng_state()))
    expected = draws()
    assert draws() != expected  # the generators moved on
    set_rng_state(state)
    assert draws() == expected
    with pytest.raises(CheckpointError, match="RNG"):
        set_rng_state({"python": {}})


@pytest.fixture
def saved(tmp_path):
    tensors = {"weight": torch.arange(12.0).reshape(3, 4), "count": torch.tensor(7)}
    save_checkpoint(tmp_path / "ckpt", tensors, {"step": 5, "note": "first"})
    return tmp_path / "ckpt", tensors


@pytest.mark.parametrize("suffix", ["", ".json", ".safetensors"])
def test_load_by_stem_or_either_file(saved, suffix):
    stem, tensors = saved
    loaded, state = load_checkpoint(f"{stem}{suffix}")
    assert state == {"step": 5, "note": "first"}
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_shared_and_strided_tensors_are_saved(tmp_path):
    base = torch.arange(6.0).reshape(2, 3)
    tensors = {"a": base, "a_again": base, "column": base[:, 1]}
    save_checkpoint(tmp_path / "shared", tensors, {})
    loaded, _ = load_checkpoint(tmp_path / "shared")
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_flipped_bytes_are_detected(saved):
    stem, _ = saved
    tensor_path, _ = checkpoint_paths(stem)
    data = bytearray(tensor_path.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor payload: the file still parses as safetensors
    tensor_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="torn|corrupt"):
        load_checkpoint(stem)


def test_hash_mismatch_missing_and_bad_json_are_detected(saved):
    stem, _ = saved
    tensor_path, state_path = checkpoint_paths(stem)
    record = json.loads(state_path.read_text())
    record["tensor_sha256"] = "0" * 64
    state_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(stem)
    state_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(stem)
    tensor_path.unlink()
    state_path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(stem)
    assert issubclass(CheckpointError, ValueError)


def test_missing_tensor_file_is_detected(saved):
    stem, _ = saved
    checkpoint_paths(stem)[0].unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(stem)


@pytest.mark.parametrize("failing_call", [1, 2, 3, 4])
def test_crash_during_save_never_yields_a_mixed_checkpoint(saved, monkeypatch, failing_call):
    """A save renames four files: the kept previous pair (2), then the tensors, then the JSON.
    A crash at any of them leaves a loadable checkpoint equal to the old one; a crash at the
    JSON rename (tensors already replaced) tears the newest pair, and loading falls back to the
    previous pair with a warning, never mixing old and new."""
    stem, tensors = saved
    real_replace = os.replace
    calls = []

    def crashing_replace(source, target):
        calls.append(target)
        if len(calls) == failing_call:
            raise OSError("simulated crash")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(stem, {"weight": torch.zeros(3, 4), "count": torch.tensor(8)}, {"step": 6})
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p for p in stem.parent.iterdir() if p.name.endswith(".tmp")]
    if failing_call == 4:
        with pytest.warns(UserWarning, match="torn"):
            loaded, state = load_checkpoint(stem)
    else:
        loaded, state = load_checkpoint(stem)
    assert state["step"] == 5
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_torn_pair_without_previous_is_refused(saved):
    stem, _ = saved
    tensor_path, _ = checkpoint_paths(stem)
    tensor_path.write_bytes(tensor_path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="torn"):
        load_checkpoint(stem)


def test_unserialisable_state_leaves_previous_checkpoint(saved):
    stem, _ = saved
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(stem, {"weight": torch.zeros(1)}, {"bad": object()})
    assert load_checkpoint(stem)[1]["step"] == 5


def test_optimizer_state_for_other_parameters_is_refused():
    model = make_model(seed=0)
    optimizer = build_optimizer(model.named_parameters(), 0.05, weight_decay=0.01)
    train(model, optimizer, range(1))
    tensors, meta = optimizer_to_tensors(optimizer)
    other = nn.Sequential(nn.Linear(5, 8), nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match="parameter"):
        optimizer_from_tensors(build_optimizer(other.named_parameters(), 0.05, 0.01), tensors, meta)
    with pytest.raises(CheckpointError, match="missing tensor"):
        optimizer_from_tensors(optimizer, {}, meta)
