"""A checkpoint's JSON state and its tensors are bound both ways: an edited step, a JSON from
another checkpoint or altered tensors are refused (exit 2, both files named) wherever a
checkpoint is read; an intact pair resumes bit-exact; version 1 pairs still load."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from fabricate import tiny_config, ucf_tree

from advise.cli import main
from advise.train.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    save_checkpoint,
)


def run_cli(*args: str | Path) -> int:
    return main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return ucf_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tree) -> tuple[Path, Path]:
    """(config, run folder) of a finished 2-epoch pre-training run (3 steps per epoch):
    `last` is at step 6 and `last.previous` at step 3."""
    folder = tmp_path_factory.mktemp("finished")
    config = tiny_config(folder / "c.yaml", data={"root": str(tree)})
    assert run_cli("pretrain", "--config", config, "--out", folder / "run") == 0
    stem = folder / "run" / "checkpoints" / "last"
    assert load_checkpoint(stem)[1]["step"] == 6
    assert load_checkpoint(f"{stem}.previous")[1]["step"] == 3
    return config, folder / "run"


@pytest.fixture
def run(tmp_path, finished) -> Path:
    """A copy of the finished run to tamper with."""
    return Path(shutil.copytree(finished[1], tmp_path / "run"))


def edit_state(state_path: Path, **changes) -> None:
    record = json.loads(state_path.read_text())
    record["state"].update(changes)
    state_path.write_text(json.dumps(record, indent=1))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("advise: error: ")
    return err[-1]


def test_an_edited_step_is_refused_by_resume(run, finished, capsys):
    tensor_path, state_path = checkpoint_paths(run / "checkpoints" / "last")
    edit_state(state_path, step=5)
    before = state_path.read_bytes()
    assert run_cli("pretrain", "--config", finished[0], "--out", run, "--resume") == 2
    error = one_line_error(capsys)
    assert "last.json says step 5 but last.safetensors was written at step 6" in error
    assert str(state_path) in error and str(tensor_path) in error
    assert state_path.read_bytes() == before  # nothing was trained or saved


@pytest.mark.parametrize("command", ["init", "evaluate", "predict"])
def test_every_reader_refuses_an_edited_step(run, finished, tree, command, capsys):
    stem = run / "checkpoints" / "last"
    edit_state(checkpoint_paths(stem)[1], step=40)
    video = next(tree.rglob("*.mp4"))
    args = {
        "init": ["finetune", "--config", finished[0], "--out", run.parent / "ft", "--init", stem],
        "evaluate": ["evaluate", "--config", finished[0], "--ckpt", f"{stem}.safetensors"],
        "predict": ["predict", video, "--ckpt", f"{stem}.safetensors"],
    }[command]
    assert run_cli(*args) == 2
    assert "last.json says step 40 but last.safetensors was written at step 6" in (
        one_line_error(capsys)
    )


def test_jsons_swapped_between_checkpoints_are_refused(run, finished, capsys):
    """last and last.previous exchange their JSON files: neither pair is one checkpoint."""
    last, kept = run / "checkpoints" / "last", run / "checkpoints" / "last.previous"
    last_json, kept_json = checkpoint_paths(last)[1], checkpoint_paths(kept)[1]
    last_text, kept_text = last_json.read_bytes(), kept_json.read_bytes()
    last_json.write_bytes(kept_text)
    kept_json.write_bytes(last_text)
    assert run_cli("pretrain", "--config", finished[0], "--out", run, "--resume") == 2
    assert "last.json says step 3 but last.safetensors was written at step 6" in (
        one_line_error(capsys)
    )
    with pytest.raises(CheckpointError, match="says step 6 but .* written at step 3"):
        load_checkpoint(kept)


def test_a_json_of_another_checkpoint_at_the_same_step_is_refused(tmp_path):
    """Same step, other state (another run): the state hash tells them apart."""
    weights = {"w": torch.arange(4.0)}
    save_checkpoint(tmp_path / "a", weights, {"step": 2, "seed": 0})
    save_checkpoint(tmp_path / "b", {"w": torch.ones(4)}, {"step": 2, "seed": 1})
    shutil.copy(tmp_path / "b.json", tmp_path / "a.json")
    with pytest.raises(CheckpointError, match=r"a\.json's state .* is not the state a\.safet"):
        load_checkpoint(tmp_path / "a")
    # an edit of anything but the step (the tensor hash still agrees): the state hash refuses it
    edit_state(tmp_path / "b.json", seed=0)
    with pytest.raises(
        CheckpointError, match=r"b\.json does not match .*b\.safetensors: b\.json's"
    ):
        load_checkpoint(tmp_path / "b")


def test_altered_tensors_are_refused_even_with_a_previous_pair(run, finished, capsys):
    tensor_path, state_path = checkpoint_paths(run / "checkpoints" / "last")
    data = bytearray(tensor_path.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor: still a valid safetensors file
    tensor_path.write_bytes(bytes(data))
    assert run_cli("pretrain", "--config", finished[0], "--out", run, "--resume") == 2
    error = one_line_error(capsys)
    assert f"{tensor_path} does not match {state_path}" in error
    assert "corrupt or altered" in error and "last.previous" in error


def test_an_intact_pair_resumes_to_the_same_weights(run, finished):
    """Resume from the step-3 pair (as if the run had stopped there): the run ends with the
    step-6 weights of the uninterrupted run, bit for bit, and its checkpoint is bound."""
    last, kept = run / "checkpoints" / "last", run / "checkpoints" / "last.previous"
    for source, target in zip(checkpoint_paths(kept), checkpoint_paths(last), strict=True):
        shutil.copy(source, target)
    assert run_cli("pretrain", "--config", finished[0], "--out", run, "--resume") == 0
    expected, expected_state = load_checkpoint(finished[1] / "checkpoints" / "last")
    got, got_state = load_checkpoint(last)
    assert got_state["step"] == expected_state["step"] == 6
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    with open(checkpoint_paths(last)[0], "rb") as file:
        header = json.loads(file.read(int.from_bytes(file.read(8), "little")))
    assert header["__metadata__"]["step"] == "6"
    assert len(header["__metadata__"]["state_sha256"]) == 64


def write_version_1(stem: Path, tensors: dict, state: dict) -> None:
    """A pair as advise wrote it before the binding (checkpoint format version 1)."""
    data = safetensors.torch.save(tensors, metadata={"format": FORMAT})
    Path(f"{stem}.safetensors").write_bytes(data)
    record = {
        "format": FORMAT,
        "version": 1,
        "tensor_sha256": hashlib.sha256(data).hexdigest(),
        "tensor_bytes": len(data),
        "state": state,
    }
    Path(f"{stem}.json").write_text(json.dumps(record, indent=1))


def test_a_version_1_pair_loads_with_a_warning_and_the_next_save_binds_it(tmp_path):
    tensors = {"w": torch.arange(3.0)}
    write_version_1(tmp_path / "old", tensors, {"step": 4})
    with pytest.warns(UserWarning, match="version 1 checkpoint: its JSON state is not bound"):
        loaded, state = load_checkpoint(tmp_path / "old")
    assert state == {"step": 4} and torch.equal(loaded["w"], tensors["w"])
    save_checkpoint(tmp_path / "old", loaded, {"step": 5})
    edit_state(tmp_path / "old.json", step=4)
    with pytest.raises(CheckpointError, match="says step 4 but old.safetensors .* step 5"):
        load_checkpoint(tmp_path / "old")


def test_a_version_2_json_over_unbound_tensors_is_refused(tmp_path):
    write_version_1(tmp_path / "x", {"w": torch.zeros(2)}, {"step": 1})
    record = json.loads((tmp_path / "x.json").read_text())
    record["version"] = 2
    (tmp_path / "x.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="carries no state_sha256"):
        load_checkpoint(tmp_path / "x")
