"""advise.train.tensorboard: metrics rows written as TensorBoard scalars and read back."""

import sys

import pytest

from advise.train.tensorboard import TensorBoardSink

ROWS = [
    {"kind": "step", "step": 2, "epoch": 1, "lr": 0.01, "loss": 2.5, "acc": 12.5, "num": 8,
     "data_seconds": 0.01, "step_seconds": 0.2, "time": 1796000000.0},
    {"kind": "step", "step": 4, "epoch": 1, "lr": 0.008, "num": 0, "data_seconds": 0.01,
     "step_seconds": 0.2, "time": 1796000001.0},  # no update: no loss, no acc
    {"kind": "epoch", "epoch": 1, "step": 4, "loss": 2.25, "acc": 25.0, "lr": 0.008,
     "data_share": 0.05, "skipped_videos": 0, "data_seconds": 0.02, "step_seconds": 0.4,
     "elapsed": 12.3, "time": 1796000002.0},
    {"kind": "val", "epoch": 1, "step": 4, "top1": 55.0, "top5": 90.0, "views": "1x1",
     "time": 1796000003.0},
    {"kind": "step", "step": 6, "epoch": 2, "lr": 0.005, "loss": 1.5, "acc": 50.0, "num": 8,
     "time": 1796000004.0},
]  # fmt: skip


def read_scalars(log_dir) -> dict[str, list[tuple[int, float, float]]]:
    """(step, value, wall time) of every scalar in the event files of `log_dir`, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(event.step, event.value, event.wall_time) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


def test_rows_become_scalars_at_their_global_step(tmp_path):
    with TensorBoardSink(tmp_path / "tensorboard") as sink:
        for row in ROWS:
            sink.write(dict(row))
    scalars = read_scalars(tmp_path / "tensorboard")
    assert sorted(scalars) == sorted([
        "train/loss", "train/acc", "train/lr", "epoch/loss", "epoch/acc", "epoch/data_share",
        "val/top1", "val/top5",
    ])  # fmt: skip
    values = {tag: [(step, value) for step, value, _ in events] for tag, events in scalars.items()}
    assert values["train/loss"] == [(2, 2.5), (6, 1.5)]  # step 4 made no update
    assert values["train/acc"] == [(2, 12.5), (6, 50.0)]
    assert [step for step, _ in values["train/lr"]] == [2, 4, 6]
    assert [value for _, value in values["train/lr"]] == pytest.approx([0.01, 0.008, 0.005])
    assert values["epoch/loss"] == [(4, 2.25)] and values["epoch/acc"] == [(4, 25.0)]
    assert values["epoch/data_share"] == [(4, pytest.approx(0.05))]
    assert values["val/top1"] == [(4, 55.0)] and values["val/top5"] == [(4, 90.0)]
    assert [wall for _, _, wall in scalars["val/top1"]] == [1796000003.0]  # the row's time


def test_legacy_rows_and_rows_without_a_step(tmp_path):
    sink = TensorBoardSink(tmp_path)
    sink.write({"step": 3, "epoch": 1, "lr": 0.1, "loss": 1.0, "acc": 10.0})
    sink.write({"epoch": 1, "step": 3, "train_loss": 0.75, "train_acc": 20.0})
    sink.write({"kind": "epoch", "epoch": 1, "loss": 9.0})  # no step: nothing to place it at
    sink.close()
    sink.close()  # a second close does nothing
    values = {
        tag: [event[:2] for event in events] for tag, events in read_scalars(tmp_path).items()
    }
    assert values == {
        "train/loss": [(3, 1.0)], "train/acc": [(3, 10.0)], "train/lr": [(3, pytest.approx(0.1))],
        "epoch/loss": [(3, 0.75)], "epoch/acc": [(3, 20.0)],
    }  # fmt: skip
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(dict(ROWS[0]))


def test_without_tensorboard_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install tensorboard.*advise\[tensorboard\]"):
        TensorBoardSink(tmp_path / "tensorboard")
    assert not (tmp_path / "tensorboard").exists()
