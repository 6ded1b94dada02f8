"""Distributed data parallel on CPU: real `torchrun` launches with the gloo backend.

- 2 processes with SyncBatchNorm follow the loss trajectory of 1 process with the same global
  batch (tolerance: 1e-4 relative; the global batch-norm statistics are summed in another
  order than one process computes them, so the last bits differ).
- A DDP run killed mid-run and resumed ends with the weights of an uninterrupted DDP run.
- Evaluation is exact with 1, 2 or 3 processes (no padded duplicates, gathered by video).
- Extraction split over 2 processes writes the same store as 1 process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from fabricate import tiny_config, ucf_tree, wait_for_checkpoint_step

from advise.train.checkpoint import load_checkpoint

ENVIRONMENT = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return ucf_tree(tmp_path_factory.mktemp("data") / "tree")


def advise(*args, processes: int = 1, **popen) -> list[str]:
    """The command line of `advise ARGS` under torchrun with `processes` processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    launcher += ["--master_port", str(29500 + os.getpid() % 1000)]
    return [*launcher, "-m", "advise.cli", *[str(arg) for arg in args]]


def run(*args, processes: int = 1) -> subprocess.CompletedProcess:
    result = subprocess.run(
        advise(*args, processes=processes), env=ENVIRONMENT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if json.loads(line).get("kind") == "step"]


def model_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(run_dir / "checkpoints" / "last")
    return {key: value for key, value in tensors.items() if key.startswith("model.")}


def test_two_processes_follow_one_process(tmp_path, tree):
    config = tiny_config(
        tmp_path / "c.yaml",
        data={"root": str(tree)},
        train={"epochs": 3, "batch_size": 2, "sync_bn": True},
    )
    run("pretrain", "--config", config, "--out", tmp_path / "one", processes=1)
    run("pretrain", "--config", config, "--out", tmp_path / "two", processes=2)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 9  # 3 epochs x 3 global batches of 2 videos
    assert two == pytest.approx(one, rel=1e-4)
    expected, got = model_tensors(tmp_path / "one"), model_tensors(tmp_path / "two")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=1e-4)
    # only rank 0 wrote: one line per step, one run.json
    assert json.loads((tmp_path / "two" / "run.json").read_text())["stage"] == "pretrain"


def kill_run(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers. torchrun starts each worker in a session of its own,
    so killing the launcher's process group alone left them training and saving (measured:
    the checkpoint went from step 4 to 12 within 0.4 s of the kill)."""
    listed = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True)
    workers = [int(pid) for pid in listed.stdout.split()]
    os.killpg(process.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    process.wait()
    for pid in workers:  # gone, or a zombie: either way it writes nothing more
        stat = Path(f"/proc/{pid}/stat")
        while stat.exists() and stat.read_text().split()[2] != "Z":
            time.sleep(0.01)


def test_a_killed_ddp_run_resumes_to_the_same_weights(tmp_path, tree):
    config = tiny_config(
        tmp_path / "c.yaml",
        data={"root": str(tree)},
        train={"epochs": 4, "checkpoint_every": 1, "batch_size": 2},
    )
    run("pretrain", "--config", config, "--out", tmp_path / "reference", processes=2)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        advise("pretrain", "--config", config, "--out", interrupted, processes=2),
        env=ENVIRONMENT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # torchrun and its workers: one process group to kill
    )
    state_file = interrupted / "checkpoints" / "last.json"
    wait_for_checkpoint_step(process, state_file, 3)
    kill_run(process)
    killed_at = load_checkpoint(state_file)[1]["step"]
    assert 3 <= killed_at < 12

    run("pretrain", "--config", config, "--out", interrupted, "--resume", processes=2)
    expected, got = model_tensors(tmp_path / "reference"), model_tensors(interrupted)
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert losses(interrupted) == losses(tmp_path / "reference")


def test_evaluation_is_exact_with_1_2_and_3_processes(tmp_path, tree):
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(tree)}, train={"epochs": 1})
    run("finetune", "--config", config, "--out", tmp_path / "ft", processes=1)
    checkpoint = tmp_path / "ft" / "checkpoints" / "last.safetensors"
    results = []
    for processes in (1, 2, 3):
        out = tmp_path / f"eval{processes}"
        run("evaluate", "--config", config, "--ckpt", checkpoint, "--views", "3x1", "--out", out,
            processes=processes)  # fmt: skip
        results.append(json.loads((out / "eval-3x1.json").read_text()))
    for result in results[1:]:
        assert result["num_videos"] == results[0]["num_videos"] == 4  # 4 test videos, once each
        for key in ("top1", "top5", "single_view_top1", "confusion_matrix", "per_class"):
            assert result[key] == results[0][key], key


def test_extraction_split_over_processes_writes_the_same_store(tmp_path, tree):
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(tree)})
    run("extract", "--config", config, "--out", tmp_path / "one", processes=1)
    run("extract", "--config", config, "--out", tmp_path / "two", processes=2)
    files = {
        path.relative_to(tmp_path / "one"): path.read_bytes()
        for path in (tmp_path / "one").rglob("*")
        if path.is_file() and not path.name.startswith("done.")
    }
    assert len(files) == 10 + 2  # videos, store.json, manifest.json
    for relative, content in files.items():
        assert (tmp_path / "two" / relative).read_bytes() == content, relative


def test_byol_two_processes_follow_one_process(tmp_path, tree):
    """The contrastive pretext under DDP: the momentum target, updated in every process from
    the same online weights, ends as one process's does."""
    config = tiny_config(
        tmp_path / "c.yaml",
        data={"root": str(tree)},
        train={"epochs": 3, "batch_size": 4, "sync_bn": True},
    )
    values = yaml.safe_load(config.read_text())
    values["pretext"] = {"kind": "byol", "byol": {"dim": 8, "hidden": 16, "momentum": 0.9}}
    config.write_text(yaml.safe_dump(values))
    run("pretrain", "--config", config, "--out", tmp_path / "one", processes=1)
    run("pretrain", "--config", config, "--out", tmp_path / "two", processes=2)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 3  # 3 epochs x 1 global batch of 4 videos
    assert two == pytest.approx(one, rel=1e-4)
    expected = load_checkpoint(tmp_path / "one" / "checkpoints" / "last")[0]
    got = load_checkpoint(tmp_path / "two" / "checkpoints" / "last")[0]
    assert expected.keys() == got.keys() and any(key.startswith("task.target.") for key in got)
    for key in expected:
        if key.startswith(("model.", "task.")) and "num_batches_tracked" not in key:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=1e-4, msg=key)
