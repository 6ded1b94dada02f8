"""advise.plot: metrics.jsonl read by kind (legacy rows renamed, a torn last line skipped)
and one PNG of the training curves of several runs."""

import json

import matplotlib.image
import pytest

import advise.report
from advise.plot import plot_runs, read_metrics, run_labels, steps_per_epoch

STEPS_PER_EPOCH = 6


def new_rows(epochs: int = 3, validate: bool = True, lr: float = 0.01) -> list[dict]:
    """Rows as advise train writes them: a step row every 2 steps, an epoch row (and a val
    row) after each epoch; step 3 of each epoch made no update (no loss, no acc)."""
    rows, time = [], 1796000000.0
    for epoch in range(1, epochs + 1):
        for step in range((epoch - 1) * STEPS_PER_EPOCH + 2, epoch * STEPS_PER_EPOCH + 1, 2):
            row = {"kind": "step", "step": step, "epoch": epoch, "lr": lr * (1 - step / 20),
                   "num": 8, "data_seconds": 0.01, "step_seconds": 0.2,
                   "time": time + step}  # fmt: skip
            if step % STEPS_PER_EPOCH != 4:
                row.update(loss=2.0 - 0.05 * step, acc=30.0 + step)
            rows.append(row)
        step = epoch * STEPS_PER_EPOCH
        rows.append({"kind": "epoch", "epoch": epoch, "step": step, "loss": 2.0 - 0.3 * epoch,
                     "acc": 30.0 + 5 * epoch, "lr": lr, "data_share": 0.05, "skipped_videos": 0,
                     "data_seconds": 0.1, "step_seconds": 1.2, "elapsed": 1.3 * epoch,
                     "time": time + step})  # fmt: skip
        if validate:
            rows.append({"kind": "val", "epoch": epoch, "step": step, "top1": 40.0 + 5 * epoch,
                         "top5": 90.0, "views": "1x1", "time": time + step + 0.5})  # fmt: skip
    return rows


def legacy_rows(epochs: int = 2) -> list[dict]:
    """Rows of older runs: no kind, epoch rows named train_loss / train_acc."""
    rows = []
    for epoch in range(1, epochs + 1):
        for step in range((epoch - 1) * STEPS_PER_EPOCH + 1, epoch * STEPS_PER_EPOCH + 1, 3):
            rows.append({"step": step, "epoch": epoch, "lr": 0.02, "loss": 1.8, "acc": 40.0,
                         "num": 8, "data_seconds": 0.01, "step_seconds": 0.2})  # fmt: skip
        rows.append({"epoch": epoch, "step": epoch * STEPS_PER_EPOCH, "train_loss": 1.5,
                     "train_acc": 45.0, "skipped_videos": 0, "data_seconds": 0.1,
                     "step_seconds": 1.2})  # fmt: skip
    return rows


def write_run(folder, rows, tail: str = ""):
    folder.mkdir(parents=True)
    text = "".join(json.dumps(row) + "\n" for row in rows) + tail
    (folder / "metrics.jsonl").write_text(text)
    (folder / "config.yaml").write_text("train:\n  epochs: 3\n")
    return folder


@pytest.fixture
def captured_figure(monkeypatch):
    """The figure plot_runs saves, kept open to look at its panels."""
    figures = []
    monkeypatch.setattr(advise.report, "save_figure", lambda figure, path: figures.append(figure))
    yield figures
    import matplotlib.pyplot as plt

    for figure in figures:
        plt.close(figure)


def test_plot_runs_writes_one_png_of_new_and_legacy_runs(tmp_path):
    runs = [
        write_run(tmp_path / "a" / "run", new_rows()),
        write_run(tmp_path / "b" / "run", new_rows(epochs=2, lr=0.02)),
        write_run(tmp_path / "old", legacy_rows()),
    ]
    out = plot_runs(runs, tmp_path / "figures" / "curves.png")
    assert out == tmp_path / "figures" / "curves.png" and out.stat().st_size > 10_000
    image = matplotlib.image.imread(out)
    assert image.shape == (900, 1440, 4)  # 12 x 7.5 inches at 120 dpi, RGBA
    assert image[..., :3].std() > 0.05  # not a blank page
    assert [path.name for path in out.parent.iterdir()] == ["curves.png"]  # no temporary left


def test_panels_share_epochs_and_draw_every_run(tmp_path, captured_figure):
    runs = [write_run(tmp_path / "a", new_rows()), write_run(tmp_path / "old", legacy_rows())]
    plot_runs(runs, tmp_path / "curves.png", labels=["new", "legacy"])
    (figure,) = captured_figure
    loss, acc, lr, top1 = figure.axes
    assert [axis.get_title() for axis in figure.axes] == [
        "training loss", "training accuracy (%)", "learning rate", "validation top-1 (%)"
    ]  # fmt: skip
    steps, epochs, legacy_steps, legacy_epochs = loss.get_lines()
    assert list(steps.get_xdata()[:3]) == pytest.approx([2 / 6, 1.0, 8 / 6])  # step / 6
    assert list(steps.get_ydata()[:2]) == pytest.approx([1.9, 1.7])  # step 4: no update
    assert list(epochs.get_xdata()) == [1.0, 2.0, 3.0] and epochs.get_linewidth() > 2
    assert list(legacy_epochs.get_ydata()) == [1.5, 1.5]  # train_loss read as loss
    assert steps.get_color() == epochs.get_color() != legacy_steps.get_color()
    assert len(acc.get_lines()) == 4 and len(lr.get_lines()) == 2
    assert list(top1.get_lines()[0].get_ydata()) == [45.0, 50.0, 55.0]
    assert {axis.get_shared_x_axes().joined(loss, axis) for axis in figure.axes} == {True}
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["new", "legacy"]


def test_validation_panel_says_when_no_run_has_validation_rows(tmp_path, captured_figure):
    runs = [write_run(tmp_path / "a", new_rows(validate=False)), write_run(tmp_path / "b", [])]
    plot_runs(runs, tmp_path / "curves.png")
    (figure,) = captured_figure
    top1 = figure.axes[3]
    assert not top1.get_lines()
    assert [text.get_text() for text in top1.texts] == ["no validation rows"]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["a", "b (no rows yet)"]


def test_default_labels_are_folder_names_told_apart_when_equal(tmp_path):
    assert run_labels([tmp_path / "x" / "run", tmp_path / "y" / "run", tmp_path / "z"]) == [
        "x/run", "y/run", "z"
    ]  # fmt: skip


def test_read_metrics_groups_rows_by_kind(tmp_path):
    rows = new_rows(epochs=2) + [{"kind": "note", "text": "resumed"}]
    metrics = read_metrics(write_run(tmp_path / "run", rows))
    assert [len(metrics[kind]) for kind in ("step", "epoch", "val", "note")] == [6, 2, 2, 1]
    assert metrics["epoch"][1] == rows[8]  # rows of the current format come back unchanged


def test_read_metrics_normalises_legacy_rows(tmp_path):
    metrics = read_metrics(write_run(tmp_path / "old", legacy_rows()))
    assert metrics["val"] == [] and len(metrics["step"]) == 4
    assert metrics["step"][0] == {"kind": "step", **legacy_rows()[0]}
    epoch = metrics["epoch"][0]
    assert epoch["kind"] == "epoch" and (epoch["loss"], epoch["acc"]) == (1.5, 45.0)
    assert "train_loss" not in epoch and "train_acc" not in epoch


@pytest.mark.parametrize("tail", ['{"kind": "step", "step": 13, "epo', '{"kind": "st\x00\x00\n'])
def test_torn_last_line_is_skipped(tmp_path, tail):
    """A run killed (or still writing) mid-line: every whole row is read, the torn one not."""
    metrics = read_metrics(write_run(tmp_path / "run", new_rows(epochs=2), tail=tail))
    assert len(metrics["step"]) == 6 and metrics["step"][-1]["step"] == 12


def test_bad_line_before_the_last_names_the_file_and_line(tmp_path):
    run = write_run(tmp_path / "run", new_rows(epochs=1))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON object"):
        read_metrics(run)


def test_missing_metrics_file_is_a_clear_error(tmp_path):
    demo = tmp_path / "demo"
    write_run(demo / "pretrain", new_rows(epochs=1))
    with pytest.raises(FileNotFoundError, match="expected a training run folder") as error:
        read_metrics(demo)
    assert str(demo / "metrics.jsonl") in str(error.value)
    assert str(demo / "pretrain") in str(error.value)  # where the runs are
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        read_metrics(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="demo"):
        plot_runs([demo], tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_plot_runs_rejects_bad_labels_and_names(tmp_path):
    run = write_run(tmp_path / "run", new_rows(epochs=1))
    with pytest.raises(ValueError, match="2 labels for 1 run folders"):
        plot_runs([run], tmp_path / "curves.png", labels=["a", "b"])
    with pytest.raises(ValueError, match=r"\*\.png"):
        plot_runs([run], tmp_path / "curves.pdf")


@pytest.mark.parametrize(
    "rows, expected",
    [
        (new_rows(epochs=2), 6.0),  # from the first epoch row
        ([row for row in new_rows(epochs=2) if row["kind"] == "step"], 6.0),  # step 12, epoch 2
        ([row for row in new_rows(epochs=1) if row["kind"] == "step"][:2], 4.0),  # a lower bound
        ([], None),
    ],
)
def test_steps_per_epoch_is_derived_from_the_rows(rows, expected):
    by_kind = {"step": [], "epoch": [], "val": []}
    for row in rows:
        by_kind[row["kind"]].append(row)
    assert steps_per_epoch(by_kind) == expected
