"""Tables (markdown) and figures (matplotlib) for run results."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def columns(pretext: Any) -> list[tuple[str, str]]:
    """(result key, column title) of a results table; the pretext (`advise.pretexts`) names its
    own measure (key `<kind>_<metric>`) and its initialisation."""
    return [
        (f"{pretext.kind}_{pretext.metric}", pretext.metric_label),
        ("scratch_top1", "scratch"),
        ("pretrained_top1", f"{pretext.kind.upper()} init"),
        ("delta_acc", "dAcc"),
        ("avgpool_top1", "avg-pool"),
        ("tmm_t1_top1", "TMM t=1"),
    ]


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "| "
        + " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        + " |"
        for line in [header, *rows]
    ]
    lines.insert(1, "| " + " | ".join("-" * width for width in widths) + " |")
    return "\n".join(lines)


def results_table(tasks: dict[str, dict[str, float]], pretext: Any) -> str:
    """One row per task; percentages, dAcc signed."""
    rows = []
    for task, values in tasks.items():
        cells = [task]
        for key, _ in columns(pretext):
            value = values.get(key)
            if value is None:
                cells.append("-")
            else:
                cells.append(f"{value:+.1f}" if key == "delta_acc" else f"{value:.1f}")
        rows.append(cells)
    return markdown_table(rows, ["task", *(title for _, title in columns(pretext))])


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch records of a run folder's metrics.jsonl (`advise.plot.read_metrics`); none
    for a folder without one."""
    from advise.plot import read_metrics

    if not (run_dir / "metrics.jsonl").exists():
        return []
    return read_metrics(run_dir)["epoch"]


def plot_curves(curves: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> Path:
    """One panel per group (e.g. pre-training, each task): training loss per epoch per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(curves)
    figure, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for axis, group in zip(axes[0], groups, strict=True):
        for name, history in curves[group].items():
            if history:
                epochs = [record["epoch"] for record in history]
                axis.plot(epochs, [record["loss"] for record in history], label=name)
        axis.set_title(group)
        axis.set_xlabel("epoch")
        axis.set_ylabel("training loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    return path


def plot_confusion(
    confusion: list[list[int]], class_names: list[str], path: Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (true class down, predicted across), per-class top-1
    in the diagonal. Class names label the axes up to 60 classes; beyond, indices do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    num_classes = len(class_names)
    side = min(4 + 0.22 * num_classes, 24)
    figure, axis = plt.subplots(figsize=(side + 1.5, side))
    image = axis.imshow(shares, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    if num_classes <= 60:
        ticks = range(num_classes)
        axis.set_xticks(ticks, class_names, rotation=90, fontsize=7)
        axis.set_yticks(ticks, class_names, fontsize=7)
        if num_classes <= 20:
            for row in range(num_classes):
                for column in range(num_classes):
                    if counts[row, column]:
                        colour = "black" if shares[row, column] > 0.5 else "white"
                        axis.text(column, row, int(counts[row, column]), ha="center",
                                  va="center", fontsize=7, color=colour)  # fmt: skip
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title or "confusion matrix")
    figure.tight_layout()
    save_figure(figure, path)
    return path


def save_figure(figure: Any, path: Path, dpi: int = 120) -> None:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a file) and
    close it."""
    import io

    import matplotlib.pyplot as plt

    from advise.files import atomic_write

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    atomic_write(path, buffer.getbuffer())


def spread_text(values: list[float]) -> str:
    """Values over seeds as 'mean (min to max)'; one value as itself; none as '-'."""
    import statistics

    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ({min(values):.1f} to {max(values):.1f})"
