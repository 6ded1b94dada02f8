"""Training curves of one or more run folders from their metrics.jsonl, as one PNG.

A run folder's `metrics.jsonl` holds one JSON object per line, each with a `kind`:
"step" (a logged training step: step, epoch, lr, loss, acc, ...), "epoch" (the epoch's mean
loss and acc, lr, data_share, ...) or "val" (top1, top5 after an epoch). Rows of older runs
have no `kind`: an epoch row is the one with `train_loss` (and `train_acc`), any other is a
step row; `read_metrics` gives them the current kinds and names. Accuracies are percentages.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"
KINDS = ("step", "epoch", "val")
LEGACY_NAMES = {"train_loss": "loss", "train_acc": "acc"}  # legacy epoch rows


def read_metrics(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of `run_dir/metrics.jsonl` by kind, in file order: always the keys "step",
    "epoch" and "val" (lists, maybe empty), plus any other kind found.

    Legacy rows (no `kind`) are normalised: `train_loss`/`train_acc` become `loss`/`acc`. A
    last line that is not a whole JSON object (a run still writing, or killed mid-line) is
    skipped; a bad line anywhere else is a ValueError naming the file and the line. A folder
    without the file is a FileNotFoundError naming the path (and any sub-folders that have
    one, e.g. the runs of a demo folder).
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(_missing_metrics_message(run_dir))
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip("\x00 \t"):  # a crash can leave NULs or blanks
        lines.pop()
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a {type(row).__name__}, not an object")
        except ValueError as error:
            if number == len(lines):
                break  # partly written last line
            raise ValueError(
                f"{path}:{number}: not a JSON object ({error}); every line of a "
                f"{METRICS_NAME} is one row written by advise pretrain or finetune"
            ) from None
        row = normalise_row(row)
        rows.setdefault(row["kind"], []).append(row)
    return rows


def _missing_metrics_message(run_dir: Path) -> str:
    """What `read_metrics` says about a folder without metrics.jsonl."""
    if not run_dir.is_dir():
        return f"{run_dir}: no such run folder (expected a folder holding {METRICS_NAME})"
    nested = sorted(path.parent for path in run_dir.glob(f"*/**/{METRICS_NAME}"))
    message = (
        f"{run_dir / METRICS_NAME} not found: expected a training run folder (the --out of "
        f"advise pretrain or finetune) holding {METRICS_NAME}"
    )
    if nested:
        shown = ", ".join(str(folder) for folder in nested[:8])
        more = f" and {len(nested) - 8} more" if len(nested) > 8 else ""
        message += f"; these folders inside it have one: {shown}{more}"
    return message


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with a `kind`; a legacy row (none) gets its kind from its keys and current names."""
    if "kind" in row:
        return row
    if "train_loss" in row:
        renamed = {LEGACY_NAMES.get(key, key): value for key, value in row.items()}
        return {"kind": "epoch", **renamed}
    return {"kind": "val" if "top1" in row else "step", **row}


def steps_per_epoch(rows: dict[str, list[dict[str, Any]]]) -> float | None:
    """Training steps per epoch, derived from the rows (None when there are none to go by).

    An epoch row is written after its last step (step = epoch x steps per epoch), so the
    first one gives it exactly. Before the first epoch ends, step rows bound it from below
    (a row of epoch e has step <= e x steps per epoch): the smallest consistent value is
    taken, exact once the last step of an epoch has been logged.
    """
    for row in rows.get("epoch", []):
        if row.get("epoch", 0) > 0 and row.get("step", 0) > 0:
            return row["step"] / row["epoch"]
    bounds = [
        math.ceil(row["step"] / row["epoch"])
        for row in rows.get("step", [])
        if row.get("epoch", 0) > 0 and row.get("step", 0) > 0
    ]
    return float(max(bounds)) if bounds else None


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name; runs sharing a name are told apart by their last two parts."""
    names = [Path(run_dir).resolve().name for run_dir in run_dirs]
    return [
        name if names.count(name) == 1 else "/".join(Path(run_dir).resolve().parts[-2:])
        for name, run_dir in zip(names, run_dirs, strict=True)
    ]


def _column(
    rows: list[dict[str, Any]], key: str, per_epoch: float | None
) -> tuple[list[float], list[float]]:
    """(x in epochs, values of `key`) of the rows that have a number under `key` (a step
    without an update has no loss). x is step / steps per epoch when known (fractional for
    step rows), else the row's epoch."""
    xs, values = [], []
    for row in rows:
        value = row.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if per_epoch and "step" in row:
            xs.append(row["step"] / per_epoch)
        elif "epoch" in row:
            xs.append(float(row["epoch"]))
        else:
            continue
        values.append(float(value))
    return xs, values


PANELS = (  # (row key, panel title), left to right, top to bottom
    ("loss", "training loss"),
    ("acc", "training accuracy (%)"),
    ("lr", "learning rate"),
    ("top1", "validation top-1 (%)"),
)


def _plot_run(axes: dict[str, Any], rows: dict[str, list[dict[str, Any]]], colour: str) -> bool:
    """Draw one run's curves on the four panels; True if it drew anything."""
    per_epoch = steps_per_epoch(rows)
    drawn = False
    for key in ("loss", "acc"):
        xs, values = _column(rows["step"], key, per_epoch)
        drawn |= _line(axes[key], xs, values, color=colour, alpha=0.35, linewidth=0.8)
        xs, values = _column(rows["epoch"], key, per_epoch)
        drawn |= _line(axes[key], xs, values, color=colour, linewidth=2.2, marker="o",
                       markersize=3.5)  # fmt: skip
    lr_rows = rows["step"] or rows["epoch"]  # epoch rows' lr only where no step was logged
    xs, values = _column(lr_rows, "lr", per_epoch)
    drawn |= _line(axes["lr"], xs, values, color=colour, linewidth=1.4)
    xs, values = _column(rows["val"], "top1", per_epoch)
    drawn |= _line(axes["top1"], xs, values, color=colour, linewidth=1.8, marker="o",
                   markersize=4)  # fmt: skip
    return drawn


def _line(axis: Any, xs: list[float], values: list[float], **style: Any) -> bool:
    """Plot unless there is nothing to plot; True if plotted."""
    if not values:
        return False
    axis.plot(xs, values, **style)
    return True


def plot_runs(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Write one PNG (atomically) comparing the training curves of `run_dirs`; returns `out`.

    Four panels over a shared x axis in epochs (fractional for step rows): training loss
    and training accuracy (logged steps light, epoch means bold), learning rate, and
    validation top-1 (a note when no run has validation rows). One colour per run; the
    legend names runs by `labels` (default: `run_labels`). Raises FileNotFoundError for a
    folder without metrics.jsonl (before anything is written) and ValueError for a bad
    `labels` or `out`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from advise.report import save_figure

    run_dirs, out = [Path(run_dir) for run_dir in run_dirs], Path(out)
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run folder")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} run folders")
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: the figure is a PNG, name it *.png")
    runs = [read_metrics(run_dir) for run_dir in run_dirs]
    labels = list(labels) if labels is not None else run_labels(run_dirs)
    figure, grid = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    axes = {key: axis for (key, _), axis in zip(PANELS, grid.flat, strict=True)}
    handles = []
    for index, (rows, label) in enumerate(zip(runs, labels, strict=True)):
        colour = f"C{index % 10}"
        drawn = _plot_run(axes, rows, colour)
        handles.append(Line2D([], [], color=colour, linewidth=2.2,
                              label=label if drawn else f"{label} (no rows yet)"))  # fmt: skip
    _dress(axes, any(rows["val"] for rows in runs))
    figure.legend(handles=handles, loc="upper center", ncol=min(len(handles), 4),
                  frameon=False, fontsize=9)  # fmt: skip
    rows_of_legend = math.ceil(len(handles) / 4)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.035 * rows_of_legend))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, out)
    return out


def _dress(axes: dict[str, Any], has_validation: bool) -> None:
    """Titles, units, grids and notes of the four panels."""
    from matplotlib.lines import Line2D

    for key, title in PANELS:
        axes[key].set_title(title, fontsize=11)
        axes[key].grid(alpha=0.3)
    for key in ("lr", "top1"):
        axes[key].set_xlabel("epoch")
        axes[key].xaxis.set_tick_params(labelbottom=True)
    axes["lr"].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    styles = [
        Line2D([], [], color="grey", alpha=0.5, linewidth=0.8, label="logged steps"),
        Line2D([], [], color="grey", linewidth=2.2, marker="o", markersize=3.5,
               label="epoch mean"),
    ]  # fmt: skip
    axes["loss"].legend(handles=styles, fontsize=8, loc="best")
    if not has_validation:
        axes["top1"].text(0.5, 0.5, "no validation rows", transform=axes["top1"].transAxes,
                          ha="center", va="center", color="grey", fontsize=11)  # fmt: skip
        axes["top1"].set_yticks([])
